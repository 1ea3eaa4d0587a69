//! Owns the bounded queue between a stream's actor and the transport that writes its responses
//! to the socket ([`response_queue`]): the actor pushes responses as a [`WatchSink`], the
//! transport takes them with [`QueueReceiver::poll_recv`]. Built for a fan-out's traffic: a push
//! is a short lock and, only when the transport is waiting, one wake; the transport takes
//! everything queued under one lock and then reads it without touching shared state. (A tokio
//! mpsc channel did a semaphore acquire, a linked-block push and a wake check per response: 9%
//! of the server's CPU on 1000 streams.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::future::BoxFuture;
use watchkv::watch::response::WatchResponse;

use crate::sink::{SinkClosed, SinkSend, WatchSink};

/// Returns a queue that holds at most `capacity` responses (at least 1) waiting for the
/// transport, plus at most as many the transport has taken and not written yet.
#[must_use]
pub fn response_queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared { state: Mutex::new(State::default()), capacity: capacity.max(1) });
    (QueueSender { shared: Arc::clone(&shared) }, QueueReceiver { shared, taken: VecDeque::new() })
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
}

impl Shared {
    /// The state; a panic elsewhere while holding the lock leaves nothing half-done here (every
    /// critical section is a push, a swap or a flag), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<WatchResponse>,
    /// The transport waits for a response.
    receiver: Option<Waker>,
    /// The actor waits for room.
    sender: Option<Waker>,
    receiver_gone: bool,
    sender_gone: bool,
}

/// The actor's end: a [`WatchSink`].
pub struct QueueSender {
    shared: Arc<Shared>,
}

impl Shared {
    /// Pushes `response` if there is room; gives it back when there is none, after noting
    /// `waker` (if any) to be woken when there is.
    fn try_push(
        &self,
        response: WatchResponse,
        waker: Option<&Waker>,
    ) -> Result<Result<(), SinkClosed>, WatchResponse> {
        let mut state = self.lock();
        if state.receiver_gone {
            return Ok(Err(SinkClosed));
        }
        if state.queue.len() >= self.capacity {
            if let Some(waker) = waker {
                state.sender = Some(waker.clone());
            }
            return Err(response);
        }
        state.queue.push_back(response);
        let receiver = state.receiver.take();
        drop(state);
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        Ok(Ok(()))
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        let receiver = {
            let mut state = self.shared.lock();
            state.sender_gone = true;
            state.receiver.take()
        };
        if let Some(receiver) = receiver {
            receiver.wake();
        }
    }
}

impl WatchSink for QueueSender {
    fn send(&self, response: WatchResponse) -> BoxFuture<'static, Result<(), SinkClosed>> {
        Box::pin(Push { shared: Arc::clone(&self.shared), response: Some(response) })
    }

    fn start_send(&self, response: WatchResponse) -> SinkSend {
        match self.shared.try_push(response, None) {
            Ok(result) => SinkSend::Done(result),
            Err(response) => SinkSend::Pending(self.send(response)),
        }
    }
}

/// A push waiting for room.
struct Push {
    shared: Arc<Shared>,
    response: Option<WatchResponse>,
}

impl Future for Push {
    type Output = Result<(), SinkClosed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(response) = self.response.take() else { return Poll::Ready(Ok(())) };
        match self.shared.try_push(response, Some(cx.waker())) {
            Ok(result) => Poll::Ready(result),
            Err(response) => {
                self.response = Some(response);
                Poll::Pending
            }
        }
    }
}

/// The transport's end.
pub struct QueueReceiver {
    shared: Arc<Shared>,
    /// Responses taken from the queue in one go, in order.
    taken: VecDeque<WatchResponse>,
}

impl std::fmt::Debug for QueueReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueReceiver").field("taken", &self.taken.len()).finish_non_exhaustive()
    }
}

impl QueueReceiver {
    /// The next response; `None` once the actor has gone and everything it queued was taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        if let Some(response) = self.taken.pop_front() {
            return Poll::Ready(Some(response));
        }
        let sender = {
            let mut state = self.shared.lock();
            if state.queue.is_empty() {
                if state.sender_gone {
                    return Poll::Ready(None);
                }
                state.receiver = Some(cx.waker().clone());
                return Poll::Pending;
            }
            // Take everything: the actor finds the room at once, and the responses taken are
            // read without the lock.
            std::mem::swap(&mut self.taken, &mut state.queue);
            state.sender.take()
        };
        if let Some(sender) = sender {
            sender.wake();
        }
        Poll::Ready(self.taken.pop_front())
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let sender = {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            state.queue.clear();
            state.sender.take()
        };
        if let Some(sender) = sender {
            sender.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll_once<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        f(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn responses_come_out_in_order_and_a_full_queue_makes_the_sender_wait() {
        let (tx, mut rx) = response_queue(2);
        assert!(matches!(tx.start_send(WatchResponse::progress(1, 1)), SinkSend::Done(Ok(()))));
        assert!(matches!(tx.start_send(WatchResponse::progress(2, 2)), SinkSend::Done(Ok(()))));
        let SinkSend::Pending(mut third) = tx.start_send(WatchResponse::progress(3, 3)) else {
            panic!("a full queue must make the sender wait");
        };
        assert!(poll_once(|cx| third.as_mut().poll(cx)).is_pending());
        // Taking frees the room at once; the waiting response goes in behind the taken ones.
        assert_eq!(poll_once(|cx| rx.poll_recv(cx)), Poll::Ready(Some(WatchResponse::progress(1, 1))));
        assert_eq!(poll_once(|cx| third.as_mut().poll(cx)), Poll::Ready(Ok(())));
        let got: Vec<i64> = (0..2)
            .map(|_| match poll_once(|cx| rx.poll_recv(cx)) {
                Poll::Ready(Some(r)) => r.watch_id,
                other => panic!("expected a response, got {other:?}"),
            })
            .collect();
        assert_eq!(got, vec![2, 3]);
        assert!(poll_once(|cx| rx.poll_recv(cx)).is_pending());
        drop(tx);
        assert_eq!(poll_once(|cx| rx.poll_recv(cx)), Poll::Ready(None));
    }

    #[test]
    fn a_gone_receiver_fails_sends_and_wakes_a_waiting_sender() {
        let (tx, rx) = response_queue(1);
        assert!(matches!(tx.start_send(WatchResponse::progress(1, 1)), SinkSend::Done(Ok(()))));
        let SinkSend::Pending(mut waiting) = tx.start_send(WatchResponse::progress(2, 2)) else {
            panic!("a full queue must make the sender wait");
        };
        assert!(poll_once(|cx| waiting.as_mut().poll(cx)).is_pending());
        drop(rx);
        assert_eq!(poll_once(|cx| waiting.as_mut().poll(cx)), Poll::Ready(Err(SinkClosed)));
        assert!(matches!(tx.start_send(WatchResponse::progress(3, 3)), SinkSend::Done(Err(SinkClosed))));
    }
}
