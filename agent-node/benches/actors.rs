//! Actor round-trip per slot, two ways, against the same households played
//! in a plain loop on one thread:
//!
//! - **actix**: one actix actor per prosumer on `n` arbiters; per slot one
//!   `Addr::send(PlaySlot)` and one `Addr::send(Settle)` per actor, all
//!   replies joined (the model the design first asked for);
//! - **pool**: the node's [`ActorPool`]: the same `ProsumerActor`s, `n`
//!   threads, one command per thread per message.
//!
//! Prints a table; run with `cargo bench -p peergrid-agent-node --bench actors`.
//! The budget: 10,000 prosumers in 4 nodes at ≥ 50 slots/s on 2 cores means
//! one node's play + settle for 2,500 actors must take well under 10 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, Context, Handler, Message};
use futures_util::future::join_all;
use peergrid_agent_node::actors::{PlaySlot, Settle, SettleOutcome};
use peergrid_agent_node::policy::PolicySource;
use peergrid_agent_node::testing::{contexts, small_community};
use peergrid_agent_node::{ActorPool, ProsumerActor};
use peergrid_core::data::Dataset;
use peergrid_core::household::{conditions_for, Conditions, Household, HouseholdReport};
use peergrid_core::observation::SlotContext;
use peergrid_core::policy::RuleBased;
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::reward::RewardWeights;

const SLOTS: usize = 40;
const WARM_UP: usize = 4;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The same actor struct behind an actix mailbox.
struct ActixProsumer(ProsumerActor);

impl Actor for ActixProsumer {
    type Context = Context<Self>;
}

struct Play(PlaySlot);
impl Message for Play {
    type Result = Option<HouseholdReport>;
}
struct Set(Settle);
impl Message for Set {
    type Result = Option<SettleOutcome>;
}

impl Handler<Play> for ActixProsumer {
    type Result = Option<HouseholdReport>;
    fn handle(&mut self, m: Play, _: &mut Context<Self>) -> Self::Result {
        self.0.handle_play(m.0)
    }
}

impl Handler<Set> for ActixProsumer {
    type Result = Option<SettleOutcome>;
    fn handle(&mut self, m: Set, _: &mut Context<Self>) -> Self::Result {
        self.0.handle_settle(m.0)
    }
}

/// Runs the actix model on its own system thread; returns (play, settle) medians.
fn bench_actix(
    specs: &[ProsumerSpec],
    ds: &Arc<Dataset>,
    ctxs: &[SlotContext],
    arbiters: usize,
) -> (Duration, Duration) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Vec<Addr<ActixProsumer>>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let specs = specs.to_vec();
    let ds2 = Arc::clone(ds);
    let system = std::thread::spawn(move || {
        let runner = actix::System::new();
        let arbs = runner.block_on(async move {
            let arbs: Vec<Arbiter> = (0..arbiters).map(|_| Arbiter::new()).collect();
            let weights = Arc::new(RewardWeights::default());
            let addrs = specs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let actor = ProsumerActor::new(
                        s.clone(),
                        Arc::clone(&ds2),
                        PolicySource::RuleBased.instance(s.id),
                        Arc::clone(&weights),
                    );
                    ActixProsumer::start_in_arbiter(&arbs[i % arbs.len()].handle(), move |_| {
                        ActixProsumer(actor)
                    })
                })
                .collect();
            addr_tx.send(addrs).unwrap();
            let _ = stop_rx.await;
            arbs
        });
        for a in arbs {
            a.stop();
            let _ = a.join();
        }
    });
    let addrs = addr_rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut play, mut settle) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for (slot, ctx) in ctxs.iter().enumerate() {
            let slot = slot as u64;
            let t = Instant::now();
            let sends = addrs.iter().map(|a| {
                let (conditions, offline) = conditions_for(0, &[]);
                a.send(Play(PlaySlot { slot, ctx: *ctx, conditions, offline, action: None }))
            });
            let mut reports: Vec<HouseholdReport> =
                join_all(sends).await.into_iter().filter_map(|r| r.unwrap()).collect();
            reports.sort_by_key(|r| r.prosumer_id);
            let played = t.elapsed();
            assert_eq!(reports.len(), addrs.len());
            let t = Instant::now();
            let n = join_all(addrs.iter().map(|a| a.send(Set(Settle { slot, settlement: None }))))
                .await
                .len();
            assert_eq!(n, addrs.len());
            if slot as usize >= WARM_UP {
                play.push(played);
                settle.push(t.elapsed());
            }
        }
    });
    stop_tx.send(()).unwrap();
    system.join().unwrap();
    (median(play), median(settle))
}

fn bench_pool(
    specs: &[ProsumerSpec],
    ds: &Arc<Dataset>,
    ctxs: &[SlotContext],
    threads: usize,
) -> (Duration, Duration) {
    let pool = ActorPool::spawn(
        specs,
        ds,
        &PolicySource::RuleBased,
        &Arc::new(RewardWeights::default()),
        threads,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut play, mut settle) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for (slot, ctx) in ctxs.iter().enumerate() {
            let t = Instant::now();
            let reports = pool.play(slot as u64, ctx, &[]).await.unwrap();
            let played = t.elapsed();
            assert_eq!(reports.len(), specs.len());
            let t = Instant::now();
            pool.settle(slot as u64, &[]).await.unwrap();
            if slot >= WARM_UP {
                play.push(played);
                settle.push(t.elapsed());
            }
        }
    });
    (median(play), median(settle))
}

fn main() {
    println!(
        "Per-slot round-trip, median of {} slots (rule-based policy, synthetic data)",
        SLOTS - WARM_UP
    );
    println!(
        "| {:>6} | {:>5} | {:>7} | {:>10} | {:>10} | {:>10} | {:>11} | {:>15} |",
        "actors",
        "model",
        "threads",
        "play ms",
        "settle ms",
        "total ms",
        "direct ms",
        "slots/s (1 node)"
    );
    println!("|-------:|------:|--------:|-----------:|-----------:|-----------:|------------:|----------------:|");
    for n in [100u32, 1_000, 2_500, 10_000] {
        let (ds, specs) = small_community(n, 1);
        let ctxs = contexts(&ds, SLOTS);
        let mut households: Vec<Household> =
            specs.iter().map(|s| Household::new(s.clone(), ctxs[0].hour)).collect();
        let direct = median(
            ctxs.iter()
                .map(|ctx| {
                    let t = Instant::now();
                    for h in households.iter_mut() {
                        std::hint::black_box(h.play(
                            &ds,
                            ctx,
                            Conditions::default(),
                            &mut RuleBased,
                        ));
                    }
                    t.elapsed()
                })
                .collect(),
        );
        for (model, threads) in [("actix", 1), ("actix", 2), ("pool", 1), ("pool", 2)] {
            let (p, s) = if model == "actix" {
                bench_actix(&specs, &ds, &ctxs, threads)
            } else {
                bench_pool(&specs, &ds, &ctxs, threads)
            };
            println!(
                "| {:>6} | {:>5} | {:>7} | {:>10.3} | {:>10.3} | {:>10.3} | {:>11.3} | {:>15.0} |",
                n,
                model,
                threads,
                ms(p),
                ms(s),
                ms(p + s),
                ms(direct),
                1.0 / (p + s).as_secs_f64()
            );
        }
    }
}
