//! Checkpoints: everything a resumed learner needs to continue exactly.
//!
//! A checkpoint of version `v` is two safetensors files in the checkpoint
//! directory and a pointer:
//!
//! - `policy-v{v:06}.safetensors` — the policy weight file the agents read
//!   (`peergrid_core::policy::weights`: network, observation normaliser,
//!   version). `agent-node --policy` and `peergrid eval --checkpoint` take it
//!   as it is.
//! - `trainer-v{v:06}.safetensors` — the learner's own state: Adam moments
//!   (`adam.m`, `adam.v`), the running observation statistics
//!   (`obs_stats.mean`, `obs_stats.var`, F64), and as metadata the format,
//!   version, updates done, Adam step, the shuffling generator's state,
//!   the observation count and the PPO config (JSON).
//! - `latest` — the newest complete version, written last (write to a
//!   temporary file, then rename), so a crash mid-checkpoint leaves the
//!   previous one in force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use peergrid_core::policy::weights::{from_safetensors, to_safetensors, PolicyWeights};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::TrainerError;
use crate::ppo::{OptimiserState, PpoConfig, RunningStats};

pub const FORMAT: &str = "peergrid-trainer-v1";

/// The learner's state at a version.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub policy: PolicyWeights,
    pub optimiser: OptimiserState,
    pub obs_stats: RunningStats,
    pub updates_done: u64,
    pub ppo: PpoConfig,
}

pub fn policy_path(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("policy-v{version:06}.safetensors"))
}

fn trainer_path(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("trainer-v{version:06}.safetensors"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainerError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| TrainerError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainerError::io(path, e))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes checkpoint `c` (version `c.policy.version`) and points `latest` at it.
pub fn save(dir: &Path, c: &Checkpoint) -> Result<PathBuf, TrainerError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainerError::io(dir, e))?;
    let version = c.policy.version;
    let policy = to_safetensors(&c.policy)?;
    let policy_file = policy_path(dir, version);
    write_atomic(&policy_file, &policy)?;

    let n = c.optimiser.m.len();
    let d = c.obs_stats.mean.len();
    let buffers = [
        ("adam.m", Dtype::F32, vec![n], f32_bytes(&c.optimiser.m)),
        ("adam.v", Dtype::F32, vec![n], f32_bytes(&c.optimiser.v)),
        ("obs_stats.mean", Dtype::F64, vec![d], f64_bytes(&c.obs_stats.mean)),
        ("obs_stats.var", Dtype::F64, vec![d], f64_bytes(&c.obs_stats.var)),
    ];
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.to_string(), v))
                .map_err(|e| TrainerError::Checkpoint(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rng = c.optimiser.rng.map(|x| x.to_string()).join(",");
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), version.to_string()),
        ("updates_done".to_string(), c.updates_done.to_string()),
        ("adam_step".to_string(), c.optimiser.step.to_string()),
        ("rng".to_string(), rng),
        ("obs_stats.count".to_string(), c.obs_stats.count.to_string()),
        (
            "ppo".to_string(),
            serde_json::to_string(&c.ppo).map_err(|e| TrainerError::Checkpoint(e.to_string()))?,
        ),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| TrainerError::Checkpoint(e.to_string()))?;
    write_atomic(&trainer_path(dir, version), &bytes)?;
    write_atomic(&dir.join("latest"), format!("{version}\n").as_bytes())?;
    Ok(policy_file)
}

/// The version `latest` points at, if any checkpoint exists.
pub fn latest_version(dir: &Path) -> Result<Option<u64>, TrainerError> {
    let path = dir.join("latest");
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map(Some).map_err(|_| {
            TrainerError::Checkpoint(format!(
                "{}: not a version number: {:?}",
                path.display(),
                s.trim()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainerError::io(path, e)),
    }
}

fn meta<'a>(
    m: &'a HashMap<String, String>,
    key: &str,
    file: &Path,
) -> Result<&'a str, TrainerError> {
    m.get(key).map(String::as_str).ok_or_else(|| {
        TrainerError::Checkpoint(format!("{}: metadata '{key}' missing", file.display()))
    })
}

fn parse<T: std::str::FromStr>(
    m: &HashMap<String, String>,
    key: &str,
    file: &Path,
) -> Result<T, TrainerError> {
    meta(m, key, file)?.parse().map_err(|_| {
        TrainerError::Checkpoint(format!("{}: metadata '{key}' is malformed", file.display()))
    })
}

fn floats<T>(
    st: &SafeTensors,
    name: &str,
    dtype: Dtype,
    file: &Path,
    conv: fn(&[u8]) -> T,
) -> Result<Vec<T>, TrainerError> {
    let t = st
        .tensor(name)
        .map_err(|e| TrainerError::Checkpoint(format!("{}: {name}: {e}", file.display())))?;
    if t.dtype() != dtype || t.shape().len() != 1 {
        return Err(TrainerError::Checkpoint(format!(
            "{}: {name}: expected a 1-D {dtype:?} tensor",
            file.display()
        )));
    }
    Ok(t.data().chunks_exact(dtype.bitsize() / 8).map(conv).collect())
}

/// Reads checkpoint `version` back.
pub fn load(dir: &Path, version: u64) -> Result<Checkpoint, TrainerError> {
    let policy_file = policy_path(dir, version);
    let bytes = std::fs::read(&policy_file).map_err(|e| TrainerError::io(&policy_file, e))?;
    let policy = from_safetensors(&bytes)
        .map_err(|e| TrainerError::Checkpoint(format!("{}: {e}", policy_file.display())))?;
    if policy.version != version {
        return Err(TrainerError::Checkpoint(format!(
            "{}: holds version {}",
            policy_file.display(),
            policy.version
        )));
    }
    let file = trainer_path(dir, version);
    let bytes = std::fs::read(&file).map_err(|e| TrainerError::io(&file, e))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| TrainerError::Checkpoint(format!("{}: {e}", file.display())))?;
    let m = header.metadata().clone().unwrap_or_default();
    if meta(&m, "format", &file)? != FORMAT {
        return Err(TrainerError::Checkpoint(format!("{}: not a {FORMAT} file", file.display())));
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| TrainerError::Checkpoint(format!("{}: {e}", file.display())))?;
    let f32_of = |b: &[u8]| f32::from_le_bytes(b.try_into().expect("4 bytes"));
    let f64_of = |b: &[u8]| f64::from_le_bytes(b.try_into().expect("8 bytes"));
    let rng: Vec<u64> =
        meta(&m, "rng", &file)?.split(',').map(|x| x.parse()).collect::<Result<_, _>>().map_err(
            |_| {
                TrainerError::Checkpoint(format!("{}: metadata 'rng' is malformed", file.display()))
            },
        )?;
    let rng: [u64; 4] = rng.try_into().map_err(|_| {
        TrainerError::Checkpoint(format!("{}: metadata 'rng' needs 4 words", file.display()))
    })?;
    let ppo: PpoConfig = serde_json::from_str(meta(&m, "ppo", &file)?)
        .map_err(|e| TrainerError::Checkpoint(format!("{}: ppo: {e}", file.display())))?;
    let obs_stats = RunningStats {
        mean: floats(&st, "obs_stats.mean", Dtype::F64, &file, f64_of)?,
        var: floats(&st, "obs_stats.var", Dtype::F64, &file, f64_of)?,
        count: parse(&m, "obs_stats.count", &file)?,
    };
    Ok(Checkpoint {
        policy,
        optimiser: OptimiserState {
            m: floats(&st, "adam.m", Dtype::F32, &file, f32_of)?,
            v: floats(&st, "adam.v", Dtype::F32, &file, f32_of)?,
            step: parse(&m, "adam_step", &file)?,
            rng,
        },
        obs_stats,
        updates_done: parse(&m, "updates_done", &file)?,
        ppo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::observation::OBS_DIM;
    use peergrid_core::policy::{ActorCritic, MlpSpec};

    #[test]
    fn a_checkpoint_round_trips_and_latest_follows() {
        let dir = std::env::temp_dir().join(format!("peergrid-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(latest_version(&dir).unwrap(), None);
        let spec = MlpSpec::default();
        let n = spec.n_params();
        let mut stats = RunningStats::new(OBS_DIM);
        stats.update(&[0.5; OBS_DIM * 3]);
        let c = Checkpoint {
            policy: PolicyWeights {
                net: ActorCritic::random(&spec, 1),
                normaliser: stats.normaliser(10.0),
                version: 5,
            },
            optimiser: OptimiserState {
                m: vec![0.25; n],
                v: vec![0.5; n],
                step: 40,
                rng: [1, 2, 3, 4],
            },
            obs_stats: stats,
            updates_done: 4,
            ppo: PpoConfig::default(),
        };
        save(&dir, &c).unwrap();
        assert_eq!(latest_version(&dir).unwrap(), Some(5));
        assert_eq!(load(&dir, 5).unwrap(), c);
        assert!(matches!(load(&dir, 6), Err(TrainerError::Io { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
