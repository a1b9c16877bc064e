//! One slot's round-trip (play, then settle) through the prosumer actors,
//! for each way of fanning a message out to actix actors that was tried,
//! against the same households played in a plain loop on one thread (the
//! floor) and against a replica of the hand-written thread pool the actix
//! actors replaced:
//!
//! - **node**: what the node runs ([`Prosumers`]): one shard actor per
//!   arbiter, `do_send` to each local actor, answers gathered in place and
//!   sent back through one oneshot per shard; supervised actors under
//!   `catch_unwind`;
//! - **recipient**: the same through `Recipient`s (dynamic dispatch, as
//!   heterogeneous actor types would need), answers gathered in place;
//! - **reply-msg**: shard `do_send`s, each actor `do_send`s its answer back
//!   to the shard as a message, the shard replies once when all are in;
//! - **shard-send**: the shard `Addr::send`s each local actor and joins the
//!   futures on its own arbiter, replies once;
//! - **tokio-send**: one `Addr::send` per actor from the tokio thread, all
//!   joined (the first actix version: every message a cross-thread wake-up);
//! - **threads**: the replaced pool: `n` std threads, one command per
//!   thread, each looping over its block of plain actor structs.
//!
//! Prints a Markdown table; run with
//! `cargo bench -p peergrid-agent-node --bench actors`. The budget: 10,000
//! prosumers in 4 nodes at ≥ 50 slots/s on 2 cores means one node's play +
//! settle for 2,500 actors must take well under 10 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use peergrid_agent_node::actors::{PlaySlot, Settle};
use peergrid_agent_node::policy::PolicySource;
use peergrid_agent_node::testing::{contexts, small_community};
use peergrid_agent_node::{ProsumerActor, Prosumers};
use peergrid_core::data::Dataset;
use peergrid_core::household::{Conditions, Household, HouseholdReport};
use peergrid_core::observation::SlotContext;
use peergrid_core::policy::RuleBased;
use peergrid_core::prosumer::ProsumerSpec;
use peergrid_core::reward::RewardWeights;

const SLOTS: usize = 40;
const WARM_UP: usize = 4;

/// Median play and settle time of one slot.
type Timing = (Duration, Duration);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn actor(s: &ProsumerSpec, ds: &Arc<Dataset>) -> ProsumerActor {
    ProsumerActor::new(
        s.clone(),
        Arc::clone(ds),
        PolicySource::RuleBased.instance(s.id),
        Arc::new(RewardWeights::default()),
    )
}

fn play_msg(slot: u64, ctx: &SlotContext) -> PlaySlot {
    PlaySlot { slot, ctx: *ctx, conditions: Conditions::default(), offline: false, action: None }
}

/// Times `round(slot, ctx)` → (play, settle) over the slots after warm-up.
fn time_slots(ctxs: &[SlotContext], mut round: impl FnMut(u64, &SlotContext) -> Timing) -> Timing {
    let (mut play, mut settle) = (Vec::new(), Vec::new());
    for (slot, ctx) in ctxs.iter().enumerate() {
        let (p, s) = round(slot as u64, ctx);
        if slot >= WARM_UP {
            play.push(p);
            settle.push(s);
        }
    }
    (median(play), median(settle))
}

fn bench_node(specs: &[ProsumerSpec], ds: &Arc<Dataset>, ctxs: &[SlotContext], n: usize) -> Timing {
    let weights = Arc::new(RewardWeights::default());
    let node =
        Prosumers::spawn(specs, ds, &PolicySource::RuleBased, &weights, n, Default::default())
            .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    time_slots(ctxs, |slot, ctx| {
        rt.block_on(async {
            let t = Instant::now();
            let reports = node.play(slot, ctx, &[]).await.unwrap();
            let played = t.elapsed();
            assert_eq!(reports.len(), specs.len());
            let t = Instant::now();
            assert_eq!(node.settle(slot, &[]).await.unwrap().settled, specs.len());
            (played, t.elapsed())
        })
    })
}

fn bench_threads(
    specs: &[ProsumerSpec],
    ds: &Arc<Dataset>,
    ctxs: &[SlotContext],
    n: usize,
) -> Timing {
    enum Cmd {
        Play(PlaySlot, std::sync::mpsc::Sender<Vec<HouseholdReport>>),
        Settle(Settle, std::sync::mpsc::Sender<usize>),
    }
    let per = specs.len().div_ceil(n);
    let threads: Vec<_> = specs
        .chunks(per)
        .map(|block| {
            let mut actors: Vec<ProsumerActor> = block.iter().map(|s| actor(s, ds)).collect();
            let (tx, rx) = std::sync::mpsc::channel::<Cmd>();
            let handle = std::thread::spawn(move || {
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Cmd::Play(m, reply) => {
                            let _ = reply
                                .send(actors.iter_mut().filter_map(|a| a.handle_play(m)).collect());
                        }
                        Cmd::Settle(m, reply) => {
                            let _ = reply
                                .send(actors.iter_mut().filter_map(|a| a.handle_settle(m)).count());
                        }
                    }
                }
            });
            (tx, handle)
        })
        .collect();
    let timing = time_slots(ctxs, |slot, ctx| {
        let t = Instant::now();
        let replies: Vec<_> = threads
            .iter()
            .map(|(tx, _)| {
                let (reply, rx) = std::sync::mpsc::channel();
                tx.send(Cmd::Play(play_msg(slot, ctx), reply)).unwrap();
                rx
            })
            .collect();
        let reports: usize = replies.into_iter().map(|rx| rx.recv().unwrap().len()).sum();
        let played = t.elapsed();
        assert_eq!(reports, specs.len());
        let t = Instant::now();
        let replies: Vec<_> = threads
            .iter()
            .map(|(tx, _)| {
                let (reply, rx) = std::sync::mpsc::channel();
                tx.send(Cmd::Settle(Settle { slot, settlement: None }, reply)).unwrap();
                rx
            })
            .collect();
        let settled: usize = replies.into_iter().map(|rx| rx.recv().unwrap()).sum();
        assert_eq!(settled, specs.len());
        (played, t.elapsed())
    });
    for (tx, handle) in threads {
        drop(tx);
        handle.join().unwrap();
    }
    timing
}

#[path = "actors/variants.rs"]
mod actix_variants;

fn main() {
    println!(
        "Per-slot round-trip (play, then settle), median of {} slots, rule-based policy, synthetic data",
        SLOTS - WARM_UP
    );
    println!(
        "| {:>6} | {:>10} | {:>7} | {:>8} | {:>9} | {:>8} | {:>8} | {:>9} | {:>16} |",
        "actors",
        "model",
        "threads",
        "play ms",
        "settle ms",
        "total ms",
        "loop ms",
        "× loop",
        "slots/s (1 node)"
    );
    println!(
        "|-------:|-----------:|--------:|---------:|----------:|---------:|---------:|----------:|-----------------:|"
    );
    let models: &[(&str, usize)] = &[
        ("node", 1),
        ("node", 2),
        ("recipient", 2),
        ("reply-msg", 2),
        ("shard-send", 2),
        ("tokio-send", 2),
        ("threads", 1),
        ("threads", 2),
    ];
    for n in [100u32, 1_000, 2_500, 10_000] {
        let (ds, specs) = small_community(n, 1);
        let ctxs = contexts(&ds, SLOTS);
        let mut households: Vec<Household> =
            specs.iter().map(|s| Household::new(s.clone(), ctxs[0].hour)).collect();
        let floor = median(
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
        for &(model, threads) in models {
            if model == "tokio-send" && n > 2_500 {
                // ~50 ms a slot, measured before; not worth the minute.
                continue;
            }
            let (p, s) = match model {
                "node" => bench_node(&specs, &ds, &ctxs, threads),
                "threads" => bench_threads(&specs, &ds, &ctxs, threads),
                other => actix_variants::bench(other, &specs, &ds, &ctxs, threads),
            };
            println!(
                "| {:>6} | {:>10} | {:>7} | {:>8.3} | {:>9.3} | {:>8.3} | {:>8.3} | {:>9.1} | {:>16.0} |",
                n,
                model,
                threads,
                ms(p),
                ms(s),
                ms(p + s),
                ms(floor),
                (p + s).as_secs_f64() / floor.as_secs_f64(),
                1.0 / (p + s).as_secs_f64()
            );
        }
    }
}
