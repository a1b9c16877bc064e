//! [`PpoConfig`]: every hyperparameter, its default and its bounds.

use super::*;

/// Every PPO hyperparameter, with CleanRL's defaults where they apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Hidden layer widths of both actor and critic.
    pub hidden: Vec<usize>,
    /// What the actor's output is added to (`rule-based`: residual learning
    /// on top of the rule-based baseline; `none`: the output is the action).
    pub prior: ActionPrior,
    /// Adam step size.
    pub learning_rate: f64,
    /// Anneal the learning rate linearly to 0 over `total_updates`.
    pub anneal_lr: bool,
    /// Updates planned (for annealing); `None` = keep the rate constant.
    pub total_updates: Option<u64>,
    /// Discount factor.
    pub gamma: f32,
    /// GAE λ.
    pub gae_lambda: f32,
    /// Passes over each batch.
    pub update_epochs: usize,
    /// Samples per gradient step. Larger is faster per sample on CPU
    /// (≈6k sample-gradients/s at 64, ≈34k at 1024 on 2 cores).
    pub minibatch_size: usize,
    /// Normalise advantages per minibatch.
    pub norm_adv: bool,
    /// Surrogate clipping coefficient.
    pub clip_coef: f64,
    /// Clip the value loss like the surrogate.
    pub clip_vloss: bool,
    /// Entropy bonus coefficient.
    pub ent_coef: f64,
    /// Value loss coefficient.
    pub vf_coef: f64,
    /// Gradient-norm clip.
    pub max_grad_norm: f64,
    /// Stop the epochs of an update early once the approximate KL exceeds this.
    pub target_kl: Option<f64>,
    /// Adam ε.
    pub adam_eps: f64,
    /// Normalised observations are clipped to ±this.
    pub obs_clip: f32,
    /// Rewards are multiplied by this before GAE.
    pub reward_scale: f32,
    /// Initial Gaussian log std of every action component.
    pub init_log_std: f32,
    /// Seeds the initial weights and the minibatch shuffling.
    pub seed: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            hidden: vec![64, 64],
            prior: ActionPrior::RuleBased,
            learning_rate: 3e-4,
            anneal_lr: true,
            total_updates: None,
            gamma: 0.99,
            gae_lambda: 0.95,
            update_epochs: 10,
            minibatch_size: 256,
            norm_adv: true,
            clip_coef: 0.2,
            clip_vloss: true,
            ent_coef: 0.0,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            target_kl: None,
            adam_eps: 1e-5,
            obs_clip: 10.0,
            reward_scale: 1.0,
            init_log_std: -1.0,
            seed: 1,
        }
    }
}

impl PpoConfig {
    /// Checks every field; the error names it and its bound.
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad =
            |field: &str, reason: &str| Err(TrainerError::config(format!("ppo.{field}"), reason));
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h == 0 || h > 4096) {
            return bad("hidden", "1 or more layers of 1..=4096 units");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return bad("learning_rate", "must be in (0, 1)");
        }
        if !(self.gamma > 0.0 && self.gamma <= 1.0 && (0.0..=1.0).contains(&self.gae_lambda)) {
            return bad("gamma", "gamma in (0, 1] and gae_lambda in [0, 1]");
        }
        if self.update_epochs == 0 || self.update_epochs > 1000 {
            return bad("update_epochs", "must be in 1..=1000");
        }
        if self.minibatch_size == 0 || self.minibatch_size > 1 << 20 {
            return bad("minibatch_size", "must be in 1..=1048576");
        }
        for (field, v) in [
            ("clip_coef", self.clip_coef),
            ("vf_coef", self.vf_coef),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(field, "must be finite and > 0");
            }
        }
        if !(self.ent_coef >= 0.0 && self.ent_coef.is_finite()) {
            return bad("ent_coef", "must be finite and ≥ 0");
        }
        if self.target_kl.is_some_and(|k| !(k > 0.0 && k.is_finite())) {
            return bad("target_kl", "must be finite and > 0 when set");
        }
        if !(self.adam_eps > 0.0
            && self.obs_clip > 0.0
            && self.reward_scale > 0.0
            && self.reward_scale.is_finite())
        {
            return bad("adam_eps", "adam_eps, obs_clip and reward_scale must be > 0");
        }
        if !(-5.0..=2.0).contains(&self.init_log_std) {
            return bad("init_log_std", "must be in [-5, 2]");
        }
        Ok(())
    }

    pub fn spec(&self) -> MlpSpec {
        MlpSpec {
            obs_dim: OBS_DIM,
            act_dim: ACT_DIM,
            hidden: self.hidden.clone(),
            prior: self.prior,
        }
    }
}
