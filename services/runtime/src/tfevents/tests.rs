//! Writer and reader together: what `EventWriter` writes, `read_scalars`
//! gives back, and any damage to the file is reported with the file's path.

use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::proto::{Event, What};
use super::record::split_record;
use super::*;
use crate::RuntimeError;

/// A fresh directory per test (tests share a process under `cargo test`).
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peergrid-tfevents-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn scalars_round_trip_in_order_with_their_steps() {
    let dir = scratch_dir("round-trip");
    let before = now_secs();
    let mut writer = EventWriter::create(&dir).unwrap();
    writer.add_scalar("charts/episodic_return", -12.5, 1).unwrap();
    writer.add_scalar("losses/approx_kl", 0.0, 1).unwrap();
    writer.add_scalar("charts/episodic_return", -3.25, 2).unwrap();
    writer.flush().unwrap();
    let after = now_secs();

    let scalars = read_scalars(writer.path()).unwrap();
    let points: Vec<_> = scalars.iter().map(|s| (s.tag.as_str(), s.step, s.value)).collect();
    assert_eq!(
        points,
        [
            ("charts/episodic_return", 1, -12.5),
            ("losses/approx_kl", 1, 0.0),
            ("charts/episodic_return", 2, -3.25)
        ]
    );
    assert!(
        scalars.iter().all(|s| (before - 1.0..=after + 1.0).contains(&s.wall_time)),
        "{scalars:?}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_first_record_is_the_file_version_and_the_name_is_tensorboards() {
    let dir = scratch_dir("first-record");
    let writer = EventWriter::create(&dir).unwrap();
    let name = writer.path().file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("events.out.tfevents.") && name.contains("tfevents"), "{name}");
    assert_eq!(writer.path().parent().unwrap(), dir);

    // Already on disk before any flush: a running TensorBoard sees a valid file.
    let bytes = fs::read(writer.path()).unwrap();
    let (data, rest) = split_record(&bytes).unwrap();
    assert!(rest.is_empty());
    let event = Event::decode(data).unwrap();
    assert_eq!(event.what, Some(What::FileVersion(FILE_VERSION.to_owned())));
    assert_eq!(FILE_VERSION, "brain.Event:2");
    drop(writer);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn drop_flushes_buffered_scalars() {
    let dir = scratch_dir("drop-flushes");
    let mut writer = EventWriter::create(&dir).unwrap();
    writer.add_scalar("perf/samples_per_s", 1234.0, 10).unwrap();
    let path = writer.path().to_owned();
    assert_eq!(read_scalars(&path).unwrap(), []); // still in the buffer
    drop(writer);
    assert_eq!(read_scalars(&path).unwrap().len(), 1);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_values_are_written_as_they_are_and_f64_is_narrowed() {
    let dir = scratch_dir("non-finite");
    let mut writer = EventWriter::create(&dir).unwrap();
    for (step, value) in
        [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, 0.1].into_iter().enumerate()
    {
        writer.add_scalar("losses/value_loss", value, step as i64).unwrap();
    }
    writer.flush().unwrap();
    let values: Vec<f32> = read_scalars(writer.path()).unwrap().iter().map(|s| s.value).collect();
    assert!(values[0].is_nan());
    assert_eq!(values[1..], [f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY, 0.1f32]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writers_opened_in_the_same_second_get_their_own_files() {
    let dir = scratch_dir("two-writers");
    let mut first = EventWriter::create(&dir).unwrap();
    let mut second = EventWriter::create(&dir).unwrap();
    assert_ne!(first.path(), second.path());
    first.add_scalar("a", 1.0, 1).unwrap();
    second.add_scalar("b", 2.0, 1).unwrap();
    first.flush().unwrap();
    second.flush().unwrap();
    assert_eq!(read_scalars(first.path()).unwrap()[0].tag, "a");
    assert_eq!(read_scalars(second.path()).unwrap()[0].tag, "b");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupted_record_is_reported_with_the_path_and_offset() {
    let dir = scratch_dir("corrupt");
    let mut writer = EventWriter::create(&dir).unwrap();
    writer.add_scalar("charts/learning_rate", 3e-4, 1).unwrap();
    writer.add_scalar("charts/learning_rate", 2e-4, 2).unwrap();
    writer.flush().unwrap();
    let path = writer.path().to_owned();
    let mut bytes = fs::read(&path).unwrap();
    let last_record_start = {
        let (_, rest) = split_record(&bytes).unwrap();
        let (_, rest) = split_record(rest).unwrap();
        bytes.len() - rest.len()
    };
    let good = bytes.clone();

    let last = bytes.len() - 6; // inside the last event's data
    bytes[last] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    match read_scalars(&path) {
        Err(RuntimeError::CorruptEventFile { path: p, offset, reason }) => {
            assert_eq!(
                (p, offset as usize, reason.as_str()),
                (path.clone(), last_record_start, "data CRC mismatch")
            );
        }
        other => panic!("corruption went unnoticed: {other:?}"),
    }
    let message = read_scalars(&path).unwrap_err().to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("data CRC mismatch"),
        "{message}"
    );

    fs::write(&path, &good[..good.len() - 2]).unwrap();
    let message = read_scalars(&path).unwrap_err().to_string();
    assert!(message.contains("truncated data CRC"), "{message}");
    drop(writer);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn io_errors_name_the_path() {
    let dir = scratch_dir("io-errors");
    fs::create_dir_all(&dir).unwrap();
    let not_a_dir = dir.join("a-file");
    fs::write(&not_a_dir, b"").unwrap();
    let error = EventWriter::create(not_a_dir.join("run")).unwrap_err();
    assert!(matches!(error, RuntimeError::EventFile { .. }), "{error:?}");
    assert!(error.to_string().contains("a-file"), "{error}");

    let missing = dir.join("missing.tfevents");
    let error = read_scalars(&missing).unwrap_err();
    assert!(error.to_string().contains("missing.tfevents"), "{error}");
    fs::remove_dir_all(&dir).unwrap();
}
