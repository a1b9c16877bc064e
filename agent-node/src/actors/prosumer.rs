//! One prosumer actor's state and what each message does to it.
//!
//! A [`ProsumerActor`] owns its [`Household`] (battery and EV state), its
//! policy instance, the dataset `Arc` and its episode return, and handles
//! two messages per slot: [`PlaySlot`] (→ its [`HouseholdReport`], or `None`
//! when an `offline` adjustment covers it) and then [`Settle`] (the market's
//! settlement, or `None` = settle locally with the grid, no P2P), which
//! yields the slot's reward. The household is created lazily on the first
//! `PlaySlot` (`Household::new(spec, ctx.hour)`, as the reference simulator
//! does for its first slot) and lives as long as the actor: market
//! reconnects never reset it.
//!
//! It also remembers its last good state (household and return after the
//! last settlement, collection or restore): when a message panics, its
//! supervisor (`supervised.rs`) restarts it from there ([`ProsumerActor::recover`]).
//!
//! This file is plain synchronous Rust: the actix side (mailbox, supervisor,
//! fan-out) is in the sibling files. Never here: gRPC, wire types, threads.

use std::sync::Arc;

use peergrid_core::data::Dataset;
use peergrid_core::household::{Conditions, Household, HouseholdReport, HouseholdState, Prepared};
use peergrid_core::market::Fill;
use peergrid_core::observation::{Observation, SlotContext, OBS_DIM};
use peergrid_core::policy::{Action, Policy};
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::reward::RewardWeights;
use peergrid_core::settlement::{settle_household, Settlement};
use peergrid_core::slot_engine::household_slot;
use peergrid_core::tariff::{GridConfig, SlotTariff};
use peergrid_core::units::ProsumerId;

use prometheus_client::metrics::counter::Counter;

use crate::policy::{ActorPolicy, Learned};

/// One learning step of one prosumer: what the trainer receives.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Step {
    pub features: [f32; peergrid_core::observation::OBS_DIM],
    pub action: [f32; peergrid_core::policy::ACT_DIM],
    pub log_prob: f32,
    pub value: f32,
    pub reward: f32,
    /// Energy cost of the slot (information for charts).
    pub cost: f32,
    pub grid_import_kwh: f32,
    /// The slot was the last of a day.
    pub done: bool,
}

/// An actor's experience since its last collection, and V(next observation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActorRollout {
    pub prosumer_id: ProsumerId,
    pub steps: Vec<Step>,
    pub bootstrap_value: f32,
}

/// Play slot `slot`: EV events, observe, act, safety filter, battery.
#[derive(Clone, Copy, Debug)]
pub struct PlaySlot {
    pub slot: u64,
    pub ctx: SlotContext,
    pub conditions: Conditions,
    /// Play the physics but send no report (the household settles locally).
    pub offline: bool,
    /// The action to play instead of the actor's policy (a remote policy's
    /// answer, before the safety filter); `None` = the actor's own policy.
    pub action: Option<Action>,
}

/// Settle the slot played last: with the market's settlement, or locally
/// with the grid when `settlement` is `None` (missing, offline, or the market
/// went away before clearing).
#[derive(Clone, Copy, Debug)]
pub struct Settle {
    pub slot: u64,
    pub settlement: Option<Settlement>,
}

/// What settling one prosumer's slot gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SettleOutcome {
    pub reward: f64,
    /// Settled with the grid on this node rather than by the market.
    pub local: bool,
    /// The household's energy cost: grid and P2P net of revenue, degradation, overload.
    pub cost: f64,
    pub grid_import_kwh: f64,
    /// The slot was the last of a day.
    pub done: bool,
}

/// One prosumer's accumulated reward.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProsumerReturn {
    pub prosumer_id: ProsumerId,
    /// Sum of the rewards of every settled slot.
    pub episode_return: f64,
    pub slots_settled: u64,
    /// How many of those slots were settled locally with the grid.
    pub local_settlements: u64,
}

/// The slot an actor played and has not settled yet.
#[derive(Clone, Copy, Debug)]
struct Played {
    slot: u64,
    report: HouseholdReport,
    tariff: SlotTariff,
    /// The slot was the last of a day.
    done: bool,
}

/// A policy that plays one given action (a remote policy's answer).
struct Given(Action);

impl Policy for Given {
    fn name(&self) -> &str {
        "remote"
    }

    fn act(&mut self, _: ProsumerId, _: &Observation) -> Action {
        self.0
    }
}

/// One prosumer.
pub struct ProsumerActor {
    spec: ProsumerSpec,
    ds: Arc<Dataset>,
    policy: ActorPolicy,
    weights: Arc<RewardWeights>,
    household: Option<Household>,
    played: Option<Played>,
    ret: ProsumerReturn,
    /// Learning: the steps not yet collected; the last awaits its reward
    /// while `awaiting_reward`.
    experience: Vec<Step>,
    awaiting_reward: bool,
    /// A slot prepared (EV events, observation) but not acted on yet.
    prepared: Option<(u64, Prepared)>,
    /// What a restart returns to: the state after the last settlement,
    /// collection or restore, and how many experience steps it had.
    last_good: ActorState,
    last_good_steps: usize,
    /// Counts restarts (the node's `agent_actor_restarts` metric).
    pub(crate) restarts: Counter,
    /// Test hook: panic in the next message of this kind, after the
    /// household has changed (so a restart must undo it). Not compiled
    /// outside tests.
    #[cfg(test)]
    pub(crate) panic_next: Option<PanicAt>,
}

/// Where the test hook makes an actor panic.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PanicAt {
    Play,
    /// Learning: `prepare_and_collect`, after preparing the slot.
    Prepare,
    /// Remote policy: `observe`, after preparing the slot.
    Observe,
}

#[cfg(test)]
impl ProsumerActor {
    /// Test hook: panics if the hook is set for `at` (and clears it).
    fn maybe_panic(&mut self, at: PanicAt) {
        if self.panic_next == Some(at) {
            self.panic_next = None;
            panic!("injected panic in prosumer {} ({at:?})", self.spec.id);
        }
    }
}

/// What an actor carries across a restart of its process: its household's
/// state (none before its first slot) and its return.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActorState {
    pub household: Option<HouseholdState>,
    pub ret: ProsumerReturn,
}

impl ProsumerActor {
    /// The state to persist (take it between slots: after a settlement).
    pub fn snapshot(&self) -> ActorState {
        ActorState { household: self.household.as_ref().map(Household::state), ret: self.ret }
    }

    /// Continues from `state` (this prosumer's, checked against its spec).
    pub fn restore(&mut self, state: &ActorState) -> Result<(), String> {
        if state.ret.prosumer_id != self.spec.id {
            return Err(format!(
                "prosumer_id: the state is of prosumer {}, the actor is {}",
                state.ret.prosumer_id, self.spec.id
            ));
        }
        let household =
            state.household.map(|h| Household::restore(self.spec.clone(), h)).transpose()?;
        self.household = household;
        self.ret = state.ret;
        self.mark_good();
        Ok(())
    }

    /// The current state becomes the one a restart returns to.
    fn mark_good(&mut self) {
        self.last_good = self.snapshot();
        self.last_good_steps = self.experience.len();
    }

    /// After a panic: back to the last good state. The slot played or
    /// prepared since is forgotten (it reports and settles nothing), and so
    /// is any experience recorded since; the policy carries on.
    pub(crate) fn recover(&mut self) {
        let last = self.last_good;
        // The state was taken from this very actor, so it fits its spec.
        self.household = last.household.and_then(|h| Household::restore(self.spec.clone(), h).ok());
        self.ret = last.ret;
        self.played = None;
        self.prepared = None;
        self.experience.truncate(self.last_good_steps);
        self.awaiting_reward = false;
    }

    pub fn new(
        spec: ProsumerSpec,
        ds: Arc<Dataset>,
        policy: ActorPolicy,
        weights: Arc<RewardWeights>,
    ) -> ProsumerActor {
        let ret = ProsumerReturn {
            prosumer_id: spec.id,
            episode_return: 0.0,
            slots_settled: 0,
            local_settlements: 0,
        };
        ProsumerActor {
            spec,
            ds,
            policy,
            weights,
            household: None,
            played: None,
            ret,
            experience: Vec::new(),
            awaiting_reward: false,
            prepared: None,
            last_good: ActorState { household: None, ret },
            last_good_steps: 0,
            restarts: Counter::default(),
            #[cfg(test)]
            panic_next: None,
        }
    }

    pub fn id(&self) -> ProsumerId {
        self.spec.id
    }

    /// The accumulated return so far.
    pub fn episode_return(&self) -> ProsumerReturn {
        self.ret
    }

    /// Plays a slot; the report, unless the prosumer is offline.
    pub fn handle_play(&mut self, msg: PlaySlot) -> Option<HouseholdReport> {
        if self.played.is_some() {
            // The node always settles before the next slot; if it could not
            // (a bug), the household still pays its grid bill.
            self.settle(None);
        }
        let spec = &self.spec;
        let household =
            self.household.get_or_insert_with(|| Household::new(spec.clone(), msg.ctx.hour));
        let prepared = match self.prepared.take() {
            Some((slot, p)) if slot == msg.slot => p,
            _ => household.prepare(&self.ds, &msg.ctx, msg.conditions),
        };
        let report = match msg.action {
            Some(action) => household.act(&prepared, &msg.ctx, &mut Given(action)),
            None => household.act(&prepared, &msg.ctx, &mut self.policy),
        };
        #[cfg(test)]
        self.maybe_panic(PanicAt::Play);
        let slots_per_day = (24.0 / msg.ctx.hours).round().max(1.0) as usize;
        let done = (msg.ctx.data_slot + 1) % slots_per_day == 0;
        if let (ActorPolicy::Learning(p), None) = (&self.policy, msg.action) {
            let r = p.last();
            self.experience.push(Step {
                features: r.features,
                action: r.action,
                log_prob: r.log_prob,
                value: r.value,
                done,
                ..Step::default()
            });
            self.awaiting_reward = true;
        }
        self.played = Some(Played { slot: msg.slot, report, tariff: msg.ctx.tariff, done });
        (!msg.offline).then_some(report)
    }

    /// Learning: begins slot `slot` (EV events, observation) without acting,
    /// values the observation with the current version, and hands over the
    /// experience collected so far. The next `handle_play` for `slot` acts on
    /// this very observation (with whatever version is current then).
    pub fn prepare_and_collect(
        &mut self,
        slot: u64,
        ctx: &SlotContext,
        conditions: Conditions,
    ) -> ActorRollout {
        let spec = &self.spec;
        let household =
            self.household.get_or_insert_with(|| Household::new(spec.clone(), ctx.hour));
        let prepared = household.prepare(&self.ds, ctx, conditions);
        let bootstrap_value = self.policy.value_of(&prepared.obs);
        self.prepared = Some((slot, prepared));
        #[cfg(test)]
        self.maybe_panic(PanicAt::Prepare);
        if self.awaiting_reward {
            // Collected before its settlement (cannot happen in the node's
            // order of calls): drop the incomplete step.
            self.experience.pop();
            self.awaiting_reward = false;
        }
        let steps = std::mem::take(&mut self.experience);
        self.mark_good();
        ActorRollout { prosumer_id: self.spec.id, steps, bootstrap_value }
    }

    /// Remote policy: begins slot `slot` (EV events, observation) without
    /// acting and returns the observation's features; the next
    /// `handle_play` for `slot` acts on this very observation. Asking again
    /// for the same slot returns the same observation.
    pub fn observe(
        &mut self,
        slot: u64,
        ctx: &SlotContext,
        conditions: Conditions,
    ) -> [f32; OBS_DIM] {
        let prepared = match self.prepared {
            Some((s, p)) if s == slot => p,
            _ => {
                let spec = &self.spec;
                let household =
                    self.household.get_or_insert_with(|| Household::new(spec.clone(), ctx.hour));
                household.prepare(&self.ds, ctx, conditions)
            }
        };
        self.prepared = Some((slot, prepared));
        #[cfg(test)]
        self.maybe_panic(PanicAt::Observe);
        let mut features = [0.0; OBS_DIM];
        prepared.obs.features(&mut features);
        features
    }

    /// Learning: act with a new policy version from the next slot on.
    pub fn set_model(&mut self, learned: &Learned) {
        self.policy.set_model(learned);
    }

    /// Settles the slot played last if it is `msg.slot`; `None` if there is
    /// nothing to settle for that slot.
    pub fn handle_settle(&mut self, msg: Settle) -> Option<SettleOutcome> {
        match self.played {
            Some(p) if p.slot == msg.slot => self.settle(msg.settlement),
            _ => None,
        }
    }

    fn settle(&mut self, settlement: Option<Settlement>) -> Option<SettleOutcome> {
        let played = self.played.take()?;
        let local = settlement.is_none();
        let settlement =
            settlement.unwrap_or_else(|| settle_locally(&played.report, &played.tariff));
        let slot = household_slot(&played.report, &settlement, &played.tariff, &self.weights);
        let reward = slot.reward;
        let cost = settlement.energy_cost() + slot.degradation_cost + settlement.shared_charges();
        if self.awaiting_reward {
            if let Some(step) = self.experience.last_mut() {
                step.reward = reward as f32;
                step.cost = cost as f32;
                step.grid_import_kwh = settlement.grid_import_kwh as f32;
            }
            self.awaiting_reward = false;
        }
        self.ret.episode_return += reward;
        self.ret.slots_settled += 1;
        self.ret.local_settlements += local as u64;
        self.mark_good();
        Some(SettleOutcome {
            reward,
            local,
            cost,
            grid_import_kwh: settlement.grid_import_kwh,
            done: played.done,
        })
    }
}

/// A household without a market settlement buys its deficit at retail and
/// sells its surplus at feed-in. With no P2P fill the grid config's loss
/// fraction is irrelevant, so the default stands in for the market's.
pub fn settle_locally(report: &HouseholdReport, tariff: &SlotTariff) -> Settlement {
    settle_household(report.net_kwh, None, Fill::default(), tariff, &GridConfig::default())
}
