//! Owns the gRPC `Watch` service: one bidirectional stream per RPC, mapped onto one
//! `StreamActor` (docs/etcd-semantics.md §7): creates, cancels and progress requests go in as
//! messages, and the actor's responses (events, progress, fragments, cancels) come out in its
//! order.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status, Streaming};

use super::wire::service::watch_server::Watch;
use super::wire::OutgoingWatchResponse;
use super::GrpcApi;
use crate::api::pb::etcdserverpb as pb;
use crate::api::stream::Credentials;
use crate::api::{Header, StreamRequests, TransportStream};

#[tonic::async_trait]
impl Watch for GrpcApi {
    type WatchStream = Responses;

    async fn watch(&self, request: Request<Streaming<pb::WatchRequest>>) -> Result<Response<Responses>, Status> {
        let meta = request.metadata();
        let token = meta.get("token").or_else(|| meta.get("authorization")).and_then(|v| v.to_str().ok());
        let credentials = Credentials {
            token: token.map(str::to_string),
            cert_user: request.extensions().get::<crate::api::ClientCertUser>().map(|u| u.0.clone()),
        };
        let stream = TransportStream::open_on(self.handle(), &self.streams).with_credentials(credentials);
        let (broke, broken) = oneshot::channel();
        tokio::spawn(read_requests(request.into_inner(), stream.requests(self.handle()), broke));
        Ok(Response::new(Responses {
            stream,
            header: self.inner.header,
            broken,
            shutting_down: self.handle().shutting_down(),
            ended: false,
        }))
    }
}

/// Hands each client request to the stream actor, waiting until the stream has taken it
/// (`StreamRequests::forward`). The end of the client's side does not end the stream (etcd's
/// `recvLoop` returns nil on EOF and the stream lives until the RPC ends); a broken client
/// stream (a request that does not decode, or is over the limit) closes it, and the RPC ends
/// with that error, as etcd's `Watch` returns its `recvLoop`'s.
async fn read_requests(
    mut inbound: Streaming<pb::WatchRequest>,
    requests: StreamRequests,
    broke: oneshot::Sender<Status>,
) {
    while let Some(item) = inbound.next().await {
        let req = match item {
            Ok(req) => req,
            Err(status) => {
                let _ = broke.send(super::router::too_large_as_grpc_go(&status).unwrap_or(status));
                requests.close();
                return;
            }
        };
        if requests.forward(req).await.is_err() {
            return;
        }
    }
}

/// The response half, framed by the call's body (`watch_body::WatchBody`; a compressed call's
/// by tonic with `wire::WatchCodec`). Owns the stream, which closes when the body is dropped
/// (the RPC ended or the client went away), so no watcher outlives its stream.
pub struct Responses {
    stream: TransportStream,
    header: Header,
    /// Why the client's side broke, if it did: the RPC ends with it.
    broken: oneshot::Receiver<Status>,
    /// Whether the store is shutting down (`Handle::shutting_down`).
    shutting_down: watch::Receiver<bool>,
    ended: bool,
}

impl Stream for Responses {
    type Item = Result<OutgoingWatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let header = self.header;
        match self.stream.poll_response(cx) {
            Poll::Ready(Some(response)) => Poll::Ready(Some(Ok(OutgoingWatchResponse { header, response }))),
            Poll::Ready(None) => {
                self.ended = true;
                if let Ok(status) = self.broken.try_recv() {
                    return Poll::Ready(Some(Err(status)));
                }
                // A stream the server ends as it stops: `Unavailable`, which etcd's clients
                // retry (they reconnect and resume each watch), where an OK end reads to
                // clientv3 as a fatal EOF that closes every watch channel.
                if *self.shutting_down.borrow() {
                    return Poll::Ready(Some(Err(Status::unavailable("etcdserver: server stopped"))));
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
