//! The policy network: the actor-critic's forward pass in pure Rust, and
//! its flat weight layout.
//!
//! The trainer (tch) owns the parameters; actors run inference here without
//! libtorch. The **flat weight layout** exchanged between them is:
//!
//! ```text
//! actor:   for each layer l (hidden layers, then the mean head of size act_dim):
//!            W_l  [out_l × in_l]  row-major (PyTorch `nn.Linear.weight`)
//!            b_l  [out_l]
//! log_std: [act_dim]               (state-independent Gaussian log std)
//! critic:  for each layer l (hidden layers, then the value head of size 1):
//!            W_l  [out_l × in_l]  row-major
//!            b_l  [out_l]
//! ```
//! all `f32` little-endian, hidden layers with `tanh`, heads linear. The
//! observation normaliser (running mean/variance, clip) travels beside it
//! (see [`super::mlp`]).
//!
//! Internally each weight matrix is stored **transposed** (`[in × out]`), so
//! a layer is a sequence of `out += x_i · row_i` updates over contiguous
//! memory: loops the compiler vectorises. On x86-64 an AVX2 build of the
//! same kernel is picked at run time when the CPU has it (without FMA, so
//! results are bit-identical on every machine). `tanh` uses a rational approximation accurate to a few
//! 1e-7, far inside the 1e-5 parity budget with libtorch.
//!
//! This file knows nothing of observations or actions as domain types:
//! slices of `f32` in, slices out.

use serde::{Deserialize, Serialize};

use super::{ActionPrior, ACT_DIM};
use crate::error::CoreError;
use crate::observation::OBS_DIM;
use crate::rng::SeededRng;

/// Sizes of the actor-critic network, and what its actions are added to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlpSpec {
    /// Observation features the network reads.
    pub obs_dim: usize,
    /// Width of each hidden layer.
    pub hidden: Vec<usize>,
    /// Action components the actor outputs.
    pub act_dim: usize,
    /// Policies saved before the prior existed have none.
    #[serde(default)]
    pub prior: ActionPrior,
}

impl Default for MlpSpec {
    fn default() -> Self {
        MlpSpec {
            obs_dim: OBS_DIM,
            hidden: vec![64, 64],
            act_dim: ACT_DIM,
            prior: ActionPrior::None,
        }
    }
}

impl MlpSpec {
    /// Checks the dimensions are non-zero and within the limits a policy file may declare.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.obs_dim == 0 || self.obs_dim > 4096 || self.act_dim == 0 || self.act_dim > 64 {
            return Err(CoreError::invalid(
                "mlp",
                format!("obs_dim {} / act_dim {} out of range", self.obs_dim, self.act_dim),
            ));
        }
        if self.hidden.is_empty()
            || self.hidden.len() > 8
            || self.hidden.iter().any(|h| *h == 0 || *h > 4096)
        {
            return Err(CoreError::invalid(
                "mlp.hidden",
                format!("needs 1..=8 layers of 1..=4096 units, got {:?}", self.hidden),
            ));
        }
        Ok(())
    }

    /// `(inputs, outputs)` of each layer of an MLP with `out` outputs.
    pub fn layer_sizes(&self, out: usize) -> Vec<(usize, usize)> {
        let mut dims = vec![self.obs_dim];
        dims.extend(&self.hidden);
        dims.push(out);
        dims.windows(2).map(|w| (w[0], w[1])).collect()
    }

    fn params_of(&self, out: usize) -> usize {
        self.layer_sizes(out).iter().map(|(i, o)| i * o + o).sum()
    }

    /// Number of `f32` values in the flat layout.
    pub fn n_params(&self) -> usize {
        self.params_of(self.act_dim) + self.act_dim + self.params_of(1)
    }
}

/// `tanh` for f32 via the rational approximation used by Eigen
/// (`generic_fast_tanh_float`): max abs error a few 1e-7, no branches but a clamp.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published coefficients, kept verbatim
fn fast_tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16_f32;
    p = p * x2 + 2.000_187_9e-13;
    p = p * x2 - 8.604_671_5e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619_3e-4;
    p = p * x2 + 4.893_524_6e-3;
    let p = p * x;
    let mut q = 1.198_258_4e-6_f32;
    q = q * x2 + 1.185_347_1e-4;
    q = q * x2 + 2.268_434_6e-3;
    q = q * x2 + 4.893_525e-3;
    p / q
}

/// A dense layer with its weights transposed to `[in × out]`.
#[derive(Clone, Debug, PartialEq)]
struct Dense {
    n_in: usize,
    n_out: usize,
    wt: Vec<f32>,
    b: Vec<f32>,
}

impl Dense {
    #[inline]
    fn forward(&self, x: &[f32], out: &mut [f32], tanh: bool) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { self.forward_avx2(x, out, tanh) };
            return;
        }
        self.forward_kernel(x, out, tanh);
    }

    /// The same kernel compiled for AVX2 (8 lanes instead of SSE2's 4).
    /// FMA is deliberately **not** enabled: fused multiply-adds round
    /// differently, and a policy must produce bit-identical actions on every
    /// machine for runs to be reproducible. Vectorising across outputs keeps
    /// each output's summation order, so both paths agree bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_avx2(&self, x: &[f32], out: &mut [f32], tanh: bool) {
        self.forward_kernel(x, out, tanh);
    }

    /// `out = b + Σ_i x_i · row_i`, then `tanh`. Outputs are computed in
    /// blocks of [`BLOCK`] held in registers across the whole input loop
    /// (instead of streaming `out` through memory once per input), and every
    /// output is summed in input order, whatever the block or vector width.
    #[inline(always)]
    fn forward_kernel(&self, x: &[f32], out: &mut [f32], tanh: bool) {
        let (n_in, n_out) = (self.n_in, self.n_out);
        let x = &x[..n_in];
        let out = &mut out[..n_out];
        let mut o0 = 0;
        while o0 + BLOCK <= n_out {
            let mut acc = [0.0f32; BLOCK];
            acc.copy_from_slice(&self.b[o0..o0 + BLOCK]);
            for (i, xi) in x.iter().enumerate() {
                let w: &[f32; BLOCK] = self.wt[i * n_out + o0..i * n_out + o0 + BLOCK]
                    .try_into()
                    .expect("block in bounds");
                for k in 0..BLOCK {
                    acc[k] += xi * w[k];
                }
            }
            out[o0..o0 + BLOCK].copy_from_slice(&acc);
            o0 += BLOCK;
        }
        for (o, slot) in out.iter_mut().enumerate().skip(o0) {
            let mut acc = self.b[o];
            for (i, xi) in x.iter().enumerate() {
                acc += xi * self.wt[i * n_out + o];
            }
            *slot = acc;
        }
        if tanh {
            for o in out.iter_mut() {
                *o = fast_tanh(*o);
            }
        }
    }
}

/// Outputs per register block: 4 AVX2 or 8 SSE2 registers of accumulators.
const BLOCK: usize = 32;

/// A tanh MLP with a linear head.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    layers: Vec<Dense>,
    width: usize,
}

impl Mlp {
    /// Reads the layers of `sizes` from `flat` (PyTorch row-major `[out × in]`),
    /// returning the MLP and the number of values consumed.
    fn from_flat(sizes: &[(usize, usize)], flat: &[f32]) -> (Mlp, usize) {
        let mut pos = 0;
        let mut layers = Vec::with_capacity(sizes.len());
        for &(n_in, n_out) in sizes {
            let w = &flat[pos..pos + n_in * n_out];
            let mut wt = vec![0.0; n_in * n_out];
            for o in 0..n_out {
                for i in 0..n_in {
                    wt[i * n_out + o] = w[o * n_in + i];
                }
            }
            pos += n_in * n_out;
            let b = flat[pos..pos + n_out].to_vec();
            pos += n_out;
            layers.push(Dense { n_in, n_out, wt, b });
        }
        let width = sizes.iter().map(|(i, o)| (*i).max(*o)).max().unwrap_or(0);
        (Mlp { layers, width }, pos)
    }

    fn write_flat(&self, out: &mut Vec<f32>) {
        for l in &self.layers {
            for o in 0..l.n_out {
                for i in 0..l.n_in {
                    out.push(l.wt[i * l.n_out + o]);
                }
            }
            out.extend(&l.b);
        }
    }

    /// Forward pass into `out` (length of the last layer), using `scratch`
    /// (two buffers of the widest layer) to avoid allocating.
    pub fn forward(&self, x: &[f32], scratch: &mut Scratch, out: &mut [f32]) {
        scratch.ensure(self.width);
        let (mut a, mut b) = (&mut scratch.a, &mut scratch.b);
        a[..x.len()].copy_from_slice(x);
        let last = self.layers.len() - 1;
        for (k, layer) in self.layers.iter().enumerate() {
            if k == last {
                layer.forward(a, out, false);
            } else {
                layer.forward(a, b, true);
                std::mem::swap(&mut a, &mut b);
            }
        }
    }
}

/// Reusable activation buffers.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Scratch {
    fn ensure(&mut self, width: usize) {
        if self.a.len() < width {
            self.a.resize(width, 0.0);
            self.b.resize(width, 0.0);
        }
    }
}

/// The shared actor-critic: Gaussian policy mean, log std, and value.
#[derive(Clone, Debug, PartialEq)]
pub struct ActorCritic {
    /// The architecture.
    pub spec: MlpSpec,
    /// The actor: observation → action mean.
    pub actor: Mlp,
    /// Log standard deviation of each action component (state-independent).
    pub log_std: Vec<f32>,
    /// The critic: observation → value.
    pub critic: Mlp,
}

impl ActorCritic {
    /// Builds the network from the flat layout (see the module docs).
    pub fn from_flat(spec: &MlpSpec, flat: &[f32]) -> Result<ActorCritic, CoreError> {
        spec.validate()?;
        if flat.len() != spec.n_params() {
            return Err(CoreError::invalid(
                "weights",
                format!("expected {} values for {spec:?}, got {}", spec.n_params(), flat.len()),
            ));
        }
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::invalid("weights", format!("value #{i} is not finite")));
        }
        let (actor, n) = Mlp::from_flat(&spec.layer_sizes(spec.act_dim), flat);
        let log_std = flat[n..n + spec.act_dim].to_vec();
        let (critic, _) = Mlp::from_flat(&spec.layer_sizes(1), &flat[n + spec.act_dim..]);
        Ok(ActorCritic { spec: spec.clone(), actor, log_std, critic })
    }

    /// The parameters in the flat layout (see the module docs).
    pub fn to_flat(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.spec.n_params());
        self.actor.write_flat(&mut out);
        out.extend(&self.log_std);
        self.critic.write_flat(&mut out);
        out
    }

    /// PyTorch's default `nn.Linear` initialisation (U(±1/√fan_in)), seeded;
    /// log std starts at 0. For tests and untrained baselines.
    pub fn random(spec: &MlpSpec, seed: u64) -> ActorCritic {
        let mut rng = SeededRng::new(seed);
        let mut flat = Vec::with_capacity(spec.n_params());
        let push_layers = |out: usize, flat: &mut Vec<f32>, rng: &mut SeededRng| {
            for (n_in, n_out) in spec.layer_sizes(out) {
                let bound = 1.0 / (n_in as f64).sqrt();
                flat.extend((0..n_in * n_out + n_out).map(|_| rng.uniform(-bound, bound) as f32));
            }
        };
        push_layers(spec.act_dim, &mut flat, &mut rng);
        flat.extend(std::iter::repeat_n(0.0, spec.act_dim));
        push_layers(1, &mut flat, &mut rng);
        ActorCritic::from_flat(spec, &flat).expect("generated weights match the spec")
    }

    /// The actor's mean action for the normalised observation `obs`, into `out`.
    pub fn mean(&self, obs: &[f32], scratch: &mut Scratch, out: &mut [f32]) {
        self.actor.forward(obs, scratch, out);
    }

    /// The critic's value of the normalised observation `obs`.
    pub fn value(&self, obs: &[f32], scratch: &mut Scratch) -> f32 {
        let mut v = [0.0f32];
        self.critic.forward(obs, scratch, &mut v);
        v[0]
    }

    /// Samples an action for the normalised observation `x`: the mean plus
    /// `exp(log_std)` times standard normals from `rng`, with its log-prob
    /// and the value of `x`. Actors that learn call this.
    pub fn sample(
        &self,
        x: &[f32],
        rng: &mut SeededRng,
        scratch: &mut Scratch,
    ) -> ([f32; ACT_DIM], f32, f32) {
        let mut mean = [0.0f32; ACT_DIM];
        self.mean(x, scratch, &mut mean);
        let mut a = [0.0f32; ACT_DIM];
        for ((a, m), ls) in a.iter_mut().zip(&mean).zip(&self.log_std) {
            *a = m + ls.exp() * rng.normal() as f32;
        }
        (a, self.log_prob(&mean, &a), self.value(x, scratch))
    }

    /// Log-density of `action` under N(mean, exp(log_std)²), summed over components.
    pub fn log_prob(&self, mean: &[f32], action: &[f32]) -> f32 {
        const HALF_LN_2PI: f32 = 0.918_938_5;
        mean.iter()
            .zip(action)
            .zip(&self.log_std)
            .map(|((m, a), ls)| {
                let z = (a - m) / ls.exp();
                -0.5 * z * z - ls - HALF_LN_2PI
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A straightforward reference forward pass on the row-major layout, in f64.
    fn reference_forward(sizes: &[(usize, usize)], flat: &[f32], x: &[f32]) -> Vec<f64> {
        let mut a: Vec<f64> = x.iter().map(|v| *v as f64).collect();
        let mut pos = 0;
        for (k, &(n_in, n_out)) in sizes.iter().enumerate() {
            let w = &flat[pos..pos + n_in * n_out];
            let b = &flat[pos + n_in * n_out..pos + n_in * n_out + n_out];
            pos += n_in * n_out + n_out;
            a = (0..n_out)
                .map(|o| {
                    let z =
                        b[o] as f64 + (0..n_in).map(|i| w[o * n_in + i] as f64 * a[i]).sum::<f64>();
                    if k + 1 < sizes.len() {
                        z.tanh()
                    } else {
                        z
                    }
                })
                .collect();
        }
        a
    }

    #[test]
    fn fast_tanh_is_accurate() {
        let mut worst = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((fast_tanh(x) as f64 - (x as f64).tanh()).abs());
        }
        assert!(worst < 2e-6, "max error {worst}");
        assert_eq!(fast_tanh(100.0), fast_tanh(7.905_311));
        assert!(fast_tanh(f32::INFINITY) <= 1.0);
    }

    #[test]
    fn forward_matches_reference_and_flat_round_trips() {
        let spec =
            MlpSpec { obs_dim: 5, hidden: vec![37, 4], act_dim: 3, prior: ActionPrior::None };
        let net = ActorCritic::random(&spec, 42);
        let flat = net.to_flat();
        assert_eq!(flat.len(), spec.n_params());
        assert_eq!(ActorCritic::from_flat(&spec, &flat).unwrap(), net);
        let x = [0.3f32, -1.2, 0.7, 2.0, -0.1];
        let mut scratch = Scratch::default();
        let mut mean = [0.0f32; 3];
        net.mean(&x, &mut scratch, &mut mean);
        let reference = reference_forward(&spec.layer_sizes(3), &flat, &x);
        for (a, b) in mean.iter().zip(&reference) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
        let critic_flat = &flat[spec.params_of(3) + 3..];
        let v_ref = reference_forward(&spec.layer_sizes(1), critic_flat, &x)[0];
        assert!((net.value(&x, &mut scratch) as f64 - v_ref).abs() < 1e-5);
    }

    #[test]
    fn simd_dispatch_is_bit_identical_to_the_portable_kernel() {
        let spec = MlpSpec::default();
        let net = ActorCritic::random(&spec, 11);
        let mut rng = SeededRng::new(5);
        for _ in 0..200 {
            let x: Vec<f32> = (0..spec.obs_dim).map(|_| rng.uniform(-4.0, 4.0) as f32).collect();
            let layer = &net.actor.layers[0];
            let (mut a, mut b) = (vec![0.0f32; layer.n_out], vec![0.0f32; layer.n_out]);
            layer.forward(&x, &mut a, true);
            layer.forward_kernel(&x, &mut b, true);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn bad_weights_are_rejected() {
        let spec = MlpSpec::default();
        let e = ActorCritic::from_flat(&spec, &[0.0; 3]).unwrap_err().to_string();
        assert!(e.contains("expected"), "{e}");
        let mut flat = ActorCritic::random(&spec, 1).to_flat();
        flat[10] = f32::NAN;
        assert!(ActorCritic::from_flat(&spec, &flat).unwrap_err().to_string().contains("#10"));
    }

    #[test]
    fn specs_saved_without_a_prior_have_none() {
        let old: MlpSpec =
            serde_json::from_str(r#"{"obs_dim":14,"hidden":[64,64],"act_dim":3}"#).unwrap();
        assert_eq!(old.prior, ActionPrior::None);
        let spec = MlpSpec { prior: ActionPrior::RuleBased, ..MlpSpec::default() };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains(r#""prior":"rule-based""#), "{json}");
        assert_eq!(serde_json::from_str::<MlpSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn log_prob_of_the_mean_is_the_gaussian_peak() {
        let net = ActorCritic::random(&MlpSpec::default(), 3);
        let lp = net.log_prob(&[0.0; 3], &[0.0; 3]);
        assert!((lp - 3.0 * -0.918_938_5).abs() < 1e-6);
    }
}
