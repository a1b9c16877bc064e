//! The prosumer actors: one supervised actix actor per hosted prosumer, on
//! a few dedicated arbiters, and [`Prosumers`], the handle the session
//! talks to them through.
//!
//! - [`prosumer`](ProsumerActor): what one actor owns (household, policy,
//!   return) and does with each message, as plain synchronous code;
//! - `supervised.rs`: the actix side of an actor — its messages
//!   (`PlaySlot`, `Settle`, observe, prepare, set-model, snapshot, restore,
//!   return), each run under `catch_unwind`, and its restart from the last
//!   good state by the actix `Supervisor` after a panic;
//! - `shard.rs`: the one actor per arbiter that fans a message out to the
//!   prosumers of its arbiter; `gather.rs`: how their answers come back as
//!   one reply;
//! - `system.rs`: the actix system, one arbiter per `--actor-threads`.
//!
//! **The design, measured.** The first actix version sent one `Addr::send`
//! per actor per message from the tokio session and joined the replies:
//! every message a cross-thread wake-up and a reply channel, 6.4 ms per
//! 2,500-prosumer slot, so the node ran a hand-written thread pool instead.
//! Here the session crosses into the actor system once per arbiter per
//! message: `Prosumers::spawn` splits the prosumers into contiguous id
//! blocks, one per arbiter, each led by a `Shard`; the shard `do_send`s
//! every actor of its block its own message on the arbiter's own thread,
//! and the answers gather into one vector sent back through one oneshot
//! channel. Concatenating the shards' vectors in shard order gives the
//! answers in prosumer id order (determinism). `benches/actors.rs` measures
//! this against the alternatives (`send` + `join_all` from tokio or inside
//! the arbiter, replies as messages to the shard, `Recipient` fan-out) and
//! against the plain loop on one thread; the numbers are in the
//! agent-node README. This fan-out was the fastest sound one (the
//! `Recipient` one is as fast but adds dispatch): 2,500 prosumers play and
//! settle a slot in ~1.1 ms on 2 arbiters, against ~0.25 ms for the
//! replaced pool and 0.13 ms for the bare loop — actix's mailbox and task
//! wake-up cost ~0.2–0.4 µs per actor per message. In the cluster
//! benchmark (10,000 prosumers on 4 nodes) that is ~62 slots/s against the
//! pool's ~144 on the same loaded 2-core box: above the 50 slots/s target,
//! with little margin.
//!
//! **Supervision.** A message that panics in one actor is lost for that
//! prosumer only: it answers nothing (no report for the slot, no
//! settlement), the restart is counted (`agent_actor_restarts`) and logged
//! with its id, and the next message finds it back at its last good state.
//! Every other actor, and the node, carries on.
//!
//! With a remote policy the node asks every actor for its observation first
//! ([`Prosumers::observe`]: the slot is prepared, EV events and observation,
//! exactly as a learning actor prepares it), gets every action from the
//! service in one call, and then plays the slot with those actions
//! ([`Prosumers::play_with`]); an actor without a given action plays its own
//! policy (the rule-based fallback). Settling can report each prosumer's
//! outcome ([`Prosumers::settle_and_report`]) for the service's feedback.
//!
//! Never here: gRPC, wire types, deciding what the market meant (that is the
//! session).

mod gather;
mod handle;
mod prosumer;
mod shard;
mod supervised;
mod system;
#[cfg(test)]
mod tests;

pub use handle::{Prosumers, SettleSummary};
pub use prosumer::{
    settle_locally, ActorRollout, ActorState, PlaySlot, ProsumerActor, ProsumerReturn, Settle,
    SettleOutcome, Step,
};
