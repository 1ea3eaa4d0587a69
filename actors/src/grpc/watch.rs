//! Owns the gRPC `Watch` service: one bidirectional stream per RPC, mapped onto one
//! `StreamActor` (spec §7): creates, cancels and progress requests go in as messages, and the
//! actor's responses (events, progress, fragments, cancels) come out in its order.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::Addr;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use watchkv::watch::response::WatchResponse;

use super::pb::etcdserverpb as pb;
use super::{convert, GrpcApi};
use crate::gateway::json::Header;
use crate::stream_actor::{CancelWatch, CloseStream, CreateWatch, RequestStreamProgress, StreamActor};

/// Responses buffered between the stream actor and HTTP/2; the stream actor's own mailbox is
/// the real buffer.
const SOCKET_BUFFER: usize = 8;

#[tonic::async_trait]
impl pb::watch_server::Watch for GrpcApi {
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<BoxStream<pb::WatchResponse>>, Status> {
        let (tx, rx) = mpsc::channel::<WatchResponse>(SOCKET_BUFFER);
        let stream = self.handle().open_stream_on(&self.streams, Arc::new(tx));
        tokio::spawn(read_requests(request.into_inner(), stream.clone()));
        Ok(Response::new(Box::pin(Responses { responses: rx, header: self.inner.header, stream })))
    }
}

/// Hands each client request to the stream actor, waiting for room in its mailbox. The end
/// of the client's side does not end the stream (etcd's `recvLoop` returns nil on EOF and the
/// stream lives until the RPC ends); a broken client stream closes it.
async fn read_requests(mut inbound: Streaming<pb::WatchRequest>, stream: Addr<StreamActor>) {
    use pb::watch_request::RequestUnion;
    while let Some(item) = inbound.next().await {
        let Ok(req) = item else {
            stream.do_send(CloseStream);
            return;
        };
        let sent = match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => stream.send(CreateWatch(convert::watch_create(c))).await,
            Some(RequestUnion::CancelRequest(c)) => stream.send(CancelWatch(c.watch_id)).await,
            Some(RequestUnion::ProgressRequest(_)) => stream.send(RequestStreamProgress).await,
            // etcd logs and ignores a request with nothing set.
            None => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The response half; closes the stream actor when tonic drops it (the RPC ended or the client
/// went away), so no watcher outlives its stream.
struct Responses {
    responses: mpsc::Receiver<WatchResponse>,
    header: Header,
    stream: Addr<StreamActor>,
}

impl Stream for Responses {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let header = self.header;
        self.responses.poll_recv(cx).map(|r| r.map(|r| Ok(convert::watch_response(header, &r))))
    }
}

impl Drop for Responses {
    fn drop(&mut self) {
        self.stream.do_send(CloseStream);
    }
}
