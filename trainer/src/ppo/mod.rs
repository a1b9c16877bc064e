//! Proximal Policy Optimisation on tch, in one readable file (CleanRL's
//! `ppo_continuous_action.py`, adapted to a shared policy over many
//! prosumers).
//!
//! - **Network**: the actor-critic of `peergrid_core::policy::network` — two
//!   tanh MLPs (actor mean, critic value) and a state-independent Gaussian
//!   log std — held as plain tensors in the flat layout order, so
//!   publishing a version is `to_flat` → [`ActorCritic::from_flat`] → the
//!   safetensors blob the agents read. No tch type ever leaves this crate.
//! - **Update**: GAE (γ, λ) per prosumer, advantage normalisation per
//!   minibatch, clipped surrogate, clipped value loss, entropy bonus, Adam
//!   with gradient-norm clipping, `update_epochs` passes over shuffled
//!   minibatches, optional early stop at `target_kl`.
//! - **Observation normalisation**: a running mean/variance over every raw
//!   observation seen ([`RunningStats`]); version v's normaliser travels with
//!   version v's weights, and the update trains on observations normalised
//!   exactly as the actors normalised them (the same Rust function).
//! - **Determinism**: parameters start from a seeded pure-Rust
//!   initialisation and minibatches are shuffled by a seeded generator, so
//!   with one libtorch thread a seed gives the same numbers every run.
//!
//! Adam is written out (ten lines) rather than taken from `tch::nn`, so its
//! moments can be checkpointed with the parameters and a resumed run
//! continues exactly.

use peergrid_core::experience::{gae, Rollout};
use peergrid_core::observation::OBS_DIM;
use peergrid_core::policy::{ActionPrior, ActorCritic, MlpSpec, ObsNormaliser, ACT_DIM};
use peergrid_core::rng::SeededRng;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::TrainerError;

mod config;
mod stats;

pub use config::PpoConfig;
pub(crate) use stats::explained_variance;
pub(crate) use stats::RunningStats;

/// What one update measured (the TensorBoard `losses/*` scalars).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub approx_kl: f64,
    pub clipfrac: f64,
    pub explained_variance: f64,
    pub learning_rate: f64,
    /// Samples in the batch.
    pub samples: usize,
    /// Gradient steps taken.
    pub gradient_steps: usize,
}

/// An update ended early because its stop flag was set (a shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interrupted {
    /// Gradient steps taken before it stopped.
    pub gradient_steps: usize,
}

/// The learner: parameters, Adam moments and the shuffling generator.
pub(crate) struct Ppo {
    pub config: PpoConfig,
    spec: MlpSpec,
    /// Flat-layout order: actor layers (w, b)…, log_std, critic layers (w, b)….
    params: Vec<Tensor>,
    adam_m: Vec<Tensor>,
    adam_v: Vec<Tensor>,
    adam_step: i64,
    rng: SeededRng,
    device: Device,
}

/// The tensor shapes of the flat layout, in order.
fn shapes(spec: &MlpSpec) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for (n_in, n_out) in spec.layer_sizes(spec.act_dim) {
        out.push(vec![n_out as i64, n_in as i64]);
        out.push(vec![n_out as i64]);
    }
    out.push(vec![spec.act_dim as i64]);
    for (n_in, n_out) in spec.layer_sizes(1) {
        out.push(vec![n_out as i64, n_in as i64]);
        out.push(vec![n_out as i64]);
    }
    out
}

fn tensor_to_vec(t: &Tensor) -> Vec<f32> {
    let flat = t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1);
    Vec::<f32>::try_from(&flat).expect("a float tensor converts to Vec<f32>")
}

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_7;

/// The limit price's index in the action (`Action::to_array`: battery, quantity, price).
const PRICE_ACTION: usize = 2;

impl Ppo {
    /// A fresh learner: PyTorch's default initialisation from a seeded
    /// pure-Rust generator, the actor's mean head scaled by 0.01 (actions
    /// start near 0, as CleanRL's orthogonal init with gain 0.01 intends),
    /// log std at `init_log_std`.
    pub(crate) fn new(config: PpoConfig, device: Device) -> Result<Ppo, TrainerError> {
        config.validate()?;
        let spec = config.spec();
        let mut flat =
            ActorCritic::random(&spec, peergrid_core::rng::derive_seed(config.seed, "ppo-init"))
                .to_flat();
        let sizes = spec.layer_sizes(spec.act_dim);
        let head = sizes[..sizes.len() - 1].iter().map(|(i, o)| i * o + o).sum::<usize>();
        let (h_in, h_out) = sizes[sizes.len() - 1];
        flat[head..head + h_in * h_out].iter_mut().for_each(|w| *w *= 0.01);
        if spec.prior == ActionPrior::RuleBased {
            // The price row starts at zero, so the untrained policy bids
            // exactly the rule's price. The rule puts every order at the
            // same midpoint; any small price output that differs between
            // households puts some bids below some asks, and trades the
            // rule makes stop matching (10 % of the return in the learning
            // test). Battery and quantity stay near the rule, continuously.
            let price = head + PRICE_ACTION * h_in;
            flat[price..price + h_in].fill(0.0);
        }
        let bias = head + h_in * h_out;
        flat[bias..bias + h_out].fill(0.0);
        flat[bias + h_out..bias + h_out + spec.act_dim].fill(config.init_log_std);
        Ppo::from_flat(config, &flat, device)
    }

    /// A learner with the given flat parameters and zero Adam moments.
    pub(crate) fn from_flat(
        config: PpoConfig,
        flat: &[f32],
        device: Device,
    ) -> Result<Ppo, TrainerError> {
        config.validate()?;
        let spec = config.spec();
        ActorCritic::from_flat(&spec, flat)?;
        let mut params = Vec::new();
        let mut pos = 0;
        for shape in shapes(&spec) {
            let n: i64 = shape.iter().product();
            let t = Tensor::from_slice(&flat[pos..pos + n as usize])
                .view(shape.as_slice())
                .to_device(device);
            params.push(t.set_requires_grad(true));
            pos += n as usize;
        }
        let zeros = |p: &Tensor| Tensor::zeros(p.size(), (Kind::Float, device));
        let adam_m = params.iter().map(zeros).collect();
        let adam_v = params.iter().map(zeros).collect();
        let rng = SeededRng::new(peergrid_core::rng::derive_seed(config.seed, "ppo-shuffle"));
        Ok(Ppo { config, spec, params, adam_m, adam_v, adam_step: 0, rng, device })
    }

    /// The parameters in the flat layout.
    pub(crate) fn to_flat(&self) -> Vec<f32> {
        self.params.iter().flat_map(tensor_to_vec).collect()
    }

    /// The network as the pure-Rust forward pass sees it. An error (never a
    /// panic) when a parameter is not finite: the caller decides what to do
    /// with an update that diverged.
    pub(crate) fn actor_critic(&self) -> Result<ActorCritic, TrainerError> {
        Ok(ActorCritic::from_flat(&self.spec, &self.to_flat())?)
    }

    /// Everything an update changes (parameters, Adam state, the shuffling
    /// generator), to put back with [`restore`](Self::restore) when the
    /// update turns out to be unusable.
    pub(crate) fn snapshot(&self) -> PpoSnapshot {
        PpoSnapshot { params: self.to_flat(), optimiser: self.optimiser_state() }
    }

    /// Puts back what [`snapshot`](Self::snapshot) took.
    pub(crate) fn restore(&mut self, s: &PpoSnapshot) -> Result<(), TrainerError> {
        let mut pos = 0;
        tch::no_grad(|| {
            for p in self.params.iter_mut() {
                let k = p.numel();
                let size = p.size();
                p.copy_(
                    &Tensor::from_slice(&s.params[pos..pos + k])
                        .view(size.as_slice())
                        .to_device(self.device),
                );
                pos += k;
            }
        });
        self.restore_optimiser(&s.optimiser)
    }

    /// Whether every parameter and Adam moment is finite.
    pub(crate) fn is_finite(&self) -> bool {
        let finite =
            |ts: &[Tensor]| ts.iter().all(|t| tensor_to_vec(t).iter().all(|x| x.is_finite()));
        finite(&self.params) && finite(&self.adam_m) && finite(&self.adam_v)
    }

    /// Adam state and the shuffling generator, for checkpoints.
    pub(crate) fn optimiser_state(&self) -> OptimiserState {
        OptimiserState {
            m: self.adam_m.iter().flat_map(tensor_to_vec).collect(),
            v: self.adam_v.iter().flat_map(tensor_to_vec).collect(),
            step: self.adam_step,
            rng: self.rng.state(),
        }
    }

    /// Restores what [`optimiser_state`](Self::optimiser_state) saved.
    pub(crate) fn restore_optimiser(&mut self, s: &OptimiserState) -> Result<(), TrainerError> {
        let n = self.spec.n_params();
        if s.m.len() != n || s.v.len() != n || s.step < 0 {
            return Err(TrainerError::Checkpoint(format!(
                "optimiser state has {} / {} values, the network {n}",
                s.m.len(),
                s.v.len()
            )));
        }
        let mut pos = 0;
        for (m, v) in self.adam_m.iter_mut().zip(self.adam_v.iter_mut()) {
            let k = m.numel();
            let size = m.size();
            *m =
                Tensor::from_slice(&s.m[pos..pos + k]).view(size.as_slice()).to_device(self.device);
            *v =
                Tensor::from_slice(&s.v[pos..pos + k]).view(size.as_slice()).to_device(self.device);
            pos += k;
        }
        self.adam_step = s.step;
        self.rng = SeededRng::from_state(s.rng);
        Ok(())
    }

    fn layers(&self, first: usize, n: usize) -> Vec<(&Tensor, &Tensor)> {
        (0..n).map(|l| (&self.params[first + 2 * l], &self.params[first + 2 * l + 1])).collect()
    }

    fn mlp(x: &Tensor, layers: &[(&Tensor, &Tensor)]) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, (w, b)) in layers.iter().enumerate() {
            h = h.linear(w, Some(*b));
            if i + 1 < layers.len() {
                h = h.tanh();
            }
        }
        h
    }

    /// Batched forward pass on normalised observations `[n, obs_dim]`:
    /// (action means `[n, act_dim]`, values `[n]`).
    pub(crate) fn forward(&self, obs: &Tensor) -> (Tensor, Tensor) {
        let n_layers = self.spec.hidden.len() + 1;
        let mean = Self::mlp(obs, &self.layers(0, n_layers));
        let critic_first = 2 * n_layers + 1;
        let value = Self::mlp(obs, &self.layers(critic_first, n_layers)).squeeze_dim(-1);
        (mean, value)
    }

    fn log_std(&self) -> &Tensor {
        &self.params[2 * (self.spec.hidden.len() + 1)]
    }

    /// Σ over components of the Gaussian log-density, `[n]`.
    fn log_prob(&self, mean: &Tensor, actions: &Tensor) -> Tensor {
        let log_std = self.log_std();
        let z = (actions - mean) / log_std.exp();
        (z.square() * -0.5 - log_std - HALF_LN_2PI).sum_dim_intlist(-1, false, Kind::Float)
    }

    fn entropy(&self) -> Tensor {
        (self.log_std() + 0.5 + HALF_LN_2PI).sum(Kind::Float)
    }

    /// One PPO update on `rollouts`, each normalised with the observation
    /// normaliser of the version that produced it (`normaliser_of`);
    /// `update_index` (0-based) drives learning-rate annealing. `stop` is
    /// checked before every gradient step: once it is set the update ends
    /// early with [`Interrupted`], leaving the parameters part-way (the
    /// caller restores its snapshot). Bounds a shutdown by one minibatch
    /// step instead of a whole update.
    pub(crate) fn update_unless<'a>(
        &mut self,
        rollouts: &[Rollout],
        normaliser_of: impl Fn(u64) -> &'a ObsNormaliser,
        update_index: u64,
        stop: &AtomicBool,
    ) -> Result<UpdateStats, Interrupted> {
        let batch = Batch::build(rollouts, normaliser_of, &self.config);
        let n = batch.len();
        let mut stats = UpdateStats { samples: n, ..UpdateStats::default() };
        if n == 0 {
            return Ok(stats);
        }
        let cfg = self.config.clone();
        let lr = match (cfg.anneal_lr, cfg.total_updates) {
            (true, Some(total)) if total > 0 => {
                cfg.learning_rate * (1.0 - update_index as f64 / total as f64).max(0.0)
            }
            _ => cfg.learning_rate,
        };
        stats.learning_rate = lr;
        let dev = self.device;
        let obs = Tensor::from_slice(&batch.obs).view([n as i64, OBS_DIM as i64]).to_device(dev);
        let actions =
            Tensor::from_slice(&batch.actions).view([n as i64, ACT_DIM as i64]).to_device(dev);
        let old_logp = Tensor::from_slice(&batch.log_probs).to_device(dev);
        let old_values = Tensor::from_slice(&batch.values).to_device(dev);
        let advantages = Tensor::from_slice(&batch.advantages).to_device(dev);
        let returns = Tensor::from_slice(&batch.returns).to_device(dev);

        let mb = cfg.minibatch_size.min(n);
        let mut order: Vec<i64> = (0..n as i64).collect();
        let (mut pg_sum, mut v_sum, mut ent_sum, mut kl_sum, mut cf_sum, mut steps) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0usize);
        'epochs: for _ in 0..cfg.update_epochs {
            // Fisher–Yates with the learner's own seeded generator.
            for i in (1..n).rev() {
                order.swap(i, self.rng.below(i as u64 + 1) as usize);
            }
            let mut epoch_kl = 0.0;
            let mut epoch_steps = 0;
            for chunk in order.chunks(mb) {
                if stop.load(Ordering::Relaxed) {
                    return Err(Interrupted { gradient_steps: steps });
                }
                let idx = Tensor::from_slice(chunk).to_device(dev);
                let (mean, new_value) = self.forward(&obs.index_select(0, &idx));
                let new_logp = self.log_prob(&mean, &actions.index_select(0, &idx));
                let logratio = &new_logp - old_logp.index_select(0, &idx);
                let ratio = logratio.exp();
                let (approx_kl, clipfrac) = tch::no_grad(|| {
                    let kl = ((&ratio - 1.0) - &logratio).mean(Kind::Float).double_value(&[]);
                    let cf = (&ratio - 1.0)
                        .abs()
                        .gt(cfg.clip_coef)
                        .to_kind(Kind::Float)
                        .mean(Kind::Float)
                        .double_value(&[]);
                    (kl, cf)
                });
                let mut mb_adv = advantages.index_select(0, &idx);
                if cfg.norm_adv && chunk.len() > 1 {
                    mb_adv = (&mb_adv - mb_adv.mean(Kind::Float)) / (mb_adv.std(true) + 1e-8);
                }
                let pg1 = -&mb_adv * &ratio;
                let pg2 = -&mb_adv * ratio.clamp(1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef);
                let pg_loss = pg1.maximum(&pg2).mean(Kind::Float);
                let mb_ret = returns.index_select(0, &idx);
                let v_loss = if cfg.clip_vloss {
                    let mb_old_v = old_values.index_select(0, &idx);
                    let unclipped = (&new_value - &mb_ret).square();
                    let clipped_v =
                        &mb_old_v + (&new_value - &mb_old_v).clamp(-cfg.clip_coef, cfg.clip_coef);
                    let clipped = (clipped_v - &mb_ret).square();
                    unclipped.maximum(&clipped).mean(Kind::Float) * 0.5
                } else {
                    (&new_value - &mb_ret).square().mean(Kind::Float) * 0.5
                };
                let entropy = self.entropy();
                let loss = &pg_loss - &entropy * cfg.ent_coef + &v_loss * cfg.vf_coef;
                for p in self.params.iter_mut() {
                    p.zero_grad();
                }
                loss.backward();
                self.adam_step(lr);
                pg_sum += pg_loss.double_value(&[]);
                v_sum += v_loss.double_value(&[]);
                ent_sum += entropy.double_value(&[]);
                kl_sum += approx_kl;
                cf_sum += clipfrac;
                steps += 1;
                epoch_kl += approx_kl;
                epoch_steps += 1;
            }
            if cfg.target_kl.is_some_and(|t| epoch_kl / epoch_steps.max(1) as f64 > t) {
                break 'epochs;
            }
        }
        let k = steps.max(1) as f64;
        stats.policy_loss = pg_sum / k;
        stats.value_loss = v_sum / k;
        stats.entropy = ent_sum / k;
        stats.approx_kl = kl_sum / k;
        stats.clipfrac = cf_sum / k;
        stats.gradient_steps = steps;
        stats.explained_variance = explained_variance(&batch.values, &batch.returns);
        Ok(stats)
    }

    /// Adam with the gradients clipped to a total norm of `max_grad_norm`.
    fn adam_step(&mut self, lr: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        self.adam_step += 1;
        let t = self.adam_step as i32;
        let (bc1, bc2) = (1.0 - B1.powi(t), 1.0 - B2.powi(t));
        let eps = self.config.adam_eps;
        let max_norm = self.config.max_grad_norm;
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
            let total = grads
                .iter()
                .map(|g| g.square().sum(Kind::Float).double_value(&[]))
                .sum::<f64>()
                .sqrt();
            let scale = if total > max_norm { max_norm / (total + 1e-6) } else { 1.0 };
            for ((p, g), (m, v)) in self
                .params
                .iter_mut()
                .zip(&grads)
                .zip(self.adam_m.iter_mut().zip(self.adam_v.iter_mut()))
            {
                let g = g * scale;
                let new_m = &*m * B1 + &g * (1.0 - B1);
                let new_v = &*v * B2 + g.square() * (1.0 - B2);
                m.copy_(&new_m);
                v.copy_(&new_v);
                let step = (&new_m / bc1) / ((&new_v / bc2).sqrt() + eps) * lr;
                let new_p = &*p - step;
                p.copy_(&new_p);
            }
        });
    }
}

/// What [`Ppo::snapshot`] saves: the flat parameters and the optimiser.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PpoSnapshot {
    params: Vec<f32>,
    optimiser: OptimiserState,
}

/// Adam moments, step count and the shuffling generator's state.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimiserState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub step: i64,
    pub rng: [u64; 4],
}

/// The training batch: every rollout's samples, normalised, with GAE.
struct Batch {
    obs: Vec<f32>,
    actions: Vec<f32>,
    log_probs: Vec<f32>,
    values: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
}

impl Batch {
    fn build<'a>(
        rollouts: &[Rollout],
        normaliser_of: impl Fn(u64) -> &'a ObsNormaliser,
        cfg: &PpoConfig,
    ) -> Batch {
        let total: usize = rollouts.iter().map(Rollout::samples).sum();
        let mut b = Batch {
            obs: Vec::with_capacity(total * OBS_DIM),
            actions: Vec::with_capacity(total * ACT_DIM),
            log_probs: Vec::with_capacity(total),
            values: Vec::with_capacity(total),
            advantages: Vec::with_capacity(total),
            returns: Vec::with_capacity(total),
        };
        for r in rollouts {
            let normaliser = normaliser_of(r.policy_version);
            let rewards: Vec<f32> = r.rewards.iter().map(|x| x * cfg.reward_scale).collect();
            let (adv, ret) = gae(
                &rewards,
                &r.values,
                &r.bootstrap_values,
                None,
                r.n_prosumers(),
                cfg.gamma,
                cfg.gae_lambda,
            );
            for row in r.observations.chunks_exact(OBS_DIM) {
                let mut x: [f32; OBS_DIM] = row.try_into().expect("chunks of OBS_DIM");
                normaliser.apply(&mut x);
                b.obs.extend_from_slice(&x);
            }
            b.actions.extend_from_slice(&r.actions);
            b.log_probs.extend_from_slice(&r.log_probs);
            b.values.extend_from_slice(&r.values);
            b.advantages.extend(adv);
            b.returns.extend(ret);
        }
        b
    }

    fn len(&self) -> usize {
        self.log_probs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::policy::Scratch;

    #[test]
    fn running_stats_match_a_direct_computation() {
        let rows: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0).collect();
        let mut s = RunningStats::new(2);
        s.update(&rows[..16]);
        s.update(&rows[16..]);
        for d in 0..2 {
            let col: Vec<f64> = rows.chunks(2).map(|r| r[d] as f64).collect();
            let m = col.iter().sum::<f64>() / col.len() as f64;
            let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / col.len() as f64;
            assert!(
                (s.mean[d] - m).abs() < 1e-4 && (s.var[d] - v).abs() < 1e-3,
                "{d}: {s:?} vs {m} {v}"
            );
        }
    }

    #[test]
    fn the_tch_forward_pass_equals_the_pure_rust_one() {
        let ppo =
            Ppo::new(PpoConfig { seed: 9, init_log_std: 0.3, ..PpoConfig::default() }, Device::Cpu)
                .unwrap();
        let net = ppo.actor_critic().unwrap();
        let mut rng = SeededRng::new(4);
        let xs: Vec<f32> = (0..32 * OBS_DIM).map(|_| rng.uniform(-3.0, 3.0) as f32).collect();
        let (mean, value) = ppo.forward(&Tensor::from_slice(&xs).view([32, OBS_DIM as i64]));
        let (mean, value) = (tensor_to_vec(&mean), tensor_to_vec(&value));
        let mut scratch = Scratch::default();
        for (i, x) in xs.chunks(OBS_DIM).enumerate() {
            let mut m = [0.0f32; ACT_DIM];
            net.mean(x, &mut scratch, &mut m);
            for k in 0..ACT_DIM {
                assert!((m[k] - mean[i * ACT_DIM + k]).abs() < 1e-5);
            }
            assert!((net.value(x, &mut scratch) - value[i]).abs() < 1e-5);
        }
    }

    #[test]
    fn invalid_configs_name_the_field() {
        for (cfg, field) in [
            (PpoConfig { minibatch_size: 0, ..PpoConfig::default() }, "ppo.minibatch_size"),
            (PpoConfig { learning_rate: f64::NAN, ..PpoConfig::default() }, "ppo.learning_rate"),
            (PpoConfig { hidden: vec![], ..PpoConfig::default() }, "ppo.hidden"),
        ] {
            match cfg.validate() {
                Err(TrainerError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
