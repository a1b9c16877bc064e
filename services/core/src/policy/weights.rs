//! The policy weight file shared with the trainer: one safetensors blob.
//!
//! The trainer (tch) writes it, agent-nodes read it with the pure-Rust
//! `safetensors` crate; only bytes cross that boundary, never types (tch
//! bundles an older safetensors). Tensors, all `F32` little-endian:
//!
//! ```text
//! actor.{l}.weight  [out_l, in_l]   (PyTorch nn.Linear layout)   l = 0 .. hidden layers + mean head
//! actor.{l}.bias    [out_l]
//! actor.log_std     [act_dim]
//! critic.{l}.weight [out_l, in_l]                                l = 0 .. hidden layers + value head
//! critic.{l}.bias   [out_l]
//! obs_norm.mean     [obs_dim]
//! obs_norm.var      [obs_dim]
//! ```
//! and string metadata: `format` = `peergrid-policy-v1`, `spec` (the
//! [`MlpSpec`] as JSON), `obs_norm.clip`, `obs_norm.epsilon`, `version` (the
//! policy version that produced it). Reading validates every name, dtype,
//! shape and value; a bad file is an error naming what is wrong.
//!
//! `obs_dim` is the observation's length, its inputs the features of
//! [`FEATURE_NAMES`](crate::observation::FEATURE_NAMES) in order. A file made
//! for another layout (14 inputs before the forecasts, the tariff ahead and
//! the community signals joined them; 22 now) reads, but a policy refuses
//! it (`MlpModel::new`: "needs obs_dim 22"): retrain, there is no mapping.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{ActorCritic, MlpSpec, ObsNormaliser};
use crate::error::CoreError;

/// The `format` metadata of a policy file; a file saying otherwise is refused.
pub const FORMAT: &str = "peergrid-policy-v1";

/// A policy as it travels: network, normaliser and the version that made it.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyWeights {
    /// The actor-critic.
    pub net: ActorCritic,
    /// The observation normaliser it was trained with.
    pub normaliser: ObsNormaliser,
    /// The policy version it is.
    pub version: u64,
}

fn bytes_of(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The tensor names, shapes and flat-layout lengths, in flat-layout order.
fn layout(spec: &MlpSpec) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let push_net = |net: &str, sizes: Vec<(usize, usize)>, out: &mut Vec<(String, Vec<usize>)>| {
        for (l, (n_in, n_out)) in sizes.into_iter().enumerate() {
            out.push((format!("{net}.{l}.weight"), vec![n_out, n_in]));
            out.push((format!("{net}.{l}.bias"), vec![n_out]));
        }
    };
    push_net("actor", spec.layer_sizes(spec.act_dim), &mut out);
    out.push(("actor.log_std".into(), vec![spec.act_dim]));
    push_net("critic", spec.layer_sizes(1), &mut out);
    out
}

/// Encodes a policy as a safetensors blob.
pub fn to_safetensors(w: &PolicyWeights) -> Result<Vec<u8>, CoreError> {
    let spec = &w.net.spec;
    let flat = w.net.to_flat();
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    for (name, shape) in layout(spec) {
        let n: usize = shape.iter().product();
        buffers.push((name, shape, bytes_of(&flat[pos..pos + n])));
        pos += n;
    }
    buffers.push((
        "obs_norm.mean".into(),
        vec![w.normaliser.mean.len()],
        bytes_of(&w.normaliser.mean),
    ));
    buffers.push((
        "obs_norm.var".into(),
        vec![w.normaliser.var.len()],
        bytes_of(&w.normaliser.var),
    ));
    let views = buffers
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| CoreError::invalid(format!("weights.{name}"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec_json = serde_json::to_string(spec)
        .map_err(|e| CoreError::invalid("weights.spec", e.to_string()))?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("spec".to_string(), spec_json),
        ("obs_norm.clip".to_string(), w.normaliser.clip.to_string()),
        ("obs_norm.epsilon".to_string(), w.normaliser.epsilon.to_string()),
        ("version".to_string(), w.version.to_string()),
    ]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| CoreError::invalid("weights", e.to_string()))
}

fn f32s(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>, CoreError> {
    let field = format!("weights.{name}");
    let t = st.tensor(name).map_err(|_| CoreError::invalid(&field, "is missing"))?;
    if t.dtype() != Dtype::F32 {
        return Err(CoreError::invalid(&field, format!("must be F32, got {:?}", t.dtype())));
    }
    if t.shape() != shape {
        return Err(CoreError::invalid(
            &field,
            format!("must have shape {shape:?}, got {:?}", t.shape()),
        ));
    }
    Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Decodes and validates a safetensors policy blob.
pub fn from_safetensors(bytes: &[u8]) -> Result<PolicyWeights, CoreError> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| CoreError::invalid("weights", format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| {
        meta.get(key)
            .ok_or_else(|| CoreError::invalid(format!("weights.metadata.{key}"), "is missing"))
    };
    if get("format")? != FORMAT {
        return Err(CoreError::invalid(
            "weights.metadata.format",
            format!("must be {FORMAT}, got {}", get("format")?),
        ));
    }
    let spec: MlpSpec = serde_json::from_str(get("spec")?)
        .map_err(|e| CoreError::invalid("weights.metadata.spec", e.to_string()))?;
    spec.validate()?;
    let number = |key: &str| -> Result<f64, CoreError> {
        get(key)?
            .parse::<f64>()
            .map_err(|e| CoreError::invalid(format!("weights.metadata.{key}"), e.to_string()))
    };
    let version = get("version")?
        .parse::<u64>()
        .map_err(|e| CoreError::invalid("weights.metadata.version", e.to_string()))?;
    // The spec is a claim of the header: reserve nothing for it that the
    // blob cannot hold (8 layers of 4096 units declare ~1 GB in a few bytes).
    let n_params = spec.n_params();
    if n_params.saturating_mul(4) > bytes.len() {
        return Err(CoreError::invalid(
            "weights.metadata.spec",
            format!(
                "declares {n_params} parameters ({} bytes of F32) but the blob holds {} bytes",
                n_params.saturating_mul(4),
                bytes.len()
            ),
        ));
    }
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| CoreError::invalid("weights", e.to_string()))?;
    let mut flat = Vec::with_capacity(n_params);
    for (name, shape) in layout(&spec) {
        flat.extend(f32s(&st, &name, &shape)?);
    }
    let net = ActorCritic::from_flat(&spec, &flat)?;
    let normaliser = ObsNormaliser {
        mean: f32s(&st, "obs_norm.mean", &[spec.obs_dim])?,
        var: f32s(&st, "obs_norm.var", &[spec.obs_dim])?,
        clip: number("obs_norm.clip")? as f32,
        epsilon: number("obs_norm.epsilon")? as f32,
    };
    normaliser.validate(spec.obs_dim)?;
    Ok(PolicyWeights { net, normaliser, version })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::OBS_DIM;

    fn sample() -> PolicyWeights {
        let spec = MlpSpec::default();
        let mut normaliser = ObsNormaliser::identity(spec.obs_dim);
        normaliser.mean[3] = 2.5;
        normaliser.var[1] = 0.25;
        PolicyWeights { net: ActorCritic::random(&spec, 4), normaliser, version: 17 }
    }

    #[test]
    fn round_trips_bit_for_bit() {
        let w = sample();
        let bytes = to_safetensors(&w).unwrap();
        assert_eq!(from_safetensors(&bytes).unwrap(), w);
    }

    #[test]
    fn tensors_use_pytorch_names_and_shapes() {
        let bytes = to_safetensors(&sample()).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("actor.0.weight").unwrap().shape(), &[64, OBS_DIM]);
        assert_eq!(st.tensor("actor.2.weight").unwrap().shape(), &[3, 64]);
        assert_eq!(st.tensor("critic.2.bias").unwrap().shape(), &[1]);
        assert_eq!(st.tensor("actor.log_std").unwrap().shape(), &[3]);
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        assert!(from_safetensors(b"not a file").unwrap_err().to_string().contains("safetensors"));
        // A tensor with the wrong shape.
        let w = sample();
        let mut bad = w.clone();
        bad.net.spec.hidden = vec![64, 64];
        // As many values as the spec declares (a blob smaller than its spec
        // is refused before any tensor is read), in the wrong shape.
        let n = bad.net.spec.n_params();
        let data = vec![0u8; 4 * n];
        let views = vec![(
            "actor.0.weight".to_string(),
            TensorView::new(Dtype::F32, vec![n], &data).unwrap(),
        )];
        let spec_json = serde_json::to_string(&bad.net.spec).unwrap();
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("spec".to_string(), spec_json),
            ("obs_norm.clip".to_string(), "10".to_string()),
            ("obs_norm.epsilon".to_string(), "1e-8".to_string()),
            ("version".to_string(), "1".to_string()),
        ]);
        let bytes = safetensors::serialize(views, Some(meta)).unwrap();
        let e = from_safetensors(&bytes).unwrap_err().to_string();
        assert!(e.contains("weights.actor.0.weight") && e.contains("shape"), "{e}");
        // A NaN anywhere in the data is rejected (by the network or the
        // normaliser, whichever tensor it lands in).
        let mut bytes = to_safetensors(&w).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        bytes[8 + header_len..8 + header_len + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(from_safetensors(&bytes).unwrap_err().to_string().contains("finite"));
    }
}
