//! Owns the gRPC `Watch` service: one bidirectional stream per RPC, mapped onto one
//! `StreamActor` (docs/etcd-semantics.md §7): creates, cancels and progress requests go in as
//! messages, and the actor's responses (events, progress, fragments, cancels) come out in its
//! order.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
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
        tokio::spawn(read_requests(request.into_inner(), stream.requests(self.handle())));
        Ok(Response::new(Responses { stream, header: self.inner.header }))
    }
}

/// Hands each client request to the stream actor, waiting for room in its mailbox. The end
/// of the client's side does not end the stream (etcd's `recvLoop` returns nil on EOF and the
/// stream lives until the RPC ends); a broken client stream closes it.
async fn read_requests(mut inbound: Streaming<pb::WatchRequest>, requests: StreamRequests) {
    while let Some(item) = inbound.next().await {
        let Ok(req) = item else {
            requests.close();
            return;
        };
        if requests.forward(req).await.is_err() {
            return;
        }
    }
}

/// The response half, encoded by the Watch service's codec (`wire::WatchCodec`). Owns the
/// stream, which closes when tonic drops it (the RPC ended or the client went away), so no
/// watcher outlives its stream.
pub struct Responses {
    stream: TransportStream,
    header: Header,
}

impl Stream for Responses {
    type Item = Result<OutgoingWatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let header = self.header;
        self.stream.poll_response(cx).map(|r| r.map(|response| Ok(OutgoingWatchResponse { header, response })))
    }
}
