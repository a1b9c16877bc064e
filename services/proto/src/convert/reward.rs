//! Reward weights travel as a JSON string (`RegisterResponse.reward_weights_json`)
//! so the weights can grow without a proto change; this is its codec.
//!
//! Decoding bounds the document's size, rejects unknown keys (the core type
//! is `deny_unknown_fields`) and runs `RewardWeights::validate`, so a node
//! never computes rewards from weights the market would not accept.

use peergrid_core::reward::RewardWeights;

use crate::error::WireError;

/// Largest accepted JSON document, bytes: the weights are a handful of numbers.
pub const MAX_REWARD_WEIGHTS_JSON_BYTES: usize = 4096;

/// Encodes validated weights. Invalid weights (e.g. NaN, which JSON cannot
/// carry) are an internal error: they should have been rejected at start-up.
pub fn reward_weights_to_json(weights: &RewardWeights) -> Result<String, WireError> {
    weights
        .validate()
        .map_err(|e| WireError::Internal { reason: format!("reward weights: {e}") })?;
    serde_json::to_string(weights)
        .map_err(|e| WireError::Internal { reason: format!("reward weights: {e}") })
}

/// Decodes and validates the weights in the field at `path`.
pub fn reward_weights_from_json(json: &str, path: &str) -> Result<RewardWeights, WireError> {
    if json.len() > MAX_REWARD_WEIGHTS_JSON_BYTES {
        return Err(WireError::invalid(
            path,
            format!("must be at most {MAX_REWARD_WEIGHTS_JSON_BYTES} bytes, got {}", json.len()),
        ));
    }
    let weights: RewardWeights = serde_json::from_str(json)
        .map_err(|e| WireError::invalid(path, format!("bad JSON: {e}")))?;
    weights.validate().map_err(|e| WireError::invalid(path, e.to_string()))?;
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn round_trips() {
        let w = RewardWeights { co2: 0.0, ev_shortfall_per_kwh: 2.5, ..RewardWeights::default() };
        let json = reward_weights_to_json(&w).unwrap();
        assert_eq!(reward_weights_from_json(&json, "reward_weights_json").unwrap(), w);
        // Missing keys take their defaults, as in config files.
        assert_eq!(reward_weights_from_json("{}", "w").unwrap(), RewardWeights::default());
    }

    #[test]
    fn invalid_documents_name_the_field() {
        let path = "reward_weights_json";
        for (json, needle) in [
            ("{\"cost\": -1}", "reward.cost"),
            ("{\"colour\": 1}", "unknown field"),
            ("not json", "bad JSON"),
        ] {
            let e = reward_weights_from_json(json, path).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            let msg = e.to_string();
            assert!(
                msg.starts_with("invalid reward_weights_json: ") && msg.contains(needle),
                "{msg}"
            );
        }
        let huge = format!("{{\"cost\": 1{}}}", " ".repeat(MAX_REWARD_WEIGHTS_JSON_BYTES));
        assert!(reward_weights_from_json(&huge, path)
            .unwrap_err()
            .to_string()
            .contains("at most 4096 bytes"));
        let nan = RewardWeights { cost: f64::NAN, ..RewardWeights::default() };
        assert_eq!(reward_weights_to_json(&nan).unwrap_err().code(), Code::Internal);
    }
}
