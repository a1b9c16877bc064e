//! The subset of TensorFlow's `Event` and `Summary` messages that scalars
//! need, written by hand with prost's derive (no `.proto` build step for five
//! fields).
//!
//! Field numbers and types are those of `tensorflow/core/util/event.proto` and
//! `tensorflow/core/framework/summary.proto` (TensorBoard vendors them as
//! `tensorboard.Event`, `tensorboard.Summary`): fields we leave out are
//! skipped on decode, as protobuf skips unknown fields. Both oneofs are kept as
//! oneofs on purpose: a plain proto3 `float` field would not be encoded when
//! it is 0.0, and TensorBoard ignores a `Summary.Value` whose value is unset,
//! so a scalar that is exactly zero would vanish from the chart.
//!
//! These types stay inside [`super`]: callers see tags, steps and values.

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// `oneof what`.
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`, the members we use.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum What {
    /// The first record of a file: `"brain.Event:2"`.
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    /// `oneof value`.
    #[prost(oneof = "SummaryValueKind", tags = "2")]
    pub value: Option<SummaryValueKind>,
}

/// `Summary.Value.value`, the member we use.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum SummaryValueKind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // The expected bytes are what TensorBoard's own generated Python classes
    // (`tensorboard.compat.proto.event_pb2`) serialize for the same values.

    #[test]
    fn file_version_event_encodes_like_tensorflow() {
        let event = Event {
            wall_time: 1.5,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        };
        assert_eq!(hex(&event.encode_to_vec()), "09000000000000f83f1a0d627261696e2e4576656e743a32");
    }

    #[test]
    fn a_zero_scalar_is_still_encoded() {
        let value = SummaryValue {
            tag: "losses/approx_kl".into(),
            value: Some(SummaryValueKind::SimpleValue(0.0)),
        };
        let event = Event {
            wall_time: 1.5,
            step: 7,
            what: Some(What::Summary(Summary { value: vec![value] })),
        };
        let bytes = event.encode_to_vec();
        assert_eq!(
            hex(&bytes),
            "09000000000000f83f10072a190a170a106c6f737365732f617070726f785f6b6c1500000000"
        );
        assert_eq!(Event::decode(&bytes[..]).unwrap(), event);
    }
}
