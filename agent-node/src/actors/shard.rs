//! A shard: the actor through which the node reaches every prosumer actor
//! of one arbiter.
//!
//! The gRPC session runs on tokio; the prosumer actors run on dedicated
//! arbiter threads. A message from a tokio thread to an actor is a
//! cross-thread wake-up (~2 µs measured), too dear to pay per prosumer
//! per slot. So each arbiter hosts one [`Shard`], which owns the addresses
//! of the prosumer actors of its arbiter (a contiguous id block): the node
//! sends it one [`Fan`] per slot, and the shard `do_send`s each actor its
//! own request from the arbiter's own thread, then the actors' [`Reply`]s
//! gather into one answer (`gather.rs`). One crossing in and one out per
//! arbiter per message, whatever the number of prosumers. The alternatives
//! measured against this one are in `benches/actors.rs`.

use actix::{Actor, Addr, Context, Handler, Message};
use peergrid_core::units::ProsumerId;
use tokio::sync::oneshot;

use super::gather::{replies, Answers};
use super::supervised::{Ask, Request};
use super::ProsumerActor;

/// The prosumer actors of one arbiter, in id order.
pub(crate) struct Shard {
    pub(crate) ids: Vec<ProsumerId>,
    pub(crate) actors: Vec<Addr<ProsumerActor>>,
}

impl Actor for Shard {
    type Context = Context<Self>;
}

/// Builds each actor's request from its prosumer id.
pub(crate) type Each<R> = Box<dyn Fn(ProsumerId) -> R + Send>;

/// One request for every actor of a shard; the answers come back in id
/// order through `done` (`None` for an actor that lost the message).
pub(crate) struct Fan<R: Request> {
    pub(crate) each: Each<R>,
    pub(crate) done: oneshot::Sender<Answers<R::Answer>>,
}

impl<R: Request> Message for Fan<R> {
    type Result = ();
}

impl<R: Request> Handler<Fan<R>> for Shard {
    type Result = ();

    fn handle(&mut self, fan: Fan<R>, _: &mut Context<Self>) {
        let replies = replies(self.actors.len(), fan.done);
        for ((id, actor), reply) in self.ids.iter().zip(&self.actors).zip(replies) {
            // A stopped mailbox drops the message, and with it the reply.
            actor.do_send(Ask { request: (fan.each)(*id), reply });
        }
    }
}
