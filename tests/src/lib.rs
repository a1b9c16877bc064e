//! Shared helpers of the end-to-end suites: golden-file comparison, the
//! [`cluster::TestCluster`] of real nodes on loopback ports, and
//! [`compose`] for driving the docker compose cluster of `deploy/`, with
//! [`measure`] for what its test reads from the market and the trainer,
//! and [`remote_policy`], a stand-in external policy service.
//!
//! A golden file is the whole observable behaviour of a scenario as readable
//! text, checked in. A test renders the same text and compares; run with
//! `UPDATE_GOLDEN=1` to rewrite the files after a deliberate change, then
//! review the diff like any other code change.

pub mod cluster;
pub mod compose;
pub mod measure;
pub mod processes;
pub mod remote_policy;

use std::path::PathBuf;

/// Compares `actual` with `tests/golden/<name>`, or rewrites the file when
/// `UPDATE_GOLDEN=1`.
pub fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(name);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display())
    });
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  golden: {e}\n  actual: {a}", i + 1))
            .collect();
        panic!(
            "{} differs from the golden file ({} vs {} lines):\n{}\n(run with UPDATE_GOLDEN=1 after a deliberate change)",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}
