//! The real check of the event-file writer: TensorBoard's own Python reader
//! (`EventAccumulator`, what `tensorboard --logdir` is built on) reads back
//! every scalar we wrote, bit for bit, and stops trusting a file we damaged.
//!
//! The Python is the project virtualenv made by `scripts/python-env.sh`
//! (`$PEERGRID_VENV`, else `${PEERGRID_CACHE:-$HOME/.cache/peergrid}/venv`).
//! Without it, or without its `tensorboard` package, these tests print SKIP
//! and pass, unless `CI` is set: CI always makes the venv, so there a missing
//! reader is a failure, never a silent pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use peergrid_runtime::tfevents::{read_scalars, EventWriter};

/// Prints every scalar of a log directory as `tag<TAB>step<TAB>repr(value)
/// <TAB>repr(wall_time)`, after the file version. `repr` of a Python float is
/// exact, and the value is the file's f32 widened to a double.
const READ_BACK_PY: &str = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print("file_version", acc.file_version)
for tag in acc.Tags()["scalars"]:
    for event in acc.Scalars(tag):
        print(tag, event.step, repr(event.value), repr(event.wall_time), sep="\t")
"#;

/// The venv's python if it can import tensorboard; `None` (after printing
/// why) when the test should be skipped; a panic when running under CI.
fn tensorboard_python() -> Option<PathBuf> {
    let venv = std::env::var_os("PEERGRID_VENV").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("PEERGRID_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache")
                .join("peergrid")
        });
        cache.join("venv")
    });
    let python = venv.join("bin").join("python");
    let problem = match Command::new(&python).args(["-c", "import tensorboard"]).output() {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            format!(
                "{} cannot import tensorboard: {}",
                python.display(),
                stderr.lines().last().unwrap_or("no error output")
            )
        }
        Err(error) => format!("cannot run {}: {error}", python.display()),
    };
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if in_ci {
        panic!(
            "CI is set but TensorBoard's reader is missing ({problem}); run scripts/python-env.sh"
        );
    }
    eprintln!("SKIP tensorboard_reads_back: {problem} (make it with scripts/python-env.sh)");
    None
}

/// `(tag, step, value, wall_time)` as TensorBoard reads them from `logdir`,
/// with the file version it found.
fn tensorboard_read(python: &Path, logdir: &Path) -> (String, Vec<Point>) {
    let out =
        Command::new(python).args(["-c", READ_BACK_PY]).arg(logdir).output().expect("python runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let version = lines.next().expect("a file_version line").to_owned();
    let scalars = lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [tag, step, value, wall_time] = fields[..] else {
                panic!("unexpected line {line:?}")
            };
            (
                tag.to_owned(),
                step.parse().unwrap(),
                value.parse().unwrap(),
                wall_time.parse().unwrap(),
            )
        })
        .collect();
    (version, scalars)
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("peergrid-tensorboard-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// One chart point: tag, step, value (the file's f32 widened), wall time.
type Point = (String, i64, f64, f64);

/// Sorted by tag then step, the order to compare in (TensorBoard groups by tag).
fn by_tag(mut points: Vec<Point>) -> Vec<Point> {
    points.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    points
}

/// Same tags, steps and value bits (so NaN equals NaN), in the same order.
fn same_values(a: &[Point], b: &[Point]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && x.1 == y.1 && x.2.to_bits() == y.2.to_bits())
}

/// Writes CleanRL's tag names with zero, negative, tiny, huge and non-finite
/// values at several steps including 0; returns the file and the points as
/// they must read back (no wall time: that is checked against our reader).
fn write_run(logdir: &Path) -> (PathBuf, Vec<Point>) {
    let mut writer = EventWriter::create(logdir).unwrap();
    let mut expected = Vec::new();
    let mut add = |tag: &str, value: f64, step: i64| {
        writer.add_scalar(tag, value, step).unwrap();
        expected.push((tag.to_owned(), step, f64::from(value as f32), 0.0));
    };
    let values = [0.0, -1.5, 1e-30, 3.0e38, 0.1, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    for (i, value) in values.into_iter().enumerate() {
        let step = i as i64 * 100;
        add("charts/episodic_return", value, step);
        add("losses/approx_kl", (step as f64).sqrt(), step);
    }
    add("perf/samples_per_s", 20_000.0, 700);
    writer.flush().unwrap();
    (writer.path().to_owned(), expected)
}

/// What our own reader finds, in the same shape.
fn rust_read(file: &Path) -> Vec<Point> {
    read_scalars(file)
        .unwrap()
        .into_iter()
        .map(|s| (s.tag, s.step, f64::from(s.value), s.wall_time))
        .collect()
}

#[test]
fn tensorboard_reads_back_every_scalar_we_wrote() {
    let Some(python) = tensorboard_python() else { return };
    let logdir = scratch_dir("every-scalar");
    let (file, expected) = write_run(&logdir);

    let (version, from_tensorboard) = tensorboard_read(&python, &logdir);
    assert_eq!(version, "file_version 2.0");
    let (theirs, expected) = (by_tag(from_tensorboard), by_tag(expected));
    assert!(
        same_values(&theirs, &expected),
        "TensorBoard read\n{theirs:?}\nwe wrote\n{expected:?}"
    );
    // Our reader agrees with TensorBoard's to the bit, wall times included.
    let ours = by_tag(rust_read(&file));
    assert!(same_values(&ours, &theirs));
    let wall_times = |points: &[Point]| points.iter().map(|p| p.3).collect::<Vec<_>>();
    assert_eq!(wall_times(&ours), wall_times(&theirs));
    fs::remove_dir_all(&logdir).unwrap();
}

#[test]
fn tensorboard_stops_at_a_damaged_record() {
    // Guards the test above against passing vacuously: flip one bit in the
    // last record's data and TensorBoard must no longer see that point.
    let Some(python) = tensorboard_python() else { return };
    let logdir = scratch_dir("damaged");
    let (file, mut expected) = write_run(&logdir);
    let mut bytes = fs::read(&file).unwrap();
    let inside_last_event = bytes.len() - 6;
    bytes[inside_last_event] ^= 0x01;
    fs::write(&file, &bytes).unwrap();

    let (_, from_tensorboard) = tensorboard_read(&python, &logdir);
    let from_tensorboard = by_tag(from_tensorboard);
    assert!(
        !same_values(&from_tensorboard, &by_tag(expected.clone())),
        "TensorBoard accepted a corrupted record"
    );
    expected.pop();
    assert!(same_values(&from_tensorboard, &by_tag(expected)), "{from_tensorboard:?}");
    assert!(read_scalars(&file).is_err());
    fs::remove_dir_all(&logdir).unwrap();
}
