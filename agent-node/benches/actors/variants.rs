//! The actix fan-outs measured against the node's: each on its own actix
//! system with `n` arbiters, driven from a tokio thread as the session
//! drives the node. Same actor struct, same two messages per slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::{Actor, Addr, Arbiter, ArbiterHandle, Context, Handler, Message, Recipient, System};
use futures_util::future::join_all;
use peergrid_agent_node::actors::{PlaySlot, Settle, SettleOutcome};
use peergrid_agent_node::ProsumerActor;
use peergrid_core::data::Dataset;
use peergrid_core::household::HouseholdReport;
use peergrid_core::observation::SlotContext;
use peergrid_core::prosumer::ProsumerSpec;
use tokio::sync::oneshot;

use super::{actor, play_msg, time_slots, Timing};

/// The actor struct behind a plain (unsupervised) actix mailbox.
struct Bench(ProsumerActor);

impl Actor for Bench {
    type Context = Context<Self>;
}

/// Request/response messages (`Addr::send`).
struct Play(PlaySlot);
impl Message for Play {
    type Result = Option<HouseholdReport>;
}
struct Set(Settle);
impl Message for Set {
    type Result = Option<SettleOutcome>;
}

impl Handler<Play> for Bench {
    type Result = Option<HouseholdReport>;
    fn handle(&mut self, m: Play, _: &mut Context<Self>) -> Self::Result {
        self.0.handle_play(m.0)
    }
}

impl Handler<Set> for Bench {
    type Result = Option<SettleOutcome>;
    fn handle(&mut self, m: Set, _: &mut Context<Self>) -> Self::Result {
        self.0.handle_settle(m.0)
    }
}

/// Answers gathered in place; the last place to be filled sends them all.
struct Gather<T> {
    answers: Mutex<Vec<Option<T>>>,
    left: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<Vec<Option<T>>>>>,
}

fn gather<T>(n: usize, done: oneshot::Sender<Vec<Option<T>>>) -> Arc<Gather<T>> {
    Arc::new(Gather {
        answers: Mutex::new((0..n).map(|_| None).collect()),
        left: AtomicUsize::new(n),
        done: Mutex::new(Some(done)),
    })
}

impl<T> Gather<T> {
    fn put(&self, i: usize, answer: T) {
        self.answers.lock().unwrap()[i] = Some(answer);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let all = std::mem::take(&mut *self.answers.lock().unwrap());
            let _ = self.done.lock().unwrap().take().unwrap().send(all);
        }
    }
}

/// Fire-and-forget messages answering into a gather.
struct GPlay(PlaySlot, Arc<Gather<Option<HouseholdReport>>>, usize);
impl Message for GPlay {
    type Result = ();
}
struct GSet(Settle, Arc<Gather<Option<SettleOutcome>>>, usize);
impl Message for GSet {
    type Result = ();
}

impl Handler<GPlay> for Bench {
    type Result = ();
    fn handle(&mut self, m: GPlay, _: &mut Context<Self>) {
        m.1.put(m.2, self.0.handle_play(m.0));
    }
}

impl Handler<GSet> for Bench {
    type Result = ();
    fn handle(&mut self, m: GSet, _: &mut Context<Self>) {
        m.1.put(m.2, self.0.handle_settle(m.0));
    }
}

/// Fire-and-forget messages answered by a message back to the shard.
struct RPlay(PlaySlot, usize, Addr<ReplyShard>);
impl Message for RPlay {
    type Result = ();
}
struct RSet(Settle, usize, Addr<ReplyShard>);
impl Message for RSet {
    type Result = ();
}

impl Handler<RPlay> for Bench {
    type Result = ();
    fn handle(&mut self, m: RPlay, _: &mut Context<Self>) {
        m.2.do_send(Answered(m.1, self.0.handle_play(m.0).is_some()));
    }
}

impl Handler<RSet> for Bench {
    type Result = ();
    fn handle(&mut self, m: RSet, _: &mut Context<Self>) {
        m.2.do_send(Answered(m.1, self.0.handle_settle(m.0).is_some()));
    }
}

/// What the tokio side asks a shard per slot; answers how many answered.
struct Fan {
    slot: u64,
    /// Play with this context; `None` = settle.
    play: Option<SlotContext>,
    done: oneshot::Sender<usize>,
}
impl Message for Fan {
    type Result = ();
}

/// Shard over `Recipient`s, answers gathered in place.
struct RecipientShard {
    play: Vec<Recipient<GPlay>>,
    settle: Vec<Recipient<GSet>>,
}

impl Actor for RecipientShard {
    type Context = Context<Self>;
}

impl Handler<Fan> for RecipientShard {
    type Result = ();
    fn handle(&mut self, fan: Fan, _: &mut Context<Self>) {
        let n = self.play.len();
        let (slot, done) = (fan.slot, fan.done);
        match fan.play {
            Some(ctx) => {
                let (tx, rx) = oneshot::channel();
                let g = gather(n, tx);
                for (i, r) in self.play.iter().enumerate() {
                    r.do_send(GPlay(play_msg(slot, &ctx), Arc::clone(&g), i));
                }
                actix::spawn(async move {
                    let _ = done.send(rx.await.unwrap().into_iter().flatten().flatten().count());
                });
            }
            None => {
                let (tx, rx) = oneshot::channel();
                let g = gather(n, tx);
                for (i, r) in self.settle.iter().enumerate() {
                    r.do_send(GSet(Settle { slot, settlement: None }, Arc::clone(&g), i));
                }
                actix::spawn(async move {
                    let _ = done.send(rx.await.unwrap().into_iter().flatten().flatten().count());
                });
            }
        }
    }
}

/// Shard counting answers sent back to it as messages.
struct ReplyShard {
    actors: Vec<Addr<Bench>>,
    answers: Vec<bool>,
    left: usize,
    done: Option<oneshot::Sender<usize>>,
}

impl Actor for ReplyShard {
    type Context = Context<Self>;
}

struct Answered(usize, bool);
impl Message for Answered {
    type Result = ();
}

impl Handler<Fan> for ReplyShard {
    type Result = ();
    fn handle(&mut self, fan: Fan, ctx: &mut Context<Self>) {
        use actix::AsyncContext;
        let me = ctx.address();
        self.answers = vec![false; self.actors.len()];
        self.left = self.actors.len();
        self.done = Some(fan.done);
        for (i, a) in self.actors.iter().enumerate() {
            match fan.play {
                Some(ctx) => a.do_send(RPlay(play_msg(fan.slot, &ctx), i, me.clone())),
                None => a.do_send(RSet(Settle { slot: fan.slot, settlement: None }, i, me.clone())),
            }
        }
    }
}

impl Handler<Answered> for ReplyShard {
    type Result = ();
    fn handle(&mut self, m: Answered, _: &mut Context<Self>) {
        self.answers[m.0] = m.1;
        self.left -= 1;
        if self.left == 0 {
            let n = self.answers.iter().filter(|a| **a).count();
            let _ = self.done.take().unwrap().send(n);
        }
    }
}

/// Shard that `send`s to each local actor and joins on its arbiter.
struct SendShard {
    actors: Vec<Addr<Bench>>,
}

impl Actor for SendShard {
    type Context = Context<Self>;
}

impl Handler<Fan> for SendShard {
    type Result = ();
    fn handle(&mut self, fan: Fan, _: &mut Context<Self>) {
        let (slot, done) = (fan.slot, fan.done);
        match fan.play {
            Some(ctx) => {
                let sends: Vec<_> =
                    self.actors.iter().map(|a| a.send(Play(play_msg(slot, &ctx)))).collect();
                actix::spawn(async move {
                    let n = join_all(sends).await.into_iter().filter_map(|r| r.unwrap()).count();
                    let _ = done.send(n);
                });
            }
            None => {
                let sends: Vec<_> = self
                    .actors
                    .iter()
                    .map(|a| a.send(Set(Settle { slot, settlement: None })))
                    .collect();
                actix::spawn(async move {
                    let n = join_all(sends).await.into_iter().filter_map(|r| r.unwrap()).count();
                    let _ = done.send(n);
                });
            }
        }
    }
}

/// The shards of one variant, as the tokio side sees them.
enum Shards {
    Recipient(Vec<Addr<RecipientShard>>),
    Reply(Vec<Addr<ReplyShard>>),
    Send(Vec<Addr<SendShard>>),
    /// No shard: the tokio side talks to every actor.
    Actors(Vec<Addr<Bench>>),
}

impl Shards {
    fn fan(&self, slot: u64, play: Option<SlotContext>) -> Vec<oneshot::Receiver<usize>> {
        let mut out = Vec::new();
        let mut go = |send: &dyn Fn(Fan)| {
            let (done, rx) = oneshot::channel();
            send(Fan { slot, play, done });
            out.push(rx);
        };
        match self {
            Shards::Recipient(s) => s.iter().for_each(|a| go(&|f| a.do_send(f))),
            Shards::Reply(s) => s.iter().for_each(|a| go(&|f| a.do_send(f))),
            Shards::Send(s) => s.iter().for_each(|a| go(&|f| a.do_send(f))),
            Shards::Actors(_) => unreachable!("no shards"),
        }
        out
    }
}

/// Starts `model`'s actors and shards on a new system with `n` arbiters.
fn start(
    model: &'static str,
    specs: &[ProsumerSpec],
    ds: &Arc<Dataset>,
    n: usize,
) -> (Shards, System, std::thread::JoinHandle<()>) {
    let per = specs.len().div_ceil(n);
    let blocks: Vec<Vec<ProsumerActor>> =
        specs.chunks(per).map(|b| b.iter().map(|s| actor(s, ds)).collect()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runner = System::new();
        let arbiters: Vec<Arbiter> = (0..blocks.len()).map(|_| Arbiter::new()).collect();
        let handles: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
        let shards = shards_of(model, blocks, &handles);
        tx.send((shards, System::current())).unwrap();
        let _ = runner.run();
        for a in arbiters {
            let _ = a.join();
        }
    });
    let (shards, system) = rx.recv().unwrap();
    (shards, system, thread)
}

fn shards_of(model: &str, blocks: Vec<Vec<ProsumerActor>>, arbs: &[ArbiterHandle]) -> Shards {
    let per_arbiter = blocks.into_iter().zip(arbs).map(|(block, arb)| {
        let actors: Vec<Addr<Bench>> =
            block.into_iter().map(|a| Bench::start_in_arbiter(arb, move |_| Bench(a))).collect();
        (actors, arb)
    });
    match model {
        "recipient" => Shards::Recipient(
            per_arbiter
                .map(|(actors, arb)| {
                    let play = actors.iter().map(|a| a.clone().recipient()).collect();
                    let settle = actors.iter().map(|a| a.clone().recipient()).collect();
                    RecipientShard::start_in_arbiter(arb, move |_| RecipientShard { play, settle })
                })
                .collect(),
        ),
        "reply-msg" => Shards::Reply(
            per_arbiter
                .map(|(actors, arb)| {
                    ReplyShard::start_in_arbiter(arb, move |_| ReplyShard {
                        actors,
                        answers: Vec::new(),
                        left: 0,
                        done: None,
                    })
                })
                .collect(),
        ),
        "shard-send" => Shards::Send(
            per_arbiter
                .map(|(actors, arb)| {
                    SendShard::start_in_arbiter(arb, move |_| SendShard { actors })
                })
                .collect(),
        ),
        "tokio-send" => Shards::Actors(per_arbiter.flat_map(|(a, _)| a).collect()),
        other => panic!("unknown model {other}"),
    }
}

/// Runs `model` over the slots: (play, settle) medians.
pub(crate) fn bench(
    model: &'static str,
    specs: &[ProsumerSpec],
    ds: &Arc<Dataset>,
    ctxs: &[SlotContext],
    n: usize,
) -> Timing {
    let (shards, system, thread) = start(model, specs, ds, n);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let timing = time_slots(ctxs, |slot, ctx| {
        rt.block_on(async {
            let t = Instant::now();
            let played = round(&shards, slot, Some(*ctx)).await;
            let play_time = t.elapsed();
            assert_eq!(played, specs.len());
            let t = Instant::now();
            let settled = round(&shards, slot, None).await;
            assert_eq!(settled, specs.len());
            (play_time, t.elapsed())
        })
    });
    system.stop();
    thread.join().unwrap();
    timing
}

/// One message to every actor, however the model fans it out; how many answered.
async fn round(shards: &Shards, slot: u64, play: Option<SlotContext>) -> usize {
    if let Shards::Actors(actors) = shards {
        return match play {
            Some(ctx) => join_all(actors.iter().map(|a| a.send(Play(play_msg(slot, &ctx)))))
                .await
                .into_iter()
                .filter_map(|r| r.unwrap())
                .count(),
            None => join_all(actors.iter().map(|a| a.send(Set(Settle { slot, settlement: None }))))
                .await
                .into_iter()
                .filter_map(|r| r.unwrap())
                .count(),
        };
    }
    let mut n = 0;
    for rx in shards.fan(slot, play) {
        n += rx.await.unwrap();
    }
    n
}
