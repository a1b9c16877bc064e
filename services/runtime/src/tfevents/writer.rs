//! [`EventWriter`]: appends scalars to a new event file in a log directory.
//!
//! One writer owns one file, created fresh (never appended to: a resumed
//! trainer starts a new file beside the old ones, and TensorBoard merges every
//! file of a directory into one run). Writes go through a `BufWriter` and
//! blocking `std::fs` IO; a record is ~60 bytes, so a trainer calls
//! [`EventWriter::flush`] once per update, and the data is on disk for
//! TensorBoard within that update.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::proto::{Event, Summary, SummaryValue, SummaryValueKind, What};
use super::record::write_record;
use crate::RuntimeError;

/// The version string of the first record. TensorBoard reads it to choose how
/// to handle restarts; version 2 is what TensorFlow and PyTorch write.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Distinguishes writers this process opens in the same second.
static NEXT_FILE_UID: AtomicU64 = AtomicU64::new(0);

/// Writes scalars to `<logdir>/events.out.tfevents.<unix secs>.<host>.<pid>.<n>`.
///
/// The file is flushed on drop (an error there is logged, not lost silently);
/// call [`EventWriter::flush`] to see errors and to make the data visible to a
/// running TensorBoard.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `logdir` (and its parents) if needed, then a new event file in
    /// it whose first record is the file version, already flushed. Fails if
    /// the directory or the file cannot be created; never overwrites a file.
    pub fn create(logdir: impl AsRef<Path>) -> Result<EventWriter, RuntimeError> {
        let logdir = logdir.as_ref();
        fs::create_dir_all(logdir)
            .map_err(|source| RuntimeError::EventFile { path: logdir.to_path_buf(), source })?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let uid = NEXT_FILE_UID.fetch_add(1, Ordering::Relaxed);
        let path =
            logdir.join(event_file_name(now.as_secs(), &hostname(), std::process::id(), uid));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| RuntimeError::EventFile { path: path.clone(), source })?;
        let mut writer = EventWriter { path, out: BufWriter::new(file) };
        writer.write_event(&Event {
            wall_time: now.as_secs_f64(),
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.into())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one scalar point at the current wall time.
    ///
    /// TensorBoard's scalar field is a 32-bit float, so `value` is narrowed to
    /// `f32` (beyond ±3.4e38 it becomes ±inf). Non-finite values are written
    /// as they are, as TensorFlow and PyTorch do: TensorBoard reads NaN and
    /// ±inf back unchanged, and a diverging loss should be visible, not hidden.
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<(), RuntimeError> {
        let wall_time =
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let value = SummaryValue {
            tag: tag.to_owned(),
            value: Some(SummaryValueKind::SimpleValue(value as f32)),
        };
        self.write_event(&Event {
            wall_time,
            step,
            what: Some(What::Summary(Summary { value: vec![value] })),
        })
    }

    /// Writes buffered records to the file.
    pub fn flush(&mut self) -> Result<(), RuntimeError> {
        self.out
            .flush()
            .map_err(|source| RuntimeError::EventFile { path: self.path.clone(), source })
    }

    fn write_event(&mut self, event: &Event) -> Result<(), RuntimeError> {
        write_record(&mut self.out, &event.encode_to_vec())
            .map_err(|source| RuntimeError::EventFile { path: self.path.clone(), source })
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if let Err(error) = self.out.flush() {
            tracing::warn!(path = %self.path.display(), %error, "cannot flush the TensorBoard event file");
        }
    }
}

/// The name TensorFlow's and PyTorch's writers use. TensorBoard only needs
/// "tfevents" in it; the zero-padded seconds make name order time order, and
/// host, pid and `uid` keep concurrent writers apart.
fn event_file_name(unix_secs: u64, host: &str, pid: u32, uid: u64) -> String {
    format!("events.out.tfevents.{unix_secs:010}.{host}.{pid}.{uid}")
}

/// This machine's name for the file name: the kernel's (Linux), else
/// `$HOSTNAME`, else "localhost"; anything but `[A-Za-z0-9._-]` becomes '_'
/// so it can never add a path separator.
fn hostname() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    sanitize_hostname(&name)
}

fn sanitize_hostname(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_tensorflows_pattern() {
        assert_eq!(
            event_file_name(1_700_000_000, "node-1", 42, 3),
            "events.out.tfevents.1700000000.node-1.42.3"
        );
        assert_eq!(event_file_name(7, "h", 1, 0), "events.out.tfevents.0000000007.h.1.0");
    }

    #[test]
    fn hostnames_cannot_escape_the_log_directory() {
        assert_eq!(sanitize_hostname("worker-3.cluster.local"), "worker-3.cluster.local");
        assert_eq!(sanitize_hostname("a/../b c"), "a_.._b_c");
        assert!(!hostname().is_empty());
    }
}
