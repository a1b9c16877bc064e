//! [`ProsumerActor`] as a supervised actix actor: the messages it takes and
//! what happens when one of them panics.
//!
//! Every message to a prosumer is an [`Ask`]: a typed request ([`PlaySlot`],
//! [`Settle`], [`Observe`], [`Prepare`], [`SetModel`], [`Snapshot`],
//! [`Restore`], [`ReturnOf`]) and the [`Reply`] its answer goes to. One
//! generic handler runs the request inside `catch_unwind`. A panic (a bug
//! in a household or a policy) drops the reply unanswered, is logged with
//! the prosumer id and stops the actor; its actix `Supervisor` then
//! restarts it on the same mailbox, and [`Supervised::restarting`] puts it
//! back in its last good state ([`ProsumerActor::recover`]) and counts the
//! restart. actix's supervisor restarts an actor that *stopped*; a panic
//! left to unwind would kill the arbiter's task instead, hence the
//! `catch_unwind`, which turns a panic into a stop.
//!
//! Never here: which actors a request goes to (`shard.rs`), threads
//! (`system.rs`).

use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::{Actor, ActorContext, Context, Handler, Message, Supervised};
use peergrid_core::household::{Conditions, HouseholdReport};
use peergrid_core::observation::{SlotContext, OBS_DIM};
use tracing::{error, warn};

use super::gather::Reply;
use super::prosumer::{
    ActorRollout, ActorState, PlaySlot, ProsumerActor, ProsumerReturn, Settle, SettleOutcome,
};
use crate::policy::Learned;

impl Actor for ProsumerActor {
    type Context = Context<Self>;
}

impl Supervised for ProsumerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.recover();
        self.restarts.inc();
        warn!(prosumer_id = self.id(), "prosumer actor restarted from its last good state");
    }
}

/// One request to one prosumer actor, and its answer.
pub(crate) trait Request: Send + 'static {
    type Answer: Send + 'static;

    fn apply(self, actor: &mut ProsumerActor) -> Self::Answer;
}

/// The actix message: a request and where its answer goes.
pub(crate) struct Ask<R: Request> {
    pub(crate) request: R,
    pub(crate) reply: Reply<R::Answer>,
}

impl<R: Request> Message for Ask<R> {
    type Result = ();
}

impl<R: Request> Handler<Ask<R>> for ProsumerActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<R>, ctx: &mut Context<Self>) {
        let Ask { request, reply } = ask;
        // Unwind safety: after a panic the actor is not used again before
        // `recover` has replaced everything the request may have touched
        // (household, slot in hand, experience); the policy only holds
        // scratch buffers and a generator, valid at every point.
        match catch_unwind(AssertUnwindSafe(|| request.apply(self))) {
            Ok(answer) => reply.send(answer),
            Err(panic) => {
                drop(reply);
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(prosumer_id = self.id(), panic = %what, "prosumer actor panicked; restarting it");
                // The supervisor sees the stop and restarts the actor.
                ctx.stop();
            }
        }
    }
}

impl Request for PlaySlot {
    type Answer = Option<HouseholdReport>;

    fn apply(self, actor: &mut ProsumerActor) -> Self::Answer {
        actor.handle_play(self)
    }
}

impl Request for Settle {
    type Answer = Option<SettleOutcome>;

    fn apply(self, actor: &mut ProsumerActor) -> Self::Answer {
        actor.handle_settle(self)
    }
}

/// Remote policy: prepare the slot and answer the observation's features.
pub(crate) struct Observe {
    pub(crate) slot: u64,
    pub(crate) ctx: SlotContext,
    pub(crate) conditions: Conditions,
}

impl Request for Observe {
    type Answer = [f32; OBS_DIM];

    fn apply(self, actor: &mut ProsumerActor) -> Self::Answer {
        actor.observe(self.slot, &self.ctx, self.conditions)
    }
}

/// Learning: prepare the slot and hand over the experience collected.
pub(crate) struct Prepare {
    pub(crate) slot: u64,
    pub(crate) ctx: SlotContext,
    pub(crate) conditions: Conditions,
}

impl Request for Prepare {
    type Answer = ActorRollout;

    fn apply(self, actor: &mut ProsumerActor) -> Self::Answer {
        actor.prepare_and_collect(self.slot, &self.ctx, self.conditions)
    }
}

/// Learning: act with this policy version from the next slot on.
pub(crate) struct SetModel(pub(crate) Learned);

impl Request for SetModel {
    type Answer = ();

    fn apply(self, actor: &mut ProsumerActor) {
        actor.set_model(&self.0);
    }
}

/// The actor's state, to persist.
pub(crate) struct Snapshot;

impl Request for Snapshot {
    type Answer = ActorState;

    fn apply(self, actor: &mut ProsumerActor) -> ActorState {
        actor.snapshot()
    }
}

/// Continue from a saved state, if there is one for this prosumer
/// (answers 1 if restored, 0 if there was none).
pub(crate) struct Restore(pub(crate) Option<ActorState>);

impl Request for Restore {
    type Answer = Result<usize, String>;

    fn apply(self, actor: &mut ProsumerActor) -> Self::Answer {
        match self.0 {
            Some(state) => actor.restore(&state).map(|()| 1),
            None => Ok(0),
        }
    }
}

/// The episode return so far.
pub(crate) struct ReturnOf;

impl Request for ReturnOf {
    type Answer = ProsumerReturn;

    fn apply(self, actor: &mut ProsumerActor) -> ProsumerReturn {
        actor.episode_return()
    }
}

/// Test hook: if set, the actor panics in its next message of that kind,
/// after its household changed.
#[cfg(test)]
pub(crate) struct PanicNext(pub(crate) Option<super::prosumer::PanicAt>);

#[cfg(test)]
impl Request for PanicNext {
    type Answer = ();

    fn apply(self, actor: &mut ProsumerActor) {
        if self.0.is_some() {
            actor.panic_next = self.0;
        }
    }
}
