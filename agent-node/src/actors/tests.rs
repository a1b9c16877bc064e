//! The actors against the same households played directly in a loop, and
//! a panic injected into one actor.

use std::sync::Arc;

use peergrid_core::data::Dataset;
use peergrid_core::household::{
    conditions_for, Adjustment, Conditions, Household, HouseholdReport,
};
use peergrid_core::market::Fill;
use peergrid_core::observation::SlotContext;
use peergrid_core::policy::{Policy, RuleBased};
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::reward::RewardWeights;
use peergrid_core::settlement::{settle_household, Settlement};
use peergrid_core::slot_engine::household_slot;
use peergrid_core::tariff::{GridConfig, SlotTariff};
use peergrid_core::units::ProsumerId;

use super::{settle_locally, Prosumers};
use crate::metrics::AgentMetrics;
use crate::policy::PolicySource;
use crate::testing::{contexts, small_community};

/// The setup every test here shares: prosumers `0..n` of a small
/// community (`seed`) on `threads` arbiters with `policy`, the contexts of
/// its first `slots` slots, and the metrics their restarts are counted in.
struct Pool {
    ds: Arc<Dataset>,
    specs: Vec<ProsumerSpec>,
    ctxs: Vec<SlotContext>,
    weights: Arc<RewardWeights>,
    prosumers: Prosumers,
    metrics: AgentMetrics,
    registry: peergrid_runtime::Metrics,
}

impl Pool {
    fn start(n: u32, seed: u64, slots: usize, policy: &PolicySource, threads: usize) -> Pool {
        let (ds, specs) = small_community(n, seed);
        let ctxs = contexts(&ds, slots);
        let weights = Arc::new(RewardWeights::default());
        let mut registry = peergrid_runtime::Metrics::new();
        let metrics = AgentMetrics::register(&mut registry);
        let restarts = metrics.actor_restarts.clone();
        let prosumers = Prosumers::spawn(&specs, &ds, policy, &weights, threads, restarts).unwrap();
        Pool { ds, specs, ctxs, weights, prosumers, metrics, registry }
    }

    /// The same households, played directly with the rule-based policy.
    fn direct(&self) -> Direct {
        Direct {
            households: self
                .specs
                .iter()
                .map(|s| Household::new(s.clone(), self.ctxs[0].hour))
                .collect(),
            policy: RuleBased,
        }
    }

    fn restarts(&self) -> u64 {
        self.metrics.actor_restarts.get()
    }
}

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
    let pool = Pool::start(37, 5, 48, &PolicySource::RuleBased, 3);
    let Pool { ds, specs, ctxs, weights, prosumers, .. } = &pool;
    assert_eq!(prosumers.threads(), 3);
    assert_eq!(prosumers.len(), 37);
    let mut direct = pool.direct();
    let mut expected_returns = vec![0.0f64; specs.len()];
    let mut local_slots = vec![0u64; specs.len()];
    // Slots 10..20: prosumers 5..=9 are offline, 20..=22 see a heat wave.
    let adjustments = [
        Adjustment { first_id: 5, last_id: 9, conditions: Conditions::default(), offline: true },
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
            let want = direct.play(ds, ctx, adj);
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
                expected_returns[i] += household_slot(r, &s, &ctx.tariff, weights).reward;
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
    let Pool { ctxs, prosumers, .. } = Pool::start(12, 8, 24, &PolicySource::RuleBased, 1);
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
    let Pool { ctxs, prosumers, .. } = Pool::start(3, 2, 3, &PolicySource::GridOnly, 5);
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

#[test]
fn a_panicking_actor_restarts_from_its_last_good_state_and_the_others_play_on() {
    let pool = Pool::start(12, 3, 6, &PolicySource::RuleBased, 2);
    let Pool { ds, specs, ctxs, prosumers, .. } = &pool;
    let mut direct = pool.direct();
    // In the second shard, so the panic is not on the first arbiter's thread.
    let (victim, lost_slot) = (specs[8].id, 3u64);
    block_on(async {
        let mut last_good = None;
        for (slot, ctx) in ctxs.iter().enumerate() {
            let slot = slot as u64;
            if slot == lost_slot {
                last_good = Some(prosumers.snapshot().await.unwrap()[8]);
                prosumers.inject_panic(victim).await.unwrap();
            }
            let reports = prosumers.play(slot, ctx, &[]).await.unwrap();
            let want: Vec<HouseholdReport> =
                direct.play(ds, ctx, &[]).into_iter().map(|w| w.0).collect();
            let others = |r: &[HouseholdReport]| -> Vec<HouseholdReport> {
                r.iter().filter(|r| r.prosumer_id != victim).copied().collect()
            };
            assert_eq!(others(&reports), others(&want), "slot {slot}: the others are unaffected");
            let victim_reported = reports.iter().any(|r| r.prosumer_id == victim);
            assert_eq!(victim_reported, slot != lost_slot, "slot {slot}");
            let summary = prosumers.settle(slot, &[]).await.unwrap();
            assert_eq!(summary.settled, 12 - (slot == lost_slot) as usize, "slot {slot}");
            if slot == lost_slot {
                // The settle went through the victim's mailbox after its restart.
                assert_eq!(pool.restarts(), 1);
                let now = prosumers.snapshot().await.unwrap()[8];
                assert_eq!(Some(now), last_good, "back at the state before the lost slot");
            }
        }
    });
    let returns = block_on(prosumers.returns());
    let returns = returns.unwrap();
    assert_eq!(returns.len(), 12);
    for r in &returns {
        let lost = (r.prosumer_id == victim) as u64;
        assert_eq!(r.slots_settled, 6 - lost, "prosumer {}", r.prosumer_id);
    }
    assert_eq!(pool.restarts(), 1, "one restart");
    let text = pool.registry.encode();
    assert!(text.contains("peergrid_agent_actor_restarts_total 1"), "{text}");
}

fn learning_source() -> PolicySource {
    use peergrid_core::policy::{ActorCritic, MlpModel, MlpSpec, ObsNormaliser};
    let spec = MlpSpec::default();
    let model = MlpModel::new(ActorCritic::random(&spec, 5), ObsNormaliser::identity(spec.obs_dim))
        .unwrap();
    PolicySource::Learning {
        learned: crate::policy::Learned { model: Arc::new(model), version: 1 },
        seed: 9,
    }
}

/// Learning: an actor that panics while it prepares the slot a rollout is
/// collected at (handing over nothing), or while it plays mid-rollout
/// (losing that slot's step), is restarted; the node's rollouts go on with
/// every other prosumer, the victim is left out of the one rollout its
/// part does not fit, and is back in full in the next.
#[test]
fn a_learning_actor_that_panics_costs_only_its_own_part_of_one_rollout() {
    use super::prosumer::PanicAt;
    let pool = Pool::start(8, 3, 16, &learning_source(), 2);
    let Pool { specs, ctxs, prosumers, .. } = &pool;
    let all: Vec<ProsumerId> = specs.iter().map(|s| s.id).collect();
    let rollout_slots = 4;
    // (slot, victim, where): a panic while the rollout of slot 4 is
    // collected, and one mid-way through the rollout collected at slot 12.
    let faults = [(4u64, specs[5].id, PanicAt::Prepare), (10, specs[2].id, PanicAt::Play)];
    let mut rollouts = Vec::new();
    block_on(async {
        let mut played_since = 0;
        for (slot, ctx) in ctxs.iter().enumerate() {
            let slot = slot as u64;
            for (at_slot, victim, at) in faults {
                if slot == at_slot {
                    prosumers.inject_panic_at(victim, at).await.unwrap();
                }
            }
            if slot > 0 && slot % rollout_slots == 0 {
                let parts = prosumers.prepare_and_collect(slot, ctx, &[]).await.unwrap();
                let r = crate::learning::assemble(
                    "n",
                    1,
                    slot - played_since,
                    played_since as usize,
                    parts,
                )
                .expect("a rollout with the other prosumers");
                r.validate().unwrap();
                rollouts.push((slot, r.prosumer_ids.clone(), r.steps));
                played_since = 0;
            }
            prosumers.play(slot, ctx, &[]).await.unwrap();
            prosumers.settle(slot, &[]).await.unwrap();
            played_since += 1;
        }
    });
    let without = |id: ProsumerId| all.iter().copied().filter(|&p| p != id).collect::<Vec<_>>();
    assert_eq!(
        rollouts,
        vec![
            (4, without(specs[5].id), 4),  // the victim handed over nothing
            (8, without(specs[5].id), 4),  // its part held two rollouts' steps
            (12, without(specs[2].id), 4), // the slot it lost is missing from its part
        ],
    );
    assert_eq!(pool.restarts(), 2, "two restarts");
}

/// Remote policy: an actor that panics while it prepares its observation
/// answers zeros for that slot and is restarted; it prepares the slot
/// afresh when it plays, and every other prosumer's observation is the one
/// a second `observe` of the same slot gives.
#[test]
fn a_remote_policy_actor_that_panics_while_observing_is_restarted_and_plays_the_slot() {
    use super::prosumer::PanicAt;
    let pool = Pool::start(6, 3, 3, &PolicySource::Remote, 2);
    let Pool { specs, ctxs, prosumers, .. } = &pool;
    let victim = 4;
    block_on(async {
        for (slot, ctx) in ctxs.iter().enumerate() {
            let slot = slot as u64;
            if slot == 1 {
                prosumers.inject_panic_at(specs[victim].id, PanicAt::Observe).await.unwrap();
            }
            let first = prosumers.observe(slot, ctx, &[]).await.unwrap();
            let again = prosumers.observe(slot, ctx, &[]).await.unwrap();
            for (i, (a, b)) in first.iter().zip(&again).enumerate() {
                if slot == 1 && i == victim {
                    assert_eq!(*a, [0.0; peergrid_core::observation::OBS_DIM], "lost: zeros");
                    assert_ne!(*b, *a, "prepared afresh after the restart");
                } else {
                    assert_eq!(a, b, "slot {slot}, prosumer {i}");
                }
            }
            let reports = prosumers.play(slot, ctx, &[]).await.unwrap();
            assert_eq!(reports.len(), specs.len(), "slot {slot}: every prosumer played");
            let summary = prosumers.settle(slot, &[]).await.unwrap();
            assert_eq!(summary.settled, specs.len());
        }
    });
    assert_eq!(pool.restarts(), 1);
}
