//! [`Prosumers`]: the node's handle on its prosumer actors. Every call is
//! one [`Fan`] per shard (arbiter) and one awaited answer per shard; the
//! answers are concatenated in shard order, which is prosumer id order.

use std::sync::Arc;

use actix::{Actor, Addr, Supervisor};
use peergrid_core::data::Dataset;
use peergrid_core::household::{conditions_for, Adjustment, HouseholdReport};
use peergrid_core::observation::{SlotContext, OBS_DIM};
use peergrid_core::policy::remote::ProsumerOutcome;
use peergrid_core::policy::Action;
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::reward::RewardWeights;
use peergrid_core::settlement::Settlement;
use peergrid_core::units::ProsumerId;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

use super::gather::Answers;
use super::prosumer::{ActorRollout, ActorState, PlaySlot, ProsumerActor, ProsumerReturn, Settle};
use super::shard::{Each, Fan, Shard};
use super::supervised::{Observe, Prepare, Request, Restore, ReturnOf, SetModel, Snapshot};
use super::system::ActorSystem;
use crate::error::AgentError;
use crate::policy::{Learned, PolicySource};

/// Totals of one [`Prosumers::settle`] round.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SettleSummary {
    pub settled: usize,
    pub local: usize,
    pub reward_sum: f64,
}

impl SettleSummary {
    pub fn mean_reward(&self) -> f64 {
        if self.settled == 0 {
            0.0
        } else {
            self.reward_sum / self.settled as f64
        }
    }
}

/// One action per hosted prosumer, by id.
struct GivenActions {
    ids: Arc<[ProsumerId]>,
    actions: Vec<Action>,
}

impl GivenActions {
    fn of(&self, id: ProsumerId) -> Option<Action> {
        self.ids.binary_search(&id).ok().and_then(|i| self.actions.get(i).copied())
    }
}

/// The node's prosumer actors. Dropping it stops their arbiters (after the
/// message in hand) and joins the threads.
pub struct Prosumers {
    ids: Arc<[ProsumerId]>,
    shards: Vec<Addr<Shard>>,
    // Dropped last: stops the arbiters once no address is left to use.
    _system: ActorSystem,
}

fn actors_gone<E>(_: E) -> AgentError {
    AgentError::Actors("an arbiter of the prosumer actors stopped".into())
}

impl Prosumers {
    /// Starts one supervised actor per spec (specs in ascending id order) on
    /// `n_threads` arbiters (at least 1, at most one per actor), each
    /// hosting a contiguous block of ids behind one shard. `restarts`
    /// counts the actors restarted after a panic.
    pub fn spawn(
        specs: &[ProsumerSpec],
        ds: &Arc<Dataset>,
        policy: &PolicySource,
        weights: &Arc<RewardWeights>,
        n_threads: usize,
        restarts: Counter,
    ) -> Result<Prosumers, AgentError> {
        debug_assert!(specs.windows(2).all(|w| w[0].id < w[1].id), "specs must be sorted by id");
        let n = n_threads.clamp(1, specs.len().max(1));
        let system = ActorSystem::start(n)?;
        let per_shard = specs.len().div_ceil(n).max(1);
        let shards = specs
            .chunks(per_shard)
            .zip(system.arbiters())
            .map(|(block, arbiter)| {
                let actors = block
                    .iter()
                    .map(|s| {
                        let mut actor = ProsumerActor::new(
                            s.clone(),
                            Arc::clone(ds),
                            policy.instance(s.id),
                            Arc::clone(weights),
                        );
                        actor.restarts = restarts.clone();
                        Supervisor::start_in_arbiter(arbiter, move |_| actor)
                    })
                    .collect();
                let ids = block.iter().map(|s| s.id).collect();
                Shard::start_in_arbiter(arbiter, move |_| Shard { ids, actors })
            })
            .collect();
        Ok(Prosumers { ids: specs.iter().map(|s| s.id).collect(), shards, _system: system })
    }

    /// The hosted prosumers' ids, ascending.
    pub fn ids(&self) -> &[ProsumerId] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Arbiters (threads) the actors run on.
    pub fn threads(&self) -> usize {
        self.shards.len()
    }

    /// Sends `each`'s request to every actor (one message per shard) and
    /// returns the answers in id order, aligned with [`ids`](Self::ids).
    async fn ask<R: Request>(
        &self,
        each: impl Fn(ProsumerId) -> R + Clone + Send + 'static,
    ) -> Result<Answers<R::Answer>, AgentError> {
        let mut pending = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (done, answers) = oneshot::channel();
            let each: Each<R> = Box::new(each.clone());
            shard.do_send(Fan { each, done });
            pending.push(answers);
        }
        let mut out = Vec::with_capacity(self.ids.len());
        for answers in pending {
            out.extend(answers.await.map_err(actors_gone)?);
        }
        Ok(out)
    }

    /// Every actor plays slot `slot` under its adjustments with its own
    /// policy; returns the reports of the online ones, sorted by prosumer
    /// id (an actor that panicked reports nothing).
    pub async fn play(
        &self,
        slot: u64,
        ctx: &SlotContext,
        adjustments: &[Adjustment],
    ) -> Result<Vec<HouseholdReport>, AgentError> {
        self.play_with(slot, ctx, adjustments, None).await
    }

    /// [`play`](Self::play), with `actions` (one per prosumer, in the order
    /// of [`ids`](Self::ids); a remote policy's answer) played instead of
    /// the actors' own policy when given. The actors act on the observation
    /// [`observe`](Self::observe) returned for this slot.
    pub async fn play_with(
        &self,
        slot: u64,
        ctx: &SlotContext,
        adjustments: &[Adjustment],
        actions: Option<Vec<Action>>,
    ) -> Result<Vec<HouseholdReport>, AgentError> {
        if let Some(a) = &actions {
            if a.len() != self.ids.len() {
                return Err(AgentError::Actors(format!(
                    "{} actions given for {} prosumers",
                    a.len(),
                    self.ids.len()
                )));
            }
        }
        let actions =
            actions.map(|actions| Arc::new(GivenActions { ids: Arc::clone(&self.ids), actions }));
        let (ctx, adjustments): (SlotContext, Arc<[Adjustment]>) = (*ctx, adjustments.into());
        let answers = self
            .ask(move |id| {
                let (conditions, offline) = conditions_for(id, &adjustments);
                let action = actions.as_ref().and_then(|given| given.of(id));
                PlaySlot { slot, ctx, conditions, offline, action }
            })
            .await?;
        let reports: Vec<HouseholdReport> = answers.into_iter().flatten().flatten().collect();
        debug_assert!(reports.windows(2).all(|w| w[0].prosumer_id < w[1].prosumer_id));
        Ok(reports)
    }

    /// Settles slot `slot` for every actor: those in `settlements` (sorted by
    /// id) with the market's settlement, everyone else locally.
    pub async fn settle(
        &self,
        slot: u64,
        settlements: &[(ProsumerId, Settlement)],
    ) -> Result<SettleSummary, AgentError> {
        Ok(self.settle_inner(slot, settlements, false).await?.0)
    }

    /// [`settle`](Self::settle), also returning each settled prosumer's
    /// outcome, by id (a remote policy's feedback).
    pub async fn settle_and_report(
        &self,
        slot: u64,
        settlements: &[(ProsumerId, Settlement)],
    ) -> Result<(SettleSummary, Vec<ProsumerOutcome>), AgentError> {
        self.settle_inner(slot, settlements, true).await
    }

    async fn settle_inner(
        &self,
        slot: u64,
        settlements: &[(ProsumerId, Settlement)],
        report: bool,
    ) -> Result<(SettleSummary, Vec<ProsumerOutcome>), AgentError> {
        debug_assert!(
            settlements.windows(2).all(|w| w[0].0 < w[1].0),
            "settlements must be sorted by id"
        );
        let settlements: Arc<[(ProsumerId, Settlement)]> = settlements.into();
        let answers = self
            .ask(move |id| {
                let i = settlements.binary_search_by_key(&id, |(id, _)| *id).ok();
                Settle { slot, settlement: i.map(|i| settlements[i].1) }
            })
            .await?;
        let mut summary = SettleSummary::default();
        let mut outcomes = Vec::with_capacity(if report { self.ids.len() } else { 0 });
        for (&prosumer_id, outcome) in self.ids.iter().zip(answers) {
            let Some(Some(outcome)) = outcome else { continue };
            summary.settled += 1;
            summary.local += outcome.local as usize;
            summary.reward_sum += outcome.reward;
            if report {
                outcomes.push(ProsumerOutcome {
                    prosumer_id,
                    reward: outcome.reward as f32,
                    cost: outcome.cost as f32,
                    grid_import_kwh: outcome.grid_import_kwh as f32,
                    done: outcome.done,
                    settled_by_market: !outcome.local,
                });
            }
        }
        Ok((summary, outcomes))
    }

    /// Remote policy: every actor prepares slot `slot` (EV events,
    /// observation) and returns its features, in the order of
    /// [`ids`](Self::ids). An actor that panicked gives zeros (it prepares
    /// the slot afresh when it plays).
    pub async fn observe(
        &self,
        slot: u64,
        ctx: &SlotContext,
        adjustments: &[Adjustment],
    ) -> Result<Vec<[f32; OBS_DIM]>, AgentError> {
        let (ctx, adjustments): (SlotContext, Arc<[Adjustment]>) = (*ctx, adjustments.into());
        let answers = self
            .ask(move |id| Observe { slot, ctx, conditions: conditions_for(id, &adjustments).0 })
            .await?;
        Ok(answers.into_iter().map(|f| f.unwrap_or([0.0; OBS_DIM])).collect())
    }

    /// Learning: every actor prepares slot `slot` and hands over its
    /// experience with V(prepared observation), in id order (an actor that
    /// panicked hands over nothing).
    pub async fn prepare_and_collect(
        &self,
        slot: u64,
        ctx: &SlotContext,
        adjustments: &[Adjustment],
    ) -> Result<Vec<ActorRollout>, AgentError> {
        let (ctx, adjustments): (SlotContext, Arc<[Adjustment]>) = (*ctx, adjustments.into());
        let answers = self
            .ask(move |id| Prepare { slot, ctx, conditions: conditions_for(id, &adjustments).0 })
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// Learning: every actor acts with `learned` from now on.
    pub async fn set_model(&self, learned: &Learned) -> Result<(), AgentError> {
        let learned = learned.clone();
        self.ask(move |_| SetModel(learned.clone())).await.map(drop)
    }

    /// Every actor's state, by id (take it between slots).
    pub async fn snapshot(&self) -> Result<Vec<ActorState>, AgentError> {
        Ok(self.ask(|_| Snapshot).await?.into_iter().flatten().collect())
    }

    /// Continues every actor that `states` (sorted by id) has a state for;
    /// returns how many. A state that does not fit its prosumer is an error
    /// naming it (the other actors are restored).
    pub async fn restore(&self, states: &[ActorState]) -> Result<usize, AgentError> {
        let states: Arc<[ActorState]> = states.into();
        let answers = self
            .ask(move |id| {
                let i = states.binary_search_by_key(&id, |s| s.ret.prosumer_id).ok();
                Restore(i.map(|i| states[i]))
            })
            .await?;
        answers.into_iter().flatten().try_fold(0, |n, restored| {
            Ok(n + restored
                .map_err(|e| AgentError::config("state_dir", format!("households.json: {e}")))?)
        })
    }

    /// Every prosumer's episode return, by id.
    pub async fn returns(&self) -> Result<Vec<ProsumerReturn>, AgentError> {
        Ok(self.ask(|_| ReturnOf).await?.into_iter().flatten().collect())
    }

    /// Test hook: the actor of `id` panics in its next `PlaySlot`.
    #[cfg(test)]
    pub(crate) async fn inject_panic(&self, id: ProsumerId) -> Result<(), AgentError> {
        self.inject_panic_at(id, super::prosumer::PanicAt::Play).await
    }

    /// Test hook: the actor of `id` panics in its next message of kind `at`.
    #[cfg(test)]
    pub(crate) async fn inject_panic_at(
        &self,
        id: ProsumerId,
        at: super::prosumer::PanicAt,
    ) -> Result<(), AgentError> {
        use super::supervised::PanicNext;
        self.ask(move |pid| PanicNext((pid == id).then_some(at))).await.map(drop)
    }
}
