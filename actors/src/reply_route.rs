//! Owns how the store's answers reach writers on other threads: gathered per writer's thread
//! during a group commit and sent as one batch per thread, so a commit of many writes wakes each
//! client-port thread once instead of once per writer.
//!
//! Why: a `oneshot` answered from the store's thread wakes the writer's task from outside its
//! runtime, and tokio's single-threaded runtime turns every such wake-up into a write to its
//! eventfd. A commit of 15 puts from one HTTP/2 connection made 15 of them on the store's
//! thread, and the client-port thread, woken by the first, ran each writer and then the
//! connection alone: one `writev` of one 62-byte response per put, and the client read them
//! one by one (`strace -f` on the server during
//! `load --protocol grpc --clients 64 --only watchkv`). Answered on their own thread, the
//! writers are woken onto its local queue together and the connection task runs after all of
//! them, so their responses leave in one write.

use std::cell::RefCell;

use futures::channel::oneshot;
use tokio::runtime::{Handle as RuntimeHandle, Id as RuntimeId, RuntimeFlavor};
use tokio::sync::mpsc;

/// One answer, ready to be completed on the writer's thread.
type Answer = Box<dyn FnOnce() + Send>;

/// The way into a thread's relay: a task on that thread's runtime that completes the answers
/// sent to it. The channel has no bound of its own; what it holds is answers to writes whose
/// writers are waiting for them, and the store's bounded mailbox bounds those.
#[derive(Clone)]
struct Route(mpsc::UnboundedSender<Vec<Answer>>);

thread_local! {
    /// This thread's route, with the runtime its relay runs on (a thread may run several
    /// runtimes one after the other, as tests do).
    static THREAD_ROUTE: RefCell<Option<(RuntimeId, Route)>> = const { RefCell::new(None) };
}

/// The single-threaded tokio runtime this thread runs (an actix arbiter is one), if any: where
/// a task spawned now runs on this thread, after the tasks already queued here.
pub(crate) fn this_threads_runtime() -> Option<RuntimeHandle> {
    let runtime = RuntimeHandle::try_current().ok()?;
    (runtime.runtime_flavor() == RuntimeFlavor::CurrentThread).then_some(runtime)
}

impl Route {
    /// The route to the current thread, its relay started on first use; `None` outside a
    /// single-threaded tokio runtime, where an answer is sent as is.
    fn current() -> Option<Route> {
        let runtime = this_threads_runtime()?;
        let id = runtime.id();
        THREAD_ROUTE.with(|slot| {
            let mut slot = slot.borrow_mut();
            if let Some((route_runtime, route)) = slot.as_ref() {
                if *route_runtime == id && !route.0.is_closed() {
                    return Some(route.clone());
                }
            }
            let (sender, receiver) = mpsc::unbounded_channel();
            runtime.spawn(relay(receiver));
            let route = Route(sender);
            *slot = Some((id, route.clone()));
            Some(route)
        })
    }
}

/// Completes every batch sent to this thread, in order, until the runtime ends.
async fn relay(mut batches: mpsc::UnboundedReceiver<Vec<Answer>>) {
    while let Some(batch) = batches.recv().await {
        for answer in batch {
            answer();
        }
        // The writers answered may write again at once.
        crate::idle_poll::keep_polling();
    }
}

/// Where one answer goes: the waiting writer's channel, and the route to its thread.
pub struct Reply<T> {
    sender: oneshot::Sender<T>,
    route: Option<Route>,
}

impl<T> std::fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").field("routed", &self.route.is_some()).finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Reply<T> {
    /// A reply to the calling task, answered on the calling thread when that thread runs a
    /// single-threaded tokio runtime, and the receiver the task awaits. The answer then needs
    /// that runtime to run: a task must await it, not block the runtime's thread on it (which
    /// would stall every other task of that thread as well).
    pub fn channel() -> (Self, oneshot::Receiver<T>) {
        let (sender, receiver) = oneshot::channel();
        let route = Route::current();
        if route.is_some() {
            crate::idle_poll::keep_polling();
        }
        (Self { sender, route }, receiver)
    }

    /// Answers now, from the calling thread (an answer that is not part of a commit's batch:
    /// a refusal before the write was applied).
    pub fn send_now(self, value: T) {
        // A writer that has gone away no longer needs its answer.
        let _ = self.sender.send(value);
    }
}

/// The answers of one store turn, gathered per writer's thread until [`Answers::send`].
#[derive(Default)]
pub struct Answers {
    /// One batch per thread; a store turn's writers come from a few client-port threads.
    batches: Vec<(Route, Vec<Answer>)>,
}

impl Answers {
    /// Adds `value` as the answer to `reply`; a reply with no route is answered at once.
    pub fn add<T: Send + 'static>(&mut self, reply: Reply<T>, value: T) {
        let Reply { sender, route } = reply;
        let Some(route) = route else {
            let _ = sender.send(value);
            return;
        };
        let answer: Answer = Box::new(move || {
            let _ = sender.send(value);
        });
        match self.batches.iter_mut().find(|(r, _)| r.0.same_channel(&route.0)) {
            Some((_, batch)) => batch.push(answer),
            None => self.batches.push((route, vec![answer])),
        }
    }

    /// Sends each thread its batch: one wake-up per thread. A thread whose runtime has ended
    /// has its answers completed here instead, so none is lost.
    pub fn send(self) {
        for (route, batch) in self.batches {
            if let Err(mpsc::error::SendError(batch)) = route.0.send(batch) {
                for answer in batch {
                    answer();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_an_answer_is_sent_at_once() {
        let (reply, mut receiver) = Reply::<u32>::channel();
        let mut answers = Answers::default();
        answers.add(reply, 7);
        assert_eq!(receiver.try_recv().ok().flatten(), Some(7));
        assert!(answers.batches.is_empty());
    }

    #[test]
    fn a_batch_is_answered_by_the_writers_thread_in_order() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let values = runtime.block_on(async {
            let (replies, mut receivers): (Vec<_>, Vec<_>) = (0..5).map(|_| Reply::<u32>::channel()).unzip();
            std::thread::spawn(move || {
                let mut answers = Answers::default();
                for (i, reply) in replies.into_iter().enumerate() {
                    answers.add(reply, i as u32);
                }
                assert_eq!(answers.batches.len(), 1, "one batch for the one writer thread");
                answers.send();
            })
            .join()
            .expect("store thread");
            // Sent, and still unanswered until this thread's relay runs.
            assert!(receivers.iter_mut().all(|r| matches!(r.try_recv(), Ok(None))));
            let mut values = Vec::new();
            for receiver in receivers {
                values.push(receiver.await.expect("answered"));
            }
            values
        });
        assert_eq!(values, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_batch_for_an_ended_runtime_is_answered_by_the_sender() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let (reply, receiver) = runtime.block_on(async { Reply::<u32>::channel() });
        drop(runtime);
        let mut answers = Answers::default();
        answers.add(reply, 9);
        answers.send();
        assert_eq!(futures::executor::block_on(receiver).ok(), Some(9));
    }
}
