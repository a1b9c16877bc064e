//! TensorBoard event files ("tfevents"), written and read in pure Rust, so
//! the trainer's scalars show in `tensorboard --logdir <dir>` without
//! TensorFlow, Python or a stale crate.
//!
//! **Where TensorBoard looks.** `--logdir` is searched recursively; every
//! directory holding a file whose name contains `tfevents` is one run, and
//! the files of a run are merged. [`EventWriter::create`] makes
//! `<logdir>/events.out.tfevents.<unix secs>.<host>.<pid>.<n>` (TensorFlow's
//! and PyTorch's pattern), so give each training run its own directory and
//! let a resumed run write a new file into the same one.
//!
//! **Format.** A file is a sequence of records (`record.rs`: u64 LE length,
//! masked CRC-32C of the length bytes, data, masked CRC-32C of the data; the
//! CRC is in `crc32c.rs`). Each record's data is a protobuf
//! `tensorflow.Event` (`proto.rs`): the first holds the file version
//! `"brain.Event:2"`; each scalar is an event with `wall_time`, `step` and a
//! `Summary` of one `Value { tag, simple_value }`, the form TensorBoard's
//! scalar dashboard reads. Values are 32-bit floats; NaN and ±inf are written
//! as they are (see [`EventWriter::add_scalar`]).
//!
//! **What it must never do:** block on anything but its own file, panic on a
//! bad file, or expose the protobuf types: callers see tags, steps and
//! values, and every failure is a [`RuntimeError`](crate::RuntimeError) naming
//! the file.

mod crc32c;
mod proto;
mod reader;
mod record;
mod writer;

pub use reader::{read_scalars, Scalar};
pub use writer::{EventWriter, FILE_VERSION};

#[cfg(test)]
mod tests;
