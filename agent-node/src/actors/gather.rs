//! Where the answers of one fan-out meet: one place per actor of a shard,
//! and one reply for all of them.
//!
//! A shard hands each of its actors a [`Reply`] naming the actor's place.
//! The actor fills it in ([`Reply::send`]) or drops it unanswered (the
//! message panicked, or never arrived because the actor is gone); either
//! way dropping the `Reply` counts the place as done, and the last one to
//! go sends every answer, in the shard's id order, through one oneshot
//! channel. So a fan-out costs one channel per shard, not one per actor,
//! and can never hang on a lost actor.
//!
//! The places are behind a `Mutex` only because actix messages must be
//! `Send`: all the actors of a shard run on its one arbiter thread, so the
//! lock is never contended.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// Every actor's answer, in the shard's order; `None` = lost (it panicked).
pub(crate) type Answers<T> = Vec<Option<T>>;

struct Gather<T> {
    answers: Mutex<Answers<T>>,
    left: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<Answers<T>>>>,
}

/// One actor's place in a fan-out.
pub(crate) struct Reply<T> {
    gather: Arc<Gather<T>>,
    index: usize,
}

/// The `n` replies of one fan-out; `done` gets all their answers once the
/// last is sent or dropped (at once when `n` is 0).
pub(crate) fn replies<T>(n: usize, done: oneshot::Sender<Answers<T>>) -> Vec<Reply<T>> {
    if n == 0 {
        let _ = done.send(Vec::new());
        return Vec::new();
    }
    let gather = Arc::new(Gather {
        answers: Mutex::new((0..n).map(|_| None).collect()),
        left: AtomicUsize::new(n),
        done: Mutex::new(Some(done)),
    });
    (0..n).map(|index| Reply { gather: Arc::clone(&gather), index }).collect()
}

impl<T> Reply<T> {
    pub(crate) fn send(self, answer: T) {
        lock(&self.gather.answers)[self.index] = Some(answer);
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        // AcqRel: the last one sees every other place filled in.
        if self.gather.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let answers = std::mem::take(&mut *lock(&self.gather.answers));
            if let Some(done) = lock(&self.gather.done).take() {
                // The asker may have gone (the node is stopping): nobody to tell.
                let _ = done.send(answers);
            }
        }
    }
}

/// A panicking actor never holds these locks (they are taken only here,
/// outside any request), so poisoning cannot happen; if it did, the data
/// is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_arrive_in_place_order_once_every_reply_is_gone() {
        let (tx, mut rx) = oneshot::channel();
        let mut r = replies::<u32>(3, tx);
        let third = r.pop().unwrap();
        let second = r.pop().unwrap();
        third.send(30);
        assert!(rx.try_recv().is_err(), "two places still open");
        drop(second); // lost: a panic
        r.pop().unwrap().send(10);
        assert_eq!(rx.try_recv().unwrap(), vec![Some(10), None, Some(30)]);
    }

    #[test]
    fn an_empty_fan_out_answers_at_once() {
        let (tx, mut rx) = oneshot::channel();
        assert!(replies::<u32>(0, tx).is_empty());
        assert_eq!(rx.try_recv().unwrap(), Vec::<Option<u32>>::new());
    }
}
