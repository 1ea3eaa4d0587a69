//! Owns the client port: like etcd (which splits one port with cmux), watchkv serves gRPC and
//! the HTTP/JSON gateway on the same address. A connection that opens with HTTP/2's client
//! preface (`PRI * HTTP/2.0...`, what every gRPC client sends first over plain TCP) goes to the
//! gRPC services; any other is HTTP/1.1 for the gateway.
//!
//! Each actix worker thread runs both: the gateway through actix-http, and its own tonic server
//! fed with that worker's HTTP/2 connections, so gRPC calls and watch streams spread over the
//! workers as HTTP requests do, and a watch stream's actor lives on its connection's thread.

use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive};
use actix_rt::net::TcpStream;
use actix_server::Server;
use actix_service::{fn_factory, fn_service, map_config, Service, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::App;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::gateway::{self, Gateway};
use crate::grpc::{self, GrpcApi};

/// The first bytes of HTTP/2's client connection preface (RFC 9113 §3.4).
const H2_PREFACE_START: &[u8; 3] = b"PRI";

/// How long a new connection may take to send its first bytes.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// Valid [`PortOptions::workers`] counts: at least one; the top only catches a typo, far above
/// any core count worth a thread each.
pub const WORKERS_RANGE: RangeInclusive<usize> = 1..=1024;

/// How the client port is served.
#[derive(Debug, Clone, Copy)]
pub struct PortOptions {
    /// Worker threads; each serves both protocols. Default: one per core; range
    /// [`WORKERS_RANGE`] (0 is taken as 1).
    pub workers: usize,
    /// Seconds to let open connections finish when the server stops.
    pub shutdown_timeout_secs: u64,
}

impl Default for PortOptions {
    fn default() -> Self {
        Self { workers: std::thread::available_parallelism().map_or(1, usize::from), shutdown_timeout_secs: 5 }
    }
}

/// Which protocol a connection speaks, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    Http1,
}

/// Serves the gateway and the gRPC services on `listener` until the returned server is stopped.
/// Signals are left to the caller (`ServerHandle::stop`).
///
/// # Errors
/// The listener cannot be registered with the server.
pub fn serve(
    listener: std::net::TcpListener,
    gateway: Arc<Gateway>,
    grpc: GrpcApi,
    options: PortOptions,
) -> io::Result<Server> {
    let local_addr = listener.local_addr()?;
    Ok(Server::build()
        .workers(options.workers.max(1))
        .shutdown_timeout(options.shutdown_timeout_secs)
        .disable_signals()
        .listen("watchkv-client-port", listener, move || {
            let gateway = Arc::clone(&gateway);
            let grpc = grpc.clone();
            fn_factory(move || worker_service(Arc::clone(&gateway), grpc.clone(), local_addr))
        })?
        .run())
}

/// Builds one worker's connection service: starts the worker's tonic server, then answers each
/// connection by protocol.
async fn worker_service(
    gateway: Arc<Gateway>,
    grpc_api: GrpcApi,
    local_addr: SocketAddr,
) -> Result<impl Service<TcpStream, Response = (), Error = ()>, ()> {
    let http = HttpService::build()
        .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
        .client_request_timeout(Duration::from_secs(5))
        // A client that closes its socket after a watch request must free its watchers: the
        // socket's EOF ends the request, as in Go's server (and so etcd).
        .h1_allow_half_closed(false)
        .local_addr(local_addr)
        .finish(map_config(App::new().configure(move |cfg| gateway::configure_with(cfg, Arc::clone(&gateway))), |()| {
            AppConfig::default()
        }))
        .tcp()
        .new_service(())
        .await
        .map_err(|e| tracing::error!(error = ?e, "starting the HTTP service"))?;
    let http = Rc::new(http);

    let grpc_api = grpc_api.with_stream_arbiter(actix_rt::Arbiter::current());
    let (grpc_tx, grpc_rx) = mpsc::unbounded_channel::<grpc::AuthorityFix<TcpStream>>();
    let incoming = UnboundedReceiverStream::new(grpc_rx);
    actix_rt::spawn(grpc::serve_incoming(grpc_api, incoming));

    Ok(fn_service(move |stream: TcpStream| {
        let http = Rc::clone(&http);
        let grpc_tx = grpc_tx.clone();
        async move {
            let _ = stream.set_nodelay(true);
            match protocol(&stream).await {
                Ok(Protocol::Grpc) => {
                    // Fails only while the worker shuts down; the connection is then dropped.
                    let _ = grpc_tx.send(grpc::AuthorityFix::new(stream));
                    Ok(())
                }
                Ok(Protocol::Http1) => {
                    http.call(stream).await.map_err(|e| tracing::debug!(error = ?e, "HTTP connection"))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connection closed before its first request");
                    Ok(())
                }
            }
        }
    }))
}

/// Peeks at a new connection's first bytes (leaving them for the protocol's own parser).
async fn protocol(stream: &TcpStream) -> io::Result<Protocol> {
    tokio::time::timeout(FIRST_BYTES_TIMEOUT, async {
        let mut buf = [0u8; H2_PREFACE_START.len()];
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if buf[..n] != H2_PREFACE_START[..n] {
                return Ok(Protocol::Http1);
            }
            if n == buf.len() {
                return Ok(Protocol::Grpc);
            }
            // A prefix of the preface so far: `peek` would return at once, so wait a moment
            // for the rest instead of spinning.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request within the first-bytes timeout"))?
}
