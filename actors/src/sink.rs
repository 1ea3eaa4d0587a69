//! Owns `WatchSink`: where a stream's responses leave the runtime for the client. A transport
//! provides one per stream; sending waits while the client is slow, which is what lets a
//! stream's bounded mailbox fill up and turn its watchers into victims instead of growing.

use actix::prelude::*;
use futures::future::BoxFuture;
use watchkv::watch::response::WatchResponse;

/// The client end of a stream has gone away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

/// Delivers a stream's responses to its client, in order.
pub trait WatchSink: Send + Sync + 'static {
    /// Sends one response; resolves once the client side has accepted it.
    fn send(&self, response: WatchResponse) -> BoxFuture<'static, Result<(), SinkClosed>>;
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
}
