//! Owns a watch stream as a transport holds it: the responses to write to the client, the
//! requests forwarded to its `StreamActor`, and the close when the transport lets go of it
//! (the client went away or the call ended), so that no watcher outlives its connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix::Addr;
use actix_rt::ArbiterHandle;
use futures::Stream;
use watchkv::watch::response::WatchResponse;

use super::pb::etcdserverpb as pb;
use super::{request, ApiError};
use std::sync::Arc;

use super::auth::Auth;
use crate::protocol::{GetStreamStats, RejectWatch, RequestStreamProgress};
use crate::{CancelWatch, CloseStream, CreateWatch, Handle, StreamActor, WatchStream};

/// Responses buffered between the stream actor and the socket. The stream actor's own buffer
/// (`chan_buf_len`) is the real buffer; this one needs to keep the socket busy and to take a
/// whole delivery at once. A delivery carries one response per watcher of the stream that the
/// group commit concerns, and one larger than this queue makes the actor wait for the transport
/// in the middle of it (a boxed push, a wait, a wake-up). With 8, every group commit's delivery
/// to a stream of ten watchers did: 16 took the saturated fan-out from 0.75 to 0.53–0.67 µs of
/// server CPU per event on ten keys and 0.15–0.16 to 0.13–0.15 on one, with the same peak
/// memory (32 saved a little more CPU for 6–9 MiB more: docs/benchmarks.md).
pub const SOCKET_BUFFER: usize = 16;

/// A watch stream opened for one client call: read its responses with
/// [`poll_response`](Self::poll_response), send its requests through [`requests`](Self::requests).
/// Dropping it closes the stream and cancels its watchers (the [`WatchStream`] inside does).
#[derive(Debug)]
pub struct TransportStream {
    inner: WatchStream,
    credentials: Credentials,
}

/// What a stream's client presented when it opened the stream: its token and its TLS client
/// certificate's user. Each create is checked with them (etcd: v3rpc/watch.go
/// `isWatchPermitted`), so a token that expires meanwhile stops new watches.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The token (gRPC metadata, the gateway's `Authorization` header).
    pub token: Option<String>,
    /// The client certificate's common name.
    pub cert_user: Option<String>,
}

impl TransportStream {
    /// Opens a stream whose actor lives on the caller's arbiter (the gateway's HTTP worker).
    #[must_use]
    pub fn open(handle: &Handle) -> Self {
        Self::wrap(handle.watch_stream_with(SOCKET_BUFFER, None))
    }

    /// Opens a stream whose actor lives on `arbiter`: for transports whose tasks run outside
    /// an actix arbiter (tonic spawns its connections with `tokio::spawn`).
    #[must_use]
    pub fn open_on(handle: &Handle, arbiter: &ArbiterHandle) -> Self {
        Self::wrap(handle.watch_stream_with(SOCKET_BUFFER, Some(arbiter)))
    }

    fn wrap(inner: WatchStream) -> Self {
        Self { inner, credentials: Credentials::default() }
    }

    /// Sets what the client presented; creates are checked against it.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Where the transport's reader sends the client's requests.
    #[must_use]
    pub fn requests(&self, handle: &Handle) -> StreamRequests {
        StreamRequests {
            actor: self.inner.addr().clone(),
            auth: Arc::clone(handle.auth()),
            credentials: self.credentials.clone(),
        }
    }

    /// The next response, in the stream's order; `None` once the stream has ended.
    pub fn poll_response(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// The request side of a [`TransportStream`].
#[derive(Debug, Clone)]
pub struct StreamRequests {
    actor: Addr<StreamActor>,
    auth: Arc<Auth>,
    credentials: Credentials,
}

impl StreamRequests {
    /// Hands one client request to the stream actor and waits until the stream has taken it:
    /// for room in its mailbox, for a create from history one of the runtime's
    /// [`crate::CREATES_IN_FLIGHT`] slots (and the requests before it theirs), for a progress
    /// request one of the stream's [`crate::PROGRESS_REQUESTS_IN_FLIGHT`] slots. A
    /// request with nothing set is ignored, as etcd logs and ignores it (etcd: v3rpc/watch.go
    /// `recvLoop`).
    ///
    /// # Errors
    /// [`ApiError::StreamClosed`] when the stream has already ended.
    pub async fn forward(&self, req: pb::WatchRequest) -> Result<(), ApiError> {
        use pb::watch_request::RequestUnion;
        let sent = match req.request_union {
            // A negative start revision is refused before the permission check, as etcd's
            // `recvLoop` refuses it first (the stream actor answers it).
            Some(RequestUnion::CreateRequest(c)) if c.start_revision < 0 => {
                self.actor.send(CreateWatch(request::watch_create(c))).await
            }
            Some(RequestUnion::CreateRequest(c)) => match self.permitted(&c) {
                Ok(()) => self.actor.send(CreateWatch(request::watch_create(c))).await,
                // etcd answers a failed check with a created+canceled response whose reason is
                // the gRPC error's text (etcd 3.4: v3rpc/watch.go `recvLoop`).
                Err(e) => {
                    let reason = format!("rpc error: code = {:?} desc = {e}", e.code());
                    self.actor.send(RejectWatch(reason)).await
                }
            },
            Some(RequestUnion::CancelRequest(c)) => self.actor.send(CancelWatch(c.watch_id)).await,
            Some(RequestUnion::ProgressRequest(_)) => self.actor.send(RequestStreamProgress).await,
            None => Ok(()),
        };
        sent.map_err(|_| ApiError::StreamClosed)
    }

    /// Returns once the stream actor has handled every request forwarded before this call and
    /// queued their responses (a create's `created` included, which waits for the store), so
    /// that what a transport writes next comes after them.
    pub async fn settled(&self) {
        // Any message will do: `forward` waits until each request is taken, the actor takes its
        // mailbox in order, and a create keeps it until its created response is queued.
        let _ = self.actor.send(GetStreamStats).await;
    }

    /// Closes the stream now (the client's side broke), before the transport drops it.
    pub fn close(&self) {
        self.actor.do_send(CloseStream);
    }

    /// Whether the stream's client may watch what `c` asks for: read permission on the range.
    fn permitted(&self, c: &pb::WatchCreateRequest) -> Result<(), ApiError> {
        if !self.auth.is_enabled() {
            return Ok(());
        }
        let caller = self.auth.caller(self.credentials.token.as_deref(), self.credentials.cert_user.as_deref())?;
        // etcd checks an empty key as "\0", the smallest key, which is what it watches from
        // (etcd: v3rpc/watch.go `recvLoop` rewrites it before `isWatchPermitted`), so a grant
        // from "\0" (etcdctl's `--prefix ""`) covers a watch of every key.
        let key: &[u8] = if c.key.is_empty() { b"\0" } else { &c.key };
        self.auth.check_read(&caller, &watchkv::KeyRange::from_wire(key, &c.range_end))
    }
}
