//! The prosumer actors: one actor per hosted prosumer, and the pool of
//! threads that runs them.
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
//! **Why not actix.** The design asked for actix actors; they were built and
//! measured (`benches/actors.rs` keeps both models): one `Addr::send` per
//! actor per message costs ~2 µs of cross-thread wake-ups, so a slot of
//! 2,500 actors took ~5.5 ms (play + settle) against 0.13 ms of actual
//! household work, and 10,000 actors ~60 ms. Four such nodes on two cores
//! cannot reach 50 slots/s. So the actors here are plain structs with the
//! same one-actor-per-prosumer ownership and the same messages, scheduled by
//! an [`ActorPool`]: `n` dedicated threads, each owning a contiguous id
//! range of actors. Per slot the node sends one command per thread (not
//! per actor); the thread delivers the message to each of its actors in id
//! order and replies once. Concatenating the replies in thread order gives
//! the reports in id order. CPU-heavy policies (the MLP) therefore never run
//! on the tokio workers that own the gRPC stream.
//!
//! With a remote policy the node asks every actor for its observation first
//! ([`ActorPool::observe`]: the slot is prepared, EV events and observation,
//! exactly as a learning actor prepares it), gets every action from the
//! service in one call, and then plays the slot with those actions
//! ([`ActorPool::play_with`]); an actor without a given action plays its own
//! policy (the rule-based fallback). Settling can report each prosumer's
//! outcome ([`ActorPool::settle_and_report`]) for the service's feedback.
//!
//! Never here: gRPC, wire types, deciding what the market meant (that is the
//! session).

use std::sync::Arc;
use std::thread::JoinHandle;

use peergrid_core::data::Dataset;
use peergrid_core::household::{
    conditions_for, Adjustment, Conditions, Household, HouseholdReport, HouseholdState, Prepared,
};
use peergrid_core::market::Fill;
use peergrid_core::observation::{Observation, SlotContext, OBS_DIM};
use peergrid_core::policy::remote::ProsumerOutcome;
use peergrid_core::policy::{Action, Policy};
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::reward::RewardWeights;
use peergrid_core::settlement::{settle_household, Settlement};
use peergrid_core::slot_engine::household_slot;
use peergrid_core::tariff::{GridConfig, SlotTariff};
use peergrid_core::units::ProsumerId;

use tokio::sync::oneshot;

use crate::error::AgentError;
use crate::policy::{ActorPolicy, Learned, PolicySource};

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
        Ok(())
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
        if self.awaiting_reward {
            // Collected before its settlement (cannot happen in the node's
            // order of calls): drop the incomplete step.
            self.experience.pop();
            self.awaiting_reward = false;
        }
        ActorRollout {
            prosumer_id: self.spec.id,
            steps: std::mem::take(&mut self.experience),
            bootstrap_value,
        }
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
        let cost = settlement.energy_cost() + slot.degradation_cost + settlement.overload_penalty;
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

/// What a pool thread is asked to do with all of its actors.
enum Command {
    Play {
        msg: PlaySlotAll,
        reply: oneshot::Sender<Vec<HouseholdReport>>,
    },
    Settle {
        slot: u64,
        settlements: Arc<[(ProsumerId, Settlement)]>,
        /// Also reply with each settled prosumer's outcome.
        report: bool,
        reply: oneshot::Sender<(SettleSummary, Vec<ProsumerOutcome>)>,
    },
    Returns {
        reply: oneshot::Sender<Vec<ProsumerReturn>>,
    },
    Prepare {
        msg: PlaySlotAll,
        reply: oneshot::Sender<Vec<ActorRollout>>,
    },
    Observe {
        msg: PlaySlotAll,
        reply: oneshot::Sender<Vec<[f32; OBS_DIM]>>,
    },
    SetModel {
        learned: Learned,
        reply: oneshot::Sender<()>,
    },
    Snapshot {
        reply: oneshot::Sender<Vec<ActorState>>,
    },
    /// States by prosumer id (sorted); actors without one are left as they are.
    Restore {
        states: Arc<[ActorState]>,
        reply: oneshot::Sender<Result<usize, String>>,
    },
}

/// One slot for every actor of a thread; each derives its own conditions.
#[derive(Clone)]
struct PlaySlotAll {
    slot: u64,
    ctx: SlotContext,
    adjustments: Arc<[Adjustment]>,
    /// Given actions (a remote policy's), in the order of `GivenActions::ids`.
    actions: Option<Arc<GivenActions>>,
}

/// One action per prosumer of the pool, by id.
struct GivenActions {
    ids: Arc<[ProsumerId]>,
    actions: Vec<Action>,
}

impl GivenActions {
    fn of(&self, id: ProsumerId) -> Option<Action> {
        self.ids.binary_search(&id).ok().and_then(|i| self.actions.get(i).copied())
    }
}

/// A pool thread's loop: deliver each command to its actors in id order.
fn serve_actors(mut actors: Vec<ProsumerActor>, commands: std::sync::mpsc::Receiver<Command>) {
    while let Ok(command) = commands.recv() {
        match command {
            Command::Play { msg, reply } => {
                let reports = actors
                    .iter_mut()
                    .filter_map(|a| {
                        let (conditions, offline) = conditions_for(a.spec.id, &msg.adjustments);
                        let action = msg.actions.as_ref().and_then(|given| given.of(a.spec.id));
                        a.handle_play(PlaySlot {
                            slot: msg.slot,
                            ctx: msg.ctx,
                            conditions,
                            offline,
                            action,
                        })
                    })
                    .collect();
                let _ = reply.send(reports);
            }
            Command::Settle { slot, settlements, report, reply } => {
                let mut summary = SettleSummary::default();
                let mut outcomes = Vec::with_capacity(if report { actors.len() } else { 0 });
                for a in actors.iter_mut() {
                    let settlement = settlements
                        .binary_search_by_key(&a.spec.id, |(id, _)| *id)
                        .ok()
                        .map(|i| settlements[i].1);
                    if let Some(outcome) = a.handle_settle(Settle { slot, settlement }) {
                        summary.settled += 1;
                        summary.local += outcome.local as usize;
                        summary.reward_sum += outcome.reward;
                        if report {
                            outcomes.push(ProsumerOutcome {
                                prosumer_id: a.spec.id,
                                reward: outcome.reward as f32,
                                cost: outcome.cost as f32,
                                grid_import_kwh: outcome.grid_import_kwh as f32,
                                done: outcome.done,
                                settled_by_market: !outcome.local,
                            });
                        }
                    }
                }
                let _ = reply.send((summary, outcomes));
            }
            Command::Observe { msg, reply } => {
                let features = actors
                    .iter_mut()
                    .map(|a| {
                        let (conditions, _) = conditions_for(a.spec.id, &msg.adjustments);
                        a.observe(msg.slot, &msg.ctx, conditions)
                    })
                    .collect();
                let _ = reply.send(features);
            }
            Command::Returns { reply } => {
                let _ = reply.send(actors.iter().map(|a| a.ret).collect());
            }
            Command::Prepare { msg, reply } => {
                let rollouts = actors
                    .iter_mut()
                    .map(|a| {
                        let (conditions, _) = conditions_for(a.spec.id, &msg.adjustments);
                        a.prepare_and_collect(msg.slot, &msg.ctx, conditions)
                    })
                    .collect();
                let _ = reply.send(rollouts);
            }
            Command::SetModel { learned, reply } => {
                actors.iter_mut().for_each(|a| a.set_model(&learned));
                let _ = reply.send(());
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(actors.iter().map(ProsumerActor::snapshot).collect());
            }
            Command::Restore { states, reply } => {
                let restore = |a: &mut ProsumerActor| match states
                    .binary_search_by_key(&a.spec.id, |s| s.ret.prosumer_id)
                {
                    Ok(i) => a.restore(&states[i]).map(|()| 1),
                    Err(_) => Ok(0),
                };
                let _ = reply.send(actors.iter_mut().map(restore).sum());
            }
        }
    }
}

/// Totals of one [`ActorPool::settle`] round.
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

    fn add(&mut self, other: SettleSummary) {
        self.settled += other.settled;
        self.local += other.local;
        self.reward_sum += other.reward_sum;
    }
}

/// The node's actors and the threads that run them. Dropping it stops the
/// threads (after the command in hand) and joins them.
pub struct ActorPool {
    ids: Arc<[ProsumerId]>,
    threads: Vec<(std::sync::mpsc::Sender<Command>, JoinHandle<()>)>,
}

fn actors_gone<E>(_: E) -> AgentError {
    AgentError::Actors("an actor thread stopped (a panic in a household or policy)".into())
}

impl ActorPool {
    /// Starts one actor per spec (specs in ascending id order) on
    /// `n_threads` threads (at least 1, at most one per actor), each owning a
    /// contiguous block of ids.
    pub fn spawn(
        specs: &[ProsumerSpec],
        ds: &Arc<Dataset>,
        policy: &PolicySource,
        weights: &Arc<RewardWeights>,
        n_threads: usize,
    ) -> Result<ActorPool, AgentError> {
        debug_assert!(specs.windows(2).all(|w| w[0].id < w[1].id), "specs must be sorted by id");
        let n = n_threads.clamp(1, specs.len().max(1));
        let per_thread = specs.len().div_ceil(n).max(1);
        let mut threads = Vec::with_capacity(n);
        for (t, block) in specs.chunks(per_thread).enumerate() {
            let actors: Vec<ProsumerActor> = block
                .iter()
                .map(|s| {
                    ProsumerActor::new(
                        s.clone(),
                        Arc::clone(ds),
                        policy.instance(s.id),
                        Arc::clone(weights),
                    )
                })
                .collect();
            let (tx, rx) = std::sync::mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("prosumers-{t}"))
                .spawn(move || serve_actors(actors, rx))
                .map_err(|e| AgentError::Actors(format!("cannot start an actor thread: {e}")))?;
            threads.push((tx, handle));
        }
        Ok(ActorPool { ids: specs.iter().map(|s| s.id).collect(), threads })
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

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Sends one command per thread and awaits every reply, in thread order.
    async fn ask<T>(
        &self,
        command: impl Fn(oneshot::Sender<T>) -> Command,
    ) -> Result<Vec<T>, AgentError> {
        let mut replies = Vec::with_capacity(self.threads.len());
        for (tx, _) in &self.threads {
            let (reply, rx) = oneshot::channel();
            tx.send(command(reply)).map_err(actors_gone)?;
            replies.push(rx);
        }
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(rx.await.map_err(actors_gone)?);
        }
        Ok(out)
    }

    /// Every actor plays slot `slot` under its adjustments with its own
    /// policy; returns the reports of the online ones, sorted by prosumer id.
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
        let msg = PlaySlotAll { slot, ctx: *ctx, adjustments: adjustments.into(), actions };
        let blocks = self.ask(|reply| Command::Play { msg: msg.clone(), reply }).await?;
        let mut reports = Vec::with_capacity(self.ids.len());
        for block in blocks {
            reports.extend(block);
        }
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
        let parts = self
            .ask(|reply| Command::Settle {
                slot,
                settlements: Arc::clone(&settlements),
                report,
                reply,
            })
            .await?;
        let mut summary = SettleSummary::default();
        let mut outcomes = Vec::new();
        for (part, block) in parts {
            summary.add(part);
            outcomes.extend(block);
        }
        Ok((summary, outcomes))
    }

    /// Remote policy: every actor prepares slot `slot` (EV events,
    /// observation) and returns its features, in the order of [`ids`](Self::ids).
    pub async fn observe(
        &self,
        slot: u64,
        ctx: &SlotContext,
        adjustments: &[Adjustment],
    ) -> Result<Vec<[f32; OBS_DIM]>, AgentError> {
        let msg = PlaySlotAll { slot, ctx: *ctx, adjustments: adjustments.into(), actions: None };
        Ok(self
            .ask(|reply| Command::Observe { msg: msg.clone(), reply })
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Learning: every actor prepares slot `slot` and hands over its
    /// experience with V(prepared observation), in id order.
    pub async fn prepare_and_collect(
        &self,
        slot: u64,
        ctx: &SlotContext,
        adjustments: &[Adjustment],
    ) -> Result<Vec<ActorRollout>, AgentError> {
        let msg = PlaySlotAll { slot, ctx: *ctx, adjustments: adjustments.into(), actions: None };
        Ok(self
            .ask(|reply| Command::Prepare { msg: msg.clone(), reply })
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Learning: every actor acts with `learned` from now on.
    pub async fn set_model(&self, learned: &Learned) -> Result<(), AgentError> {
        self.ask(|reply| Command::SetModel { learned: learned.clone(), reply }).await.map(drop)
    }

    /// Every actor's state, by id (take it between slots).
    pub async fn snapshot(&self) -> Result<Vec<ActorState>, AgentError> {
        Ok(self.ask(|reply| Command::Snapshot { reply }).await?.into_iter().flatten().collect())
    }

    /// Continues every actor that `states` (sorted by id) has a state for;
    /// returns how many. A state that does not fit its prosumer is an error
    /// naming it (the actors before it in that thread are restored).
    pub async fn restore(&self, states: &[ActorState]) -> Result<usize, AgentError> {
        let states: Arc<[ActorState]> = states.into();
        let parts =
            self.ask(|reply| Command::Restore { states: Arc::clone(&states), reply }).await?;
        parts.into_iter().try_fold(0, |n, part| {
            Ok(n + part
                .map_err(|e| AgentError::config("state_dir", format!("households.json: {e}")))?)
        })
    }

    /// Every prosumer's episode return, by id.
    pub async fn returns(&self) -> Result<Vec<ProsumerReturn>, AgentError> {
        Ok(self.ask(|reply| Command::Returns { reply }).await?.into_iter().flatten().collect())
    }
}

impl Drop for ActorPool {
    fn drop(&mut self) {
        for (tx, handle) in std::mem::take(&mut self.threads) {
            drop(tx);
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{contexts, small_community};
    use peergrid_core::policy::{Policy, RuleBased};
    use peergrid_core::tariff::GridConfig;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    /// What a market would settle for `r` if its whole order filled at its
    /// limit (enough to tell market and local settlements apart).
    fn market_settlement(r: &HouseholdReport, tariff: &SlotTariff) -> Settlement {
        match r.order {
            Some(o) => {
                let fill = Fill {
                    quantity: o.quantity,
                    value: peergrid_core::units::Money::of(o.quantity, o.limit_price),
                };
                settle_household(r.net_kwh, Some(o.side), fill, tariff, &GridConfig::default())
            }
            None => settle_locally(r, tariff),
        }
    }

    /// The reference: the same households played directly in a loop.
    struct Direct {
        households: Vec<Household>,
        policy: RuleBased,
    }

    impl Direct {
        fn play(
            &mut self,
            ds: &Dataset,
            ctx: &SlotContext,
            adjustments: &[Adjustment],
        ) -> Vec<(HouseholdReport, bool)> {
            let policy: &mut dyn Policy = &mut self.policy;
            self.households
                .iter_mut()
                .map(|h| {
                    let (c, offline) = conditions_for(h.spec.id, adjustments);
                    (h.play(ds, ctx, c, policy), offline)
                })
                .collect()
        }
    }

    #[test]
    fn actors_report_exactly_what_direct_play_gives_and_returns_accumulate() {
        let (ds, specs) = small_community(37, 5);
        let ctxs = contexts(&ds, 48);
        let weights = Arc::new(RewardWeights::default());
        let prosumers =
            ActorPool::spawn(&specs, &ds, &PolicySource::RuleBased, &weights, 3).unwrap();
        assert_eq!(prosumers.threads(), 3);
        assert_eq!(prosumers.len(), 37);
        let mut direct = Direct {
            households: specs.iter().map(|s| Household::new(s.clone(), ctxs[0].hour)).collect(),
            policy: RuleBased,
        };
        let mut expected_returns = vec![0.0f64; specs.len()];
        let mut local_slots = vec![0u64; specs.len()];
        // Slots 10..20: prosumers 5..=9 are offline, 20..=22 see a heat wave.
        let adjustments = [
            Adjustment {
                first_id: 5,
                last_id: 9,
                conditions: Conditions::default(),
                offline: true,
            },
            Adjustment {
                first_id: 20,
                last_id: 22,
                conditions: Conditions { load_scale: 1.6, pv_scale: 0.5 },
                offline: false,
            },
        ];
        block_on(async {
            for (slot, ctx) in ctxs.iter().enumerate() {
                let slot = slot as u64;
                let adj: &[Adjustment] = if (10..20).contains(&slot) { &adjustments } else { &[] };
                let reports = prosumers.play(slot, ctx, adj).await.unwrap();
                let want = direct.play(&ds, ctx, adj);
                let online: Vec<HouseholdReport> =
                    want.iter().filter(|(_, off)| !off).map(|(r, _)| *r).collect();
                assert_eq!(reports, online, "slot {slot}");
                if (10..20).contains(&slot) {
                    assert_eq!(reports.len(), 32, "offline prosumers send no report");
                    assert!(reports.iter().all(|r| !(5..=9).contains(&r.prosumer_id)));
                }
                // The market settles the even ids; the odd ones are "missing"
                // and every offline one settles locally too.
                let settlements: Vec<(ProsumerId, Settlement)> = reports
                    .iter()
                    .filter(|r| r.prosumer_id % 2 == 0)
                    .map(|r| (r.prosumer_id, market_settlement(r, &ctx.tariff)))
                    .collect();
                let summary = prosumers.settle(slot, &settlements).await.unwrap();
                assert_eq!(summary.settled, specs.len());
                assert_eq!(summary.local, specs.len() - settlements.len());
                for (i, (r, _)) in want.iter().enumerate() {
                    let s = match settlements.binary_search_by_key(&r.prosumer_id, |x| x.0) {
                        Ok(j) => settlements[j].1,
                        Err(_) => {
                            local_slots[i] += 1;
                            settle_household(
                                r.net_kwh,
                                None,
                                Fill::default(),
                                &ctx.tariff,
                                &GridConfig::default(),
                            )
                        }
                    };
                    expected_returns[i] += household_slot(r, &s, &ctx.tariff, &weights).reward;
                }
                // A second settle of the same slot is a no-op.
                assert_eq!(prosumers.settle(slot, &settlements).await.unwrap().settled, 0);
            }
            let returns = prosumers.returns().await.unwrap();
            for (i, r) in returns.iter().enumerate() {
                assert_eq!(r.prosumer_id, specs[i].id);
                assert_eq!(r.slots_settled, 48);
                assert_eq!(r.local_settlements, local_slots[i]);
                assert_eq!(r.episode_return, expected_returns[i], "prosumer {}", r.prosumer_id);
            }
        });
    }

    #[test]
    fn missing_settlements_are_grid_only() {
        let (ds, specs) = small_community(12, 8);
        let ctxs = contexts(&ds, 24);
        let weights = Arc::new(RewardWeights::default());
        let prosumers =
            ActorPool::spawn(&specs, &ds, &PolicySource::RuleBased, &weights, 1).unwrap();
        let mut traded = 0;
        block_on(async {
            for (slot, ctx) in ctxs.iter().enumerate() {
                let reports = prosumers.play(slot as u64, ctx, &[]).await.unwrap();
                for r in &reports {
                    let local = settle_locally(r, &ctx.tariff);
                    assert_eq!(
                        local.p2p_bought_kwh + local.p2p_sold_kwh,
                        0.0,
                        "no P2P without the market"
                    );
                    assert_eq!(local.grid_import_kwh - local.grid_export_kwh, r.net_kwh);
                    traded += r.order.is_some() as usize;
                }
                let summary = prosumers.settle(slot as u64, &[]).await.unwrap();
                assert_eq!((summary.settled, summary.local), (12, 12));
            }
        });
        assert!(traded > 0, "the rule-based policy trades some slots");
    }

    #[test]
    fn settle_for_another_slot_is_ignored_and_a_new_slot_settles_the_old_one() {
        let (ds, specs) = small_community(3, 2);
        let ctxs = contexts(&ds, 3);
        let weights = Arc::new(RewardWeights::default());
        let prosumers =
            ActorPool::spawn(&specs, &ds, &PolicySource::GridOnly, &weights, 5).unwrap();
        assert_eq!(prosumers.threads(), 3, "never more threads than actors");
        block_on(async {
            prosumers.play(0, &ctxs[0], &[]).await.unwrap();
            assert_eq!(prosumers.settle(7, &[]).await.unwrap().settled, 0);
            prosumers.play(1, &ctxs[1], &[]).await.unwrap();
            let r = prosumers.returns().await.unwrap();
            assert!(r.iter().all(|r| r.slots_settled == 1 && r.local_settlements == 1), "{r:?}");
            assert_eq!(prosumers.settle(1, &[]).await.unwrap().settled, 3);
        });
        drop(prosumers);
    }
}
