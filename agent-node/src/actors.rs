//! The prosumer actors: one actix actor per hosted prosumer, and the actix
//! system thread they live on.
//!
//! A [`ProsumerActor`] owns its [`Household`] (battery and EV state), its
//! policy instance, the dataset `Arc` and its episode return. Per slot it gets
//! one [`PlaySlot`] (→ its [`HouseholdReport`], or `None` when an `offline`
//! adjustment covers it) and then one [`Settle`] (the market's settlement,
//! or `None` = settle locally with the grid, no P2P), which yields the
//! slot's reward. The household is created lazily on the first `PlaySlot`
//! (`Household::new(spec, ctx.hour)`, as the reference simulator does for
//! its first slot) and lives as long as the actor: market reconnects never
//! reset it.
//!
//! actix brings its own runtime, so [`ActorSystem`] runs an `actix::System`
//! on a dedicated thread that starts `n` arbiters (threads) and spreads the
//! actors over them round-robin. The node's tokio tasks talk to actors only
//! through `Addr::send`, whose futures are runtime-agnostic; nothing here
//! calls actix from a tokio context. [`Prosumers`] is that handle: it fans
//! one message out to every actor, joins the replies and returns them in
//! prosumer-id order.
//!
//! Never here: gRPC, wire types, deciding what the market meant (that is the
//! session).

use std::sync::Arc;
use std::thread::JoinHandle;

use actix::{Actor, Addr, Arbiter, ArbiterHandle, Context, Handler, Message, MessageResult};
use futures_util::future::join_all;
use peergrid_core::data::Dataset;
use peergrid_core::household::{conditions_for, Adjustment, Conditions, Household, HouseholdReport};
use peergrid_core::market::Fill;
use peergrid_core::observation::SlotContext;
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::reward::RewardWeights;
use peergrid_core::settlement::{settle_household, Settlement};
use peergrid_core::slot_engine::household_slot;
use peergrid_core::tariff::{GridConfig, SlotTariff};
use peergrid_core::units::ProsumerId;

use crate::error::AgentError;
use crate::policy::{ActorPolicy, PolicySource};

/// Play slot `slot`: EV events, observe, act, safety filter, battery.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Option<HouseholdReport>")]
pub struct PlaySlot {
    pub slot: u64,
    pub ctx: SlotContext,
    pub conditions: Conditions,
    /// Play the physics but send no report (the household settles locally).
    pub offline: bool,
}

/// Settle the slot played last: with the market's settlement, or locally
/// with the grid when `settlement` is `None` (missing, offline, or the market
/// went away before clearing).
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Option<SettleOutcome>")]
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
}

/// Ask an actor for its episode return so far.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "ProsumerReturn")]
pub struct GetReturn;

/// One prosumer's accumulated reward.
#[derive(Clone, Copy, Debug, PartialEq)]
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
}

impl ProsumerActor {
    pub fn new(spec: ProsumerSpec, ds: Arc<Dataset>, policy: ActorPolicy, weights: Arc<RewardWeights>) -> ProsumerActor {
        let ret = ProsumerReturn { prosumer_id: spec.id, episode_return: 0.0, slots_settled: 0, local_settlements: 0 };
        ProsumerActor { spec, ds, policy, weights, household: None, played: None, ret }
    }

    fn play(&mut self, msg: PlaySlot) -> Option<HouseholdReport> {
        if self.played.is_some() {
            // The node always settles before the next slot; if it could not
            // (a bug), the household still pays its grid bill.
            self.settle(None);
        }
        let spec = &self.spec;
        let household = self.household.get_or_insert_with(|| Household::new(spec.clone(), msg.ctx.hour));
        let report = household.play(&self.ds, &msg.ctx, msg.conditions, &mut self.policy);
        self.played = Some(Played { slot: msg.slot, report, tariff: msg.ctx.tariff });
        (!msg.offline).then_some(report)
    }

    fn settle(&mut self, settlement: Option<Settlement>) -> Option<SettleOutcome> {
        let played = self.played.take()?;
        let local = settlement.is_none();
        let settlement = settlement.unwrap_or_else(|| settle_locally(&played.report, &played.tariff));
        let reward = household_slot(&played.report, &settlement, &played.tariff, &self.weights).reward;
        self.ret.episode_return += reward;
        self.ret.slots_settled += 1;
        self.ret.local_settlements += local as u64;
        Some(SettleOutcome { reward, local })
    }
}

/// A household without a market settlement buys its deficit at retail and
/// sells its surplus at feed-in. With no P2P fill the grid config's loss
/// fraction is irrelevant, so the default stands in for the market's.
pub fn settle_locally(report: &HouseholdReport, tariff: &SlotTariff) -> Settlement {
    settle_household(report.net_kwh, None, Fill::default(), tariff, &GridConfig::default())
}

impl Actor for ProsumerActor {
    type Context = Context<Self>;
}

impl Handler<PlaySlot> for ProsumerActor {
    type Result = Option<HouseholdReport>;
    fn handle(&mut self, msg: PlaySlot, _: &mut Context<Self>) -> Self::Result {
        self.play(msg)
    }
}

impl Handler<Settle> for ProsumerActor {
    type Result = Option<SettleOutcome>;
    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) -> Self::Result {
        match self.played {
            Some(p) if p.slot == msg.slot => self.settle(msg.settlement),
            _ => None,
        }
    }
}

impl Handler<GetReturn> for ProsumerActor {
    type Result = MessageResult<GetReturn>;
    fn handle(&mut self, _: GetReturn, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.ret)
    }
}

/// The actix system thread and its arbiters. Dropping it stops every actor
/// and joins the threads.
pub struct ActorSystem {
    arbiters: Vec<ArbiterHandle>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ActorSystem {
    /// Starts the system thread with `n_arbiters` (≥ 1) actor threads. Blocks
    /// the caller only while the threads start.
    pub fn start(n_arbiters: usize) -> Result<ActorSystem, AgentError> {
        let n = n_arbiters.max(1);
        let (handles_tx, handles_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("prosumer-actors".into())
            .spawn(move || {
                let runner = actix::System::new();
                let arbiters = runner.block_on(async move {
                    let arbiters: Vec<Arbiter> = (0..n).map(|_| Arbiter::new()).collect();
                    let _ = handles_tx.send(arbiters.iter().map(Arbiter::handle).collect::<Vec<_>>());
                    // Err = the ActorSystem was dropped without stopping: stop too.
                    let _ = stop_rx.await;
                    arbiters
                });
                for a in &arbiters {
                    a.stop();
                }
                for a in arbiters {
                    let _ = a.join();
                }
            })
            .map_err(|e| AgentError::Actors(format!("cannot start the actor thread: {e}")))?;
        let arbiters = handles_rx.recv().map_err(|_| AgentError::Actors("the actor system failed to start".into()))?;
        Ok(ActorSystem { arbiters, stop: Some(stop_tx), thread: Some(thread) })
    }

    pub fn arbiters(&self) -> usize {
        self.arbiters.len()
    }

    /// Starts one actor per spec (in the given order, which should be
    /// ascending id), spread round-robin over the arbiters.
    pub fn spawn_prosumers(
        &self,
        specs: &[ProsumerSpec],
        ds: &Arc<Dataset>,
        policy: &PolicySource,
        weights: &Arc<RewardWeights>,
    ) -> Prosumers {
        let mut ids = Vec::with_capacity(specs.len());
        let mut addrs = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let actor = ProsumerActor::new(spec.clone(), Arc::clone(ds), policy.instance(), Arc::clone(weights));
            let arbiter = &self.arbiters[i % self.arbiters.len()];
            ids.push(spec.id);
            addrs.push(ProsumerActor::start_in_arbiter(arbiter, move |_| actor));
        }
        Prosumers { ids, addrs }
    }
}

impl Drop for ActorSystem {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

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

/// The addresses of a node's actors, in ascending prosumer id.
#[derive(Clone)]
pub struct Prosumers {
    ids: Vec<ProsumerId>,
    addrs: Vec<Addr<ProsumerActor>>,
}

fn mailbox_gone(e: actix::MailboxError) -> AgentError {
    AgentError::Actors(e.to_string())
}

impl Prosumers {
    pub fn ids(&self) -> &[ProsumerId] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every actor plays slot `slot` under its adjustments; returns the
    /// reports of the online ones, sorted by prosumer id.
    pub async fn play(
        &self,
        slot: u64,
        ctx: &SlotContext,
        adjustments: &[Adjustment],
    ) -> Result<Vec<HouseholdReport>, AgentError> {
        let requests = self.ids.iter().zip(&self.addrs).map(|(&id, addr)| {
            let (conditions, offline) = conditions_for(id, adjustments);
            addr.send(PlaySlot { slot, ctx: *ctx, conditions, offline })
        });
        let replies = join_all(requests).await;
        let mut reports = Vec::with_capacity(replies.len());
        for reply in replies {
            reports.extend(reply.map_err(mailbox_gone)?);
        }
        // Already in id order (actors are kept sorted); the sort documents the
        // contract the market checks and costs nothing on sorted input.
        reports.sort_by_key(|r| r.prosumer_id);
        Ok(reports)
    }

    /// Settles slot `slot` for every actor: those in `settlements` (sorted by
    /// id) with the market's settlement, everyone else locally.
    pub async fn settle(&self, slot: u64, settlements: &[(ProsumerId, Settlement)]) -> Result<SettleSummary, AgentError> {
        debug_assert!(settlements.windows(2).all(|w| w[0].0 < w[1].0), "settlements must be sorted by id");
        let requests = self.ids.iter().zip(&self.addrs).map(|(id, addr)| {
            let settlement = settlements.binary_search_by_key(id, |(i, _)| *i).ok().map(|i| settlements[i].1);
            addr.send(Settle { slot, settlement })
        });
        let mut summary = SettleSummary::default();
        for reply in join_all(requests).await {
            if let Some(outcome) = reply.map_err(mailbox_gone)? {
                summary.settled += 1;
                summary.local += outcome.local as usize;
                summary.reward_sum += outcome.reward;
            }
        }
        Ok(summary)
    }

    /// Every prosumer's episode return, by id.
    pub async fn returns(&self) -> Result<Vec<ProsumerReturn>, AgentError> {
        let replies = join_all(self.addrs.iter().map(|a| a.send(GetReturn))).await;
        replies.into_iter().map(|r| r.map_err(mailbox_gone)).collect()
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
                let fill = Fill { quantity: o.quantity, value: peergrid_core::units::Money::of(o.quantity, o.limit_price) };
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
        fn play(&mut self, ds: &Dataset, ctx: &SlotContext, adjustments: &[Adjustment]) -> Vec<(HouseholdReport, bool)> {
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
        let system = ActorSystem::start(3).unwrap();
        let prosumers = system.spawn_prosumers(&specs, &ds, &PolicySource::RuleBased, &weights);
        assert_eq!(prosumers.len(), 37);
        let mut direct =
            Direct { households: specs.iter().map(|s| Household::new(s.clone(), ctxs[0].hour)).collect(), policy: RuleBased };
        let mut expected_returns = vec![0.0f64; specs.len()];
        let mut local_slots = vec![0u64; specs.len()];
        // Slots 10..20: prosumers 5..=9 are offline, 20..=22 see a heat wave.
        let adjustments = [
            Adjustment { first_id: 5, last_id: 9, conditions: Conditions::default(), offline: true },
            Adjustment { first_id: 20, last_id: 22, conditions: Conditions { load_scale: 1.6, pv_scale: 0.5 }, offline: false },
        ];
        block_on(async {
            for (slot, ctx) in ctxs.iter().enumerate() {
                let slot = slot as u64;
                let adj: &[Adjustment] = if (10..20).contains(&slot) { &adjustments } else { &[] };
                let reports = prosumers.play(slot, ctx, adj).await.unwrap();
                let want = direct.play(&ds, ctx, adj);
                let online: Vec<HouseholdReport> = want.iter().filter(|(_, off)| !off).map(|(r, _)| *r).collect();
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
                            settle_household(r.net_kwh, None, Fill::default(), &ctx.tariff, &GridConfig::default())
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
        let system = ActorSystem::start(1).unwrap();
        let prosumers = system.spawn_prosumers(&specs, &ds, &PolicySource::RuleBased, &weights);
        let mut traded = 0;
        block_on(async {
            for (slot, ctx) in ctxs.iter().enumerate() {
                let reports = prosumers.play(slot as u64, ctx, &[]).await.unwrap();
                for r in &reports {
                    let local = settle_locally(r, &ctx.tariff);
                    assert_eq!(local.p2p_bought_kwh + local.p2p_sold_kwh, 0.0, "no P2P without the market");
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
        let system = ActorSystem::start(2).unwrap();
        let prosumers = system.spawn_prosumers(&specs, &ds, &PolicySource::GridOnly, &Arc::new(RewardWeights::default()));
        block_on(async {
            prosumers.play(0, &ctxs[0], &[]).await.unwrap();
            assert_eq!(prosumers.settle(7, &[]).await.unwrap().settled, 0);
            prosumers.play(1, &ctxs[1], &[]).await.unwrap();
            let r = prosumers.returns().await.unwrap();
            assert!(r.iter().all(|r| r.slots_settled == 1 && r.local_settlements == 1), "{r:?}");
            assert_eq!(prosumers.settle(1, &[]).await.unwrap().settled, 3);
        });
        drop(system);
    }
}
