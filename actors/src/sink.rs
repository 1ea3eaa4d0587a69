//! Owns `WatchSink`: where a stream's responses leave the runtime for the client. A transport
//! provides one per stream; sending waits while the client is slow, which is what lets a
//! stream's bounded mailbox fill up and turn its watchers into victims instead of growing.

use std::task::{Context, Poll, Waker};

use actix::prelude::*;
use futures::future::BoxFuture;
use watchkv::watch::response::WatchResponse;

/// The client end of a stream has gone away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

/// What [`WatchSink::start_send`] did with a response.
pub enum SinkSend {
    /// The client side accepted it (`Ok`) or has gone away (`Err`): nothing to wait for.
    Done(Result<(), SinkClosed>),
    /// The client side is not ready yet: the future resolves once it has accepted the response.
    Pending(BoxFuture<'static, Result<(), SinkClosed>>),
}

impl std::fmt::Debug for SinkSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Self::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

/// Delivers a stream's responses to its client, in order.
pub trait WatchSink: Send + Sync + 'static {
    /// Sends one response; resolves once the client side has accepted it.
    fn send(&self, response: WatchResponse) -> BoxFuture<'static, Result<(), SinkClosed>>;

    /// Starts sending one response without waiting: the fast path a stream takes for every
    /// response while its client keeps up, so a delivery costs no task switch.
    ///
    /// The default polls [`send`](Self::send)'s future once (with a no-op waker; the stream
    /// polls it again with its own if it is pending, and only the latest waker counts, as the
    /// `Future` contract says). A transport whose channel has a real `try_send` should override
    /// it so that the common case allocates no future at all.
    fn start_send(&self, response: WatchResponse) -> SinkSend {
        let mut fut = self.send(response);
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => SinkSend::Done(result),
            Poll::Pending => SinkSend::Pending(fut),
        }
    }
}

/// One response handed to an actor that stands for the client (tests use a recorder actor).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct StreamOutput(pub WatchResponse);

impl WatchSink for Recipient<StreamOutput> {
    fn send(&self, response: WatchResponse) -> BoxFuture<'static, Result<(), SinkClosed>> {
        let fut = Recipient::send(self, StreamOutput(response));
        Box::pin(async move { fut.await.map_err(|_| SinkClosed) })
    }
}

impl WatchSink for tokio::sync::mpsc::Sender<WatchResponse> {
    fn send(&self, response: WatchResponse) -> BoxFuture<'static, Result<(), SinkClosed>> {
        let tx = self.clone();
        Box::pin(async move { tx.send(response).await.map_err(|_| SinkClosed) })
    }

    fn start_send(&self, response: WatchResponse) -> SinkSend {
        use tokio::sync::mpsc::error::TrySendError;
        match self.try_send(response) {
            Ok(()) => SinkSend::Done(Ok(())),
            Err(TrySendError::Closed(_)) => SinkSend::Done(Err(SinkClosed)),
            // Full: wait for room like `send`, keeping the response's place in the order.
            Err(TrySendError::Full(response)) => SinkSend::Pending(WatchSink::send(self, response)),
        }
    }
}
