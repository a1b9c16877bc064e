//! Validation during training (`--validate-every N`): every N updates the
//! newest policy, acting deterministically, plays the validation weeks in
//! the reference simulator; the policy with the lowest community cost
//! there is the one the run keeps and reports on the test weeks. The
//! baselines play the same days once, as the curve's reference lines.
//!
//! The learner keeps the blob of every due version (`snapshot_every`), so
//! which versions are validated never depends on timing and a seed gives
//! the same report. Evaluations run on a blocking thread while training
//! goes on, one at a time, in version order; a point lands in the curve, in TensorBoard
//! (`tensorboard/validation`, tag `eval/validation_cost`) and, when it is
//! the best so far, as `checkpoints/best.safetensors`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use peergrid_core::evaluation::evaluate;
use peergrid_core::policy::weights::from_safetensors;
use peergrid_core::policy::{GridOnly, MlpPolicy, Policy, RuleBased};
use peergrid_eval::compare::{GRID_ONLY, RULE_BASED};
use peergrid_eval::report::validation::{ValidationBaseline, ValidationCurve, ValidationPoint};
use peergrid_eval::EvalScenario;
use peergrid_runtime::EventWriter;
use peergrid_trainer::Published;
use tokio::task::JoinHandle;

/// TensorBoard tag of the validation cost.
pub(crate) const VALIDATION_TAG: &str = "eval/validation_cost";

/// One policy blob waiting to be, or being, validated.
type Pending = JoinHandle<Result<(ValidationPoint, Arc<Vec<u8>>)>>;

/// The validation of one training run.
pub(crate) struct Validator {
    scenario: Arc<EvalScenario>,
    slots: Arc<Vec<usize>>,
    curve: ValidationCurve,
    /// Kept versions waiting for their evaluation, oldest first.
    queue: VecDeque<Arc<Vec<u8>>>,
    pending: Option<Pending>,
    best_blob: Option<Arc<Vec<u8>>>,
    events: EventWriter,
    best_path: PathBuf,
}

impl Validator {
    /// Evaluates the baselines on `scenario`'s days (the validation weeks)
    /// and opens the TensorBoard file under `out`.
    pub(crate) fn start(scenario: EvalScenario, every: u64, out: &Path) -> Result<Validator> {
        let slots = scenario.slots();
        anyhow::ensure!(!slots.is_empty(), "the split leaves no validation day to validate on");
        let (mut grid, mut rule) = (GridOnly, RuleBased);
        let mut baselines: Vec<&mut dyn Policy> = vec![&mut grid, &mut rule];
        let rows =
            evaluate(&scenario.ds, &scenario.prosumers, &scenario.sim, &slots, &mut baselines)?;
        let names = [GRID_ONLY, RULE_BASED];
        let baselines = rows
            .iter()
            .zip(names)
            .map(|(r, name)| ValidationBaseline {
                policy: name.to_owned(),
                community_cost: r.kpis.community_cost,
            })
            .collect();
        let curve = ValidationCurve::new(scenario.days.len(), every, baselines)?;
        let events = EventWriter::create(out.join("tensorboard").join("validation"))?;
        Ok(Validator {
            scenario: Arc::new(scenario),
            slots: Arc::new(slots),
            curve,
            queue: VecDeque::new(),
            pending: None,
            best_blob: None,
            events,
            best_path: out.join("checkpoints").join("best.safetensors"),
        })
    }

    /// Called as training progresses with the versions the learner kept
    /// since the last call (`snapshot_every` = `--validate-every`, so
    /// every due version arrives, whatever the timing): queues them,
    /// collects a finished evaluation and starts the next.
    pub(crate) async fn poll(&mut self, snapshots: Vec<Published>) -> Result<()> {
        self.queue.extend(snapshots.into_iter().map(|p| p.weights));
        if self.pending.as_ref().is_some_and(JoinHandle::is_finished) {
            self.collect().await?;
        }
        if self.pending.is_none() {
            if let Some(blob) = self.queue.pop_front() {
                self.spawn(&blob);
            }
        }
        Ok(())
    }

    /// Validates what is still queued, and the final policy `last` unless
    /// it already was; returns the curve and the kept policy's blob.
    pub(crate) async fn finish(
        mut self,
        snapshots: Vec<Published>,
        last: &Published,
    ) -> Result<(ValidationCurve, Option<Arc<Vec<u8>>>)> {
        self.queue.extend(snapshots.into_iter().map(|p| p.weights));
        loop {
            self.collect().await?;
            let Some(blob) = self.queue.pop_front() else { break };
            self.spawn(&blob);
        }
        let update = last.version.saturating_sub(1);
        if !self.curve.points.iter().any(|p| p.update == update) {
            self.spawn(&last.weights);
            self.collect().await?;
        }
        self.events.flush()?;
        Ok((self.curve, self.best_blob))
    }

    fn spawn(&mut self, blob: &Arc<Vec<u8>>) {
        let (scenario, slots, blob) =
            (Arc::clone(&self.scenario), Arc::clone(&self.slots), Arc::clone(blob));
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let weights = from_safetensors(&blob)?;
            let mut policy = MlpPolicy::new(weights.net, weights.normaliser)?;
            let rows = evaluate(
                &scenario.ds,
                &scenario.prosumers,
                &scenario.sim,
                &slots,
                &mut [&mut policy],
            )?;
            let point = ValidationPoint {
                // Version 1 is the initial policy: version v follows v − 1 updates.
                update: weights.version.saturating_sub(1),
                policy_version: weights.version,
                community_cost: rows[0].kpis.community_cost,
            };
            Ok((point, blob))
        }));
    }

    async fn collect(&mut self) -> Result<()> {
        let Some(pending) = self.pending.take() else { return Ok(()) };
        let (point, blob) = pending.await.context("a validation task panicked")??;
        self.events.add_scalar(VALIDATION_TAG, point.community_cost, point.update as i64)?;
        if self.curve.record(point)? {
            if let Some(dir) = self.best_path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&self.best_path, blob.as_slice())
                .with_context(|| format!("writing {}", self.best_path.display()))?;
            self.best_blob = Some(blob);
        }
        Ok(())
    }
}
