//! Owns etcd's gRPC API on tonic: the KV, Watch, Lease, Maintenance, Cluster and Auth services
//! of `etcdserverpb` and the Lock and Election services (`v3lockpb`, `v3electionpb`), served from
//! the same [`Handle`] as the HTTP gateway and through the same API layer ([`crate::api`]:
//! identity, errors, request conversion, auth checks). Methods we do not serve (downgrades)
//! answer `Unimplemented` at once, as does adding a member ([`crate::api::membership`]).
//!
//! [`serve_incoming`] runs the services over connections handed to it one by one; the shared
//! client port serves each of its HTTP/2 connections with a [`ConnectionServer`], with what its
//! requests carry (see [`crate::listener`], [`connection`]). Either way a connection is sent
//! GOAWAY when the store starts shutting down, and ends once its calls in flight have.

mod auth;
mod authority;
pub mod call_metrics;
pub mod connection;
pub(crate) mod convert;
mod election;
pub mod health;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod router;
mod snapshot;
mod watch;
pub mod watch_body;
pub mod wire;

pub use authority::AuthorityFix;
pub use connection::ClientConnection;
pub use router::GrpcRouter;

use std::sync::Arc;

use actix_rt::{Arbiter, ArbiterHandle};
use futures::Stream;
use tonic::service::Routes;
use tonic::{Request, Status};
use watchkv::config::GRPC_OVERHEAD_BYTES;

use crate::api::auth::Caller;
/// etcd's messages and service traits, where gRPC clients have always found them.
pub use crate::api::pb;
use crate::api::{ApiError, Coordination, Header};
use crate::Handle;

/// How the server pings its gRPC clients to find connections that are gone (a client that
/// vanished without closing its socket holds its watchers until then), as etcd's flags set it
/// (etcd: embed/etcd.go, `grpc.KeepaliveParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Without a frame from the client for this long, the server pings it (etcd
    /// `--grpc-keepalive-interval`, 2 h). Zero: no pings.
    pub interval: std::time::Duration,
    /// A ping unanswered for this long closes the connection (etcd `--grpc-keepalive-timeout`,
    /// 20 s). Zero: no pings.
    pub timeout: std::time::Duration,
}

impl Default for Keepalive {
    /// etcd's defaults: a ping after 2 h of silence, 20 s for its answer.
    fn default() -> Self {
        Self { interval: std::time::Duration::from_secs(2 * 3600), timeout: std::time::Duration::from_secs(20) }
    }
}

impl Keepalive {
    /// The interval and timeout, if the server pings at all: as in etcd, only when both are
    /// above zero.
    #[must_use]
    pub fn pings(&self) -> Option<(std::time::Duration, std::time::Duration)> {
        (!self.interval.is_zero() && !self.timeout.is_zero()).then_some((self.interval, self.timeout))
    }
}

/// What the gRPC services need: the store handle and the identity they report.
#[derive(Clone)]
pub struct GrpcApi {
    inner: Arc<Inner>,
    /// Where watch streams' actors live (tonic's tasks run outside any arbiter).
    streams: ArbiterHandle,
}

struct Inner {
    handle: Handle,
    header: Header,
    max_request_bytes: usize,
    client_urls: Vec<String>,
    /// Mirror mode: where writes, lease calls and linearizable reads' quorum go.
    upstream: Option<crate::forward::Upstream>,
    /// Calls started and handled, for `/metrics` ([`call_metrics`]).
    calls: Arc<call_metrics::CallCounters>,
}

impl GrpcApi {
    /// Returns the services over `handle`, reporting the identity `header` (the gateway's, when
    /// both serve one store: usually [`Header::default`]).
    /// `client_urls` is what `MemberList` reports as this member's client URLs. Watch streams'
    /// actors start on the calling arbiter; see [`GrpcApi::with_stream_arbiter`].
    ///
    /// # Panics
    /// When called outside an actix arbiter (as `Actor::start` would).
    #[must_use]
    pub fn new(handle: Handle, header: Header, max_request_bytes: usize, client_urls: Vec<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                handle,
                header,
                max_request_bytes,
                client_urls,
                upstream: None,
                calls: Arc::default(),
            }),
            streams: Arbiter::current(),
        }
    }

    /// Returns a copy that forwards writes, lease calls and linearizable reads' quorum to
    /// `upstream` (mirror mode, [`crate::forward`]).
    #[must_use]
    pub fn with_upstream(&self, upstream: crate::forward::Upstream) -> Self {
        let inner = Inner {
            handle: self.inner.handle.clone(),
            header: self.inner.header,
            max_request_bytes: self.inner.max_request_bytes,
            client_urls: self.inner.client_urls.clone(),
            upstream: Some(upstream),
            calls: Arc::clone(&self.inner.calls),
        };
        Self { inner: Arc::new(inner), streams: self.streams.clone() }
    }

    /// Returns every service, ready for `tonic::transport::Server::add_routes`. Incoming
    /// messages may be `max_request_bytes` plus etcd's framing allowance; outgoing ones are
    /// unlimited, as in etcd. `Watch` is [`watch_body::WatchService`], as on the client port.
    #[must_use]
    pub fn routes(&self) -> Routes {
        self.router().into_routes()
    }

    /// Every service behind one dispatcher by service name, with the limits of
    /// [`routes`](Self::routes): what the client port serves ([`GrpcRouter`]).
    #[must_use]
    pub fn router(&self) -> GrpcRouter {
        GrpcRouter::new(self, self.max_decoding_bytes())
    }

    /// The largest incoming message: `max_request_bytes` plus etcd's framing allowance.
    fn max_decoding_bytes(&self) -> usize {
        self.inner.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES)
    }

    /// The counters of the calls the client port's routers take ([`Self::router`]; an
    /// embedder's tonic server built from [`Self::routes`] does not count), for `/metrics`
    /// (`Gateway::grpc_calls`).
    #[must_use]
    pub fn call_counters(&self) -> Arc<call_metrics::CallCounters> {
        Arc::clone(&self.inner.calls)
    }

    /// Returns a copy whose watch streams' actors start on `arbiter` (the server gives each
    /// worker thread its own, so a stream's actor lives beside its connection).
    #[must_use]
    pub fn with_stream_arbiter(&self, arbiter: ArbiterHandle) -> Self {
        Self { inner: Arc::clone(&self.inner), streams: arbiter }
    }

    fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// Mirror mode's upstream, if this is a mirror.
    fn upstream(&self) -> Option<&crate::forward::Upstream> {
        self.inner.upstream.as_ref()
    }

    fn header(&self, revision: i64) -> pb::etcdserverpb::ResponseHeader {
        self.inner.header.at(revision)
    }

    /// The caller of `request`: its token (metadata `token`, or `authorization` as etcd's
    /// gateway forwards it) checked against the auth store, else the TLS client certificate's
    /// common name when the connection had one.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Ok(self.api_caller(request)?)
    }

    /// [`Self::caller`] with the API layer's error.
    fn api_caller<T>(&self, request: &Request<T>) -> Result<Caller, ApiError> {
        let meta = request.metadata();
        let token = meta.get("token").or_else(|| meta.get("authorization")).and_then(|v| v.to_str().ok());
        let cert_user = request.extensions().get::<crate::api::ClientCertUser>().map(|u| u.0.as_str());
        self.handle().auth().caller(token, cert_user)
    }

    /// The caller of a Lock or Election call, whose refusal (a bad token) comes back as etcd's
    /// recipe reports it: its text with code `Unknown` ([`ApiError::into_relayed`]).
    fn coordination_caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Ok(self.api_caller(request).map_err(ApiError::into_relayed)?)
    }

    /// The Lock and Election services' calls, their watch streams' actors where this API's are;
    /// on a mirror, forwarding to upstream.
    fn coordination(&self) -> Coordination {
        Coordination::new(self.inner.handle.clone(), Some(self.streams.clone()))
            .with_upstream(self.inner.upstream.clone())
    }

    /// etcd refuses a write whose raft entry exceeds `max-request-bytes` before it is proposed
    /// (`ErrGRPCRequestTooLarge`, [`crate::api::request::write_fits`]); the gRPC limit alone
    /// lets `GRPC_OVERHEAD_BYTES` more through.
    fn check_size(&self, msg: &impl prost::Message, caller: &crate::api::auth::Caller) -> Result<(), Status> {
        let auth_bytes = self.handle().auth().raft_header_bytes(caller);
        if !crate::api::request::write_fits(msg.encoded_len(), self.inner.max_request_bytes, auth_bytes) {
            return Err(ApiError::from(watchkv::Error::RequestTooLarge).into());
        }
        Ok(())
    }
}

/// Data h2 may hold for one stream beyond what the socket has taken (hyper's
/// `max_send_buf_size`; its default is 400 KiB). h2 otherwise queues a stream's data up to the
/// client's flow-control window, which clients open wide (megabytes per stream): with a client
/// that reads slower than the server writes, that is where a saturated fan-out's memory went
/// (240 MiB for 100 streams). With this bound a full socket stops the stream's encoder, its
/// response queue and then its actor, and the watchers become victims, as the stream's buffer
/// (docs/design.md, "Backpressure and batching") intends.
pub const STREAM_SEND_BUFFER_BYTES: usize = 64 * 1024;

/// How long a new connection may take to send HTTP/2's preface and first frame before it is
/// closed (grpc-go's `ConnectionTimeout` does the same, after 120 s): a socket that sent `PRI`
/// and stopped would otherwise hold a descriptor and a connection slot forever.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the gRPC services over `incoming` connections until it ends: one HTTP/2 connection
/// (hyper, with [`STREAM_SEND_BUFFER_BYTES`] per stream) per item, on the caller's runtime;
/// watch streams' actors start on the caller's arbiter.
pub async fn serve_incoming<S, IO>(api: GrpcApi, incoming: S)
where
    S: Stream<Item = IO> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::StreamExt;
    serve_connections(api, incoming.map(ClientConnection::new)).await;
}

/// [`serve_incoming`] over connections that carry values into their requests' extensions (see
/// [`connection`]).
pub async fn serve_connections<S, IO>(api: GrpcApi, incoming: S)
where
    S: Stream<Item = ClientConnection<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::StreamExt;

    let server = ConnectionServer::new(&api);
    let mut incoming = std::pin::pin!(incoming);
    while let Some(connection) = incoming.next().await {
        tokio::spawn(server.clone().serve(connection));
    }
}

/// Serves gRPC connections one at a time, each until it ends ([`ConnectionServer::serve`]):
/// what [`serve_connections`] runs for each connection, and the client port
/// ([`crate::listener`]) inside each connection's own task, so that the server's graceful stop
/// waits for it.
#[derive(Clone)]
pub struct ConnectionServer {
    router: GrpcRouter,
    builder: hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
    shutting_down: tokio::sync::watch::Receiver<bool>,
}

impl ConnectionServer {
    /// Returns a server of `api`'s services: one HTTP/2 connection (hyper, with
    /// [`STREAM_SEND_BUFFER_BYTES`] per stream) per call.
    #[must_use]
    pub fn new(api: &GrpcApi) -> Self {
        use hyper_util::rt::{TokioExecutor, TokioTimer};

        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            // grpc-go (etcd) sends no `date` header; hyper's default would add one to every
            // response, for both sides to encode and decode.
            .auto_date_header(false)
            .max_send_buf_size(STREAM_SEND_BUFFER_BYTES);
        let server = Self { router: api.router(), builder, shutting_down: api.handle().shutting_down() };
        // Watch and keep-alive streams are long-lived; etcd allows any number per connection.
        server.with_keepalive(&Keepalive::default()).with_max_concurrent_streams(u32::MAX)
    }

    /// Lets each client open at most `streams` calls at a time on one connection (etcd's
    /// `--max-concurrent-streams`), advertised in the server's settings as grpc-go advertises it;
    /// `u32::MAX`, etcd's default, is no limit.
    #[must_use]
    pub fn with_max_concurrent_streams(mut self, streams: u32) -> Self {
        self.builder.max_concurrent_streams(Some(streams));
        self
    }

    /// Pings each client as `keepalive` says, closing a connection whose client does not
    /// answer (etcd's `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`).
    #[must_use]
    pub fn with_keepalive(mut self, keepalive: &Keepalive) -> Self {
        match keepalive.pings() {
            Some((interval, timeout)) => self.builder.keep_alive_interval(Some(interval)).keep_alive_timeout(timeout),
            None => self.builder.keep_alive_interval(None),
        };
        self
    }

    /// Serves `connection` until it ends. When the store starts shutting down
    /// ([`Handle::shutting_down`]), the client is sent GOAWAY: it opens no new call on this
    /// connection (grpc-go and tonic reconnect, or retry a refused call elsewhere) while the
    /// calls in flight finish, and the connection closes once they have (etcd: embed/etcd.go
    /// `stopServers`, grpc-go `GracefulStop`). Watch streams end as the store shuts down; a
    /// call its client keeps open (a lease keep-alive stream) holds the connection until the
    /// server's shutdown timeout.
    pub async fn serve<IO>(self, connection: ClientConnection<IO>)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use hyper_util::rt::TokioIo;
        use hyper_util::service::TowerToHyperService;

        let Self { router, builder, mut shutting_down } = self;
        let ClientConnection { io, data } = connection;
        let io = connection::HandshakeWatch::new(io);
        let handshook = io.handshook();
        let service = connection::WithConnectionData::new(TowerToHyperService::new(router), data);
        let mut served = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
        let stop = async {
            // A handle dropped without a shutdown (an embedder's) never asks connections to go.
            if shutting_down.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        // Runs through the shutdown too: a connection still in its handshake cannot be sent
        // GOAWAY (hyper closes it only once the handshake is done).
        let mut handshake_deadline = std::pin::pin!(async {
            tokio::time::sleep(HANDSHAKE_TIMEOUT).await;
            if handshook.load(std::sync::atomic::Ordering::Acquire) {
                std::future::pending::<()>().await;
            }
        });
        let ended = tokio::select! {
            biased;
            ended = served.as_mut() => Some(ended),
            () = stop => None,
            () = handshake_deadline.as_mut() => {
                tracing::debug!("closing a gRPC connection whose client sent no HTTP/2 handshake");
                return;
            }
        };
        let ended = match ended {
            Some(ended) => ended,
            None => {
                served.as_mut().graceful_shutdown();
                tokio::select! {
                    biased;
                    ended = served.as_mut() => ended,
                    () = handshake_deadline => return,
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "gRPC connection ended with an error");
        }
    }
}

/// A store error as etcd's gRPC status, from the API layer's error table.
fn status(e: watchkv::Error) -> Status {
    ApiError::from(e).into()
}
