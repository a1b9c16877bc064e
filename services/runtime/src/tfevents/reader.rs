//! [`read_scalars`]: the scalars of one event file, every record verified.
//!
//! For tests and tools on the Rust side (and for a resumed trainer that wants
//! to look at what it logged). It reads the whole file at once: event files
//! of scalars are small. It is strict where TensorBoard is lenient: a CRC
//! mismatch or a truncated last record is an error here, while TensorBoard
//! stops reading at that point and shows what came before.

use std::fs;
use std::path::Path;

use prost::Message;

use super::proto::{Event, SummaryValueKind, What};
use super::record::split_record;
use crate::RuntimeError;

/// One scalar point as TensorBoard would chart it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub step: i64,
    pub value: f32,
    /// Seconds since the Unix epoch when the point was written.
    pub wall_time: f64,
}

/// Every `simple_value` scalar in the file at `path`, in file order. Events
/// of other kinds (the file version, images, histograms, tensor summaries)
/// are skipped.
pub fn read_scalars(path: impl AsRef<Path>) -> Result<Vec<Scalar>, RuntimeError> {
    let path = path.as_ref();
    let bytes = fs::read(path)
        .map_err(|source| RuntimeError::EventFile { path: path.to_path_buf(), source })?;
    parse_scalars(&bytes).map_err(|(offset, reason)| RuntimeError::CorruptEventFile {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    })
}

/// The scalars in `bytes`, or the byte offset of the first bad record and
/// what is wrong with it.
fn parse_scalars(bytes: &[u8]) -> Result<Vec<Scalar>, (usize, String)> {
    let mut scalars = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let (data, after) = split_record(rest).map_err(|reason| (offset, reason.to_owned()))?;
        let event =
            Event::decode(data).map_err(|error| (offset, format!("undecodable event: {error}")))?;
        if let Some(What::Summary(summary)) = event.what {
            scalars.extend(summary.value.into_iter().filter_map(|value| match value.value {
                Some(SummaryValueKind::SimpleValue(v)) => Some(Scalar {
                    tag: value.tag,
                    step: event.step,
                    value: v,
                    wall_time: event.wall_time,
                }),
                None => None,
            }));
        }
        rest = after;
    }
    Ok(scalars)
}
