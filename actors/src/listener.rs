//! Owns the client port: like etcd (which splits one port with cmux), watchkv serves gRPC and
//! the HTTP/JSON gateway on the same address. A connection that opens with HTTP/2's client
//! preface (`PRI * HTTP/2.0...`, what every gRPC client sends first over plain TCP) goes to the
//! gRPC services; any other is HTTP/1.1 for the gateway.
//!
//! With TLS ([`serve_tls`], [`crate::tls`]) every connection first completes the handshake;
//! then ALPN decides: `h2` is gRPC, `http/1.1` the gateway, and a client that named no protocol
//! is told apart by its first bytes as over plain TCP. A client without a valid certificate,
//! when one is required, or one that does not speak TLS, fails the handshake and is closed. The
//! user a verified client certificate names ([`ClientCertUser`]) rides with the connection into
//! every request: gRPC requests' extensions, the gateway's connection data.
//!
//! Each actix worker thread runs both: the gateway through actix-http, and the gRPC services
//! over that worker's HTTP/2 connections ([`grpc::ConnectionServer`]), so gRPC calls and watch
//! streams spread over the workers as HTTP requests do, and a watch stream's actor lives on its
//! connection's thread. Every connection is counted by the server, whichever its protocol: its
//! connection limit applies, and a graceful stop waits for them (gRPC connections are sent
//! GOAWAY once the store starts shutting down, `Handle::shutting_down`).

use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive};
use actix_rt::net::TcpStream;
use actix_server::Server;
use actix_service::{fn_factory, fn_service, map_config, Service, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::middleware::Condition;
use actix_web::{web, App};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

use crate::api::ClientCertUser;
use crate::gateway::{self, Gateway};
use crate::grpc::{self, ClientConnection, GrpcApi};
use crate::thread_name;
use crate::tls::{ServerTls, ALPN_H2};

/// The first bytes of HTTP/2's client connection preface (RFC 9113 §3.4).
const H2_PREFACE_START: &[u8; 3] = b"PRI";

/// The content type of a TLS record that carries a handshake message (RFC 8446 §5.1), the
/// first byte every TLS client sends.
const TLS_HANDSHAKE_RECORD: u8 = 22;

/// How long a new connection may take to send its first bytes (with TLS: to complete the
/// handshake and send its first bytes).
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
    /// How gRPC clients are pinged (etcd's defaults).
    pub grpc_keepalive: grpc::Keepalive,
    /// Calls one gRPC connection may have open at a time (etcd `--max-concurrent-streams`);
    /// `u32::MAX`, etcd's default, is no limit.
    pub max_concurrent_streams: u32,
}

impl Default for PortOptions {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            shutdown_timeout_secs: 5,
            grpc_keepalive: grpc::Keepalive::default(),
            max_concurrent_streams: u32::MAX,
        }
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
    serve_with(listener, gateway, grpc, options, None)
}

/// [`serve`] over TLS: every connection completes the handshake `tls` configures before ALPN
/// (or, without it, the first bytes) picks gRPC or the gateway.
///
/// # Errors
/// The listener cannot be registered with the server.
pub fn serve_tls(
    listener: std::net::TcpListener,
    gateway: Arc<Gateway>,
    grpc: GrpcApi,
    options: PortOptions,
    tls: ServerTls,
) -> io::Result<Server> {
    serve_with(listener, gateway, grpc, options, Some(tls))
}

fn serve_with(
    listener: std::net::TcpListener,
    gateway: Arc<Gateway>,
    grpc: GrpcApi,
    options: PortOptions,
    tls: Option<ServerTls>,
) -> io::Result<Server> {
    let local_addr = listener.local_addr()?;
    // Numbers the workers as they start, for their threads' names.
    let workers_started = Arc::new(AtomicUsize::new(0));
    Ok(Server::build()
        .workers(options.workers.max(1))
        .shutdown_timeout(options.shutdown_timeout_secs)
        .disable_signals()
        .listen("watchkv-client-port", listener, move || {
            let gateway = Arc::clone(&gateway);
            let grpc = grpc.clone();
            let tls = tls.clone();
            let workers_started = Arc::clone(&workers_started);
            fn_factory(move || {
                let index = workers_started.fetch_add(1, Ordering::Relaxed);
                worker_service(Arc::clone(&gateway), grpc.clone(), local_addr, tls.clone(), options, index)
            })
        })?
        .run())
}

/// Builds worker `index`'s connection service, on the worker's thread (which it names): starts
/// the worker's tonic server, then answers each connection by protocol.
async fn worker_service(
    gateway: Arc<Gateway>,
    grpc_api: GrpcApi,
    local_addr: SocketAddr,
    tls: Option<ServerTls>,
    options: PortOptions,
    index: usize,
) -> Result<impl Service<TcpStream, Response = (), Error = ()>, ()> {
    thread_name::name_current_thread(&thread_name::client_port_worker(index));
    let cors = gateway.cors.clone();
    let http = Rc::new(
        http1_service(
            local_addr,
            Some(cors),
            move |cfg| {
                gateway::configure_with(cfg, Arc::clone(&gateway));
                gateway::configure_port_methods(cfg, &["/health", "/version"]);
            },
            web::to(gateway::not_found),
        )
        .await?,
    );

    let grpc_api = grpc_api.with_stream_arbiter(actix_rt::Arbiter::current());
    let grpc = grpc::ConnectionServer::new(&grpc_api)
        .with_keepalive(&options.grpc_keepalive)
        .with_max_concurrent_streams(options.max_concurrent_streams);

    Ok(fn_service(move |stream: TcpStream| {
        let http = Rc::clone(&http);
        let grpc = grpc.clone();
        let tls = tls.clone();
        async move {
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr().ok();
            match accept(tls.as_ref(), stream).await {
                Ok((Protocol::Grpc, io)) => {
                    let user = io.client_cert_user().cloned();
                    let mut connection = ClientConnection::new(grpc::AuthorityFix::new(io));
                    if let Some(user) = user {
                        connection = connection.with_data(user);
                    }
                    // A task of the worker's runtime, as hyper's connections run best; this call
                    // lasts as long, so that the server counts the connection (its connection
                    // limit, and its graceful stop waits for it).
                    let _ = tokio::spawn(grpc.serve(connection)).await;
                    Ok(())
                }
                Ok((Protocol::Http1, io)) => http
                    .call((io, actix_http::Protocol::Http1, peer))
                    .await
                    .map_err(|e| tracing::debug!(error = ?e, "HTTP connection")),
                Err(e) => {
                    tracing::debug!(error = %e, "connection closed before its first request");
                    Ok(())
                }
            }
        }
    }))
}

/// One worker's HTTP/1.1 service: the routes `configure` mounts, behind `cors` if any; any
/// other path is answered by `not_found`.
async fn http1_service(
    local_addr: SocketAddr,
    cors: Option<gateway::Cors>,
    configure: impl Fn(&mut web::ServiceConfig) + 'static,
    not_found: actix_web::Route,
) -> Result<impl Service<(ClientIo, actix_http::Protocol, Option<SocketAddr>), Response = (), Error = DispatchError>, ()>
{
    HttpService::build()
        .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
        .client_request_timeout(Duration::from_secs(5))
        // A client that closes its socket after a watch request must free its watchers: the
        // socket's EOF ends the request, as in Go's server (and so etcd).
        .h1_allow_half_closed(false)
        .local_addr(local_addr)
        // The certificate's user, for handlers (`HttpRequest::conn_data`).
        .on_connect_ext(|io: &ClientIo, data: &mut actix_http::Extensions| {
            if let Some(user) = io.client_cert_user() {
                data.insert(user.clone());
            }
        })
        .finish(map_config(
            App::new()
                .wrap(Condition::new(cors.is_some(), cors.unwrap_or_default()))
                .configure(configure)
                .default_service(not_found),
            |()| AppConfig::default(),
        ))
        .new_service(())
        .await
        .map_err(|e| tracing::error!(error = ?e, "starting the HTTP service"))
}

/// One socket of etcd's metrics port (`--listen-metrics-urls`).
#[derive(Debug)]
pub struct MetricsListener {
    /// The bound socket.
    pub listener: std::net::TcpListener,
    /// For an `https://` URL: the client port's certificate, as etcd uses it there; `None` for
    /// `http://`.
    pub tls: Option<ServerTls>,
}

/// Serves etcd's metrics port on `listeners` until the returned server is stopped: `/health`
/// and `/metrics` ([`gateway::configure_metrics_with`]) over HTTP/1.1, and Go's 404 for any
/// other path, as etcd's (embed/etcd.go `serveMetrics`). An orchestrator's probe and a scraper reach
/// them there while the client port is firewalled or requires client certificates. One worker
/// thread: a probe or a scrape needs no more, and the client port's threads stay the clients'.
/// A TLS client that negotiates only HTTP/2 is closed: the port speaks HTTP/1.1.
///
/// # Errors
/// A listener cannot be registered with the server.
pub fn serve_metrics(
    listeners: Vec<MetricsListener>,
    gateway: Arc<Gateway>,
    options: PortOptions,
) -> io::Result<Server> {
    let mut server = Server::build().workers(1).shutdown_timeout(options.shutdown_timeout_secs).disable_signals();
    for (n, MetricsListener { listener, tls }) in listeners.into_iter().enumerate() {
        let local_addr = listener.local_addr()?;
        let gateway = Arc::clone(&gateway);
        server = server.listen(format!("watchkv-metrics-port-{n}"), listener, move || {
            let gateway = Arc::clone(&gateway);
            let tls = tls.clone();
            fn_factory(move || metrics_service(Arc::clone(&gateway), local_addr, tls.clone()))
        })?;
    }
    Ok(server.run())
}

/// Builds one metrics-port listener's connection service.
async fn metrics_service(
    gateway: Arc<Gateway>,
    local_addr: SocketAddr,
    tls: Option<ServerTls>,
) -> Result<impl Service<TcpStream, Response = (), Error = ()>, ()> {
    thread_name::name_current_thread(thread_name::METRICS_PORT_WORKER);
    // No CORS: etcd's metrics port has none (an `OPTIONS` gets what any other method gets).
    let http = Rc::new(
        http1_service(
            local_addr,
            None,
            move |cfg| {
                gateway::configure_metrics_with(cfg, Arc::clone(&gateway));
                gateway::configure_port_methods(cfg, &["/health"]);
            },
            web::to(gateway::go_not_found),
        )
        .await?,
    );
    Ok(fn_service(move |stream: TcpStream| {
        let http = Rc::clone(&http);
        let tls = tls.clone();
        async move {
            let peer = stream.peer_addr().ok();
            match accept(tls.as_ref(), stream).await {
                Ok((Protocol::Http1, io)) => http
                    .call((io, actix_http::Protocol::Http1, peer))
                    .await
                    .map_err(|e| tracing::debug!(error = ?e, "metrics port: HTTP connection")),
                Ok((Protocol::Grpc, _)) => {
                    tracing::debug!(peer = ?peer, "metrics port: HTTP/2 connection closed");
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(error = %e, "metrics port: connection closed before its first request");
                    Ok(())
                }
            }
        }
    }))
}

/// Accepts a new connection: with `tls`, its handshake ([`accept_tls`]); then tells its
/// protocol.
async fn accept(tls: Option<&ServerTls>, stream: TcpStream) -> io::Result<(Protocol, ClientIo)> {
    match tls {
        None => protocol(&stream).await.map(|protocol| (protocol, ClientIo::Plain(stream))),
        Some(tls) => accept_tls(tls, stream).await,
    }
}

/// Completes the TLS handshake, then tells the protocol: from ALPN, or, when the client named
/// none, from its first bytes (kept to be read again).
async fn accept_tls(tls: &ServerTls, stream: TcpStream) -> io::Result<(Protocol, ClientIo)> {
    let peer = stream.peer_addr().ok();
    tokio::time::timeout(FIRST_BYTES_TIMEOUT, async {
        // A client that does not open with a TLS handshake record (plain HTTP, gRPC without
        // TLS) is closed without an answer, not even an alert, as Go's TLS server closes it.
        let mut record_type = [0u8; 1];
        if stream.peek(&mut record_type).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if record_type[0] != TLS_HANDSHAKE_RECORD {
            tracing::warn!(peer = ?peer, "rejected connection: first record does not look like a TLS handshake");
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a TLS handshake"));
        }
        let mut stream = tls.acceptor().accept(stream).await.inspect_err(|e| {
            // As etcd logs a failed handshake ("rejected connection"): a client without a valid
            // certificate, or one that does not speak TLS.
            tracing::warn!(peer = ?peer, error = %e, "rejected connection: TLS handshake failed");
        })?;
        let (_, session) = stream.get_ref();
        let user = tls.certificate_user(session);
        let alpn = session.alpn_protocol().map(|p| p == ALPN_H2);
        let mut first = BytesMut::new();
        let protocol = match alpn {
            Some(true) => Protocol::Grpc,
            Some(false) => Protocol::Http1,
            None => loop {
                if let Some(protocol) = protocol_of(&first) {
                    break protocol;
                }
                if stream.read_buf(&mut first).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            },
        };
        Ok((protocol, ClientIo::Tls(Box::new(TlsConnection { stream, first, user }))))
    })
    .await
    .map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake and request within the first-bytes timeout")
    })?
}

/// The protocol a connection's first bytes show, or `None` while they are a prefix of HTTP/2's
/// preface too short to tell.
fn protocol_of(first: &[u8]) -> Option<Protocol> {
    let n = first.len().min(H2_PREFACE_START.len());
    if first[..n] != H2_PREFACE_START[..n] {
        Some(Protocol::Http1)
    } else if n == H2_PREFACE_START.len() {
        Some(Protocol::Grpc)
    } else {
        None
    }
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
            if let Some(protocol) = protocol_of(&buf[..n]) {
                return Ok(protocol);
            }
            // A prefix of the preface so far: `peek` would return at once, so wait a moment
            // for the rest instead of spinning.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request within the first-bytes timeout"))?
}

/// A client connection as the listener hands it on: plain TCP, or TLS after its handshake.
enum ClientIo {
    Plain(TcpStream),
    Tls(Box<TlsConnection>),
}

/// A TLS connection after its handshake.
struct TlsConnection {
    stream: TlsStream<TcpStream>,
    /// Bytes read to tell the protocol of a client that named none in ALPN: read again first.
    first: BytesMut,
    user: Option<ClientCertUser>,
}

impl ClientIo {
    /// The user the connection's verified client certificate names.
    fn client_cert_user(&self) -> Option<&ClientCertUser> {
        match self {
            ClientIo::Plain(_) => None,
            ClientIo::Tls(tls) => tls.user.as_ref(),
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ClientIo::Tls(tls) if !tls.first.is_empty() => {
                let n = tls.first.len().min(buf.remaining());
                buf.put_slice(&tls.first[..n]);
                tls.first.advance(n);
                Poll::Ready(Ok(()))
            }
            ClientIo::Tls(tls) => Pin::new(&mut tls.stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ClientIo::Tls(tls) => Pin::new(&mut tls.stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            ClientIo::Tls(tls) => Pin::new(&mut tls.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientIo::Plain(stream) => stream.is_write_vectored(),
            ClientIo::Tls(tls) => tls.stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ClientIo::Tls(tls) => Pin::new(&mut tls.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ClientIo::Tls(tls) => Pin::new(&mut tls.stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::tls::{self, TlsFiles};

    /// Writes a CA, a server certificate for 127.0.0.1 and a client certificate for "alice"
    /// into `dir`; returns the server's TLS (client certificates required) and a client
    /// configuration presenting alice's certificate.
    fn certificates(dir: &Path) -> (ServerTls, impl Fn(&[&[u8]]) -> Arc<rustls::ClientConfig>) {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str, sans: Vec<String>, usage| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            (params.signed_by(&key, &ca).expect("certificate"), key)
        };
        let (server, server_key) = leaf("server", vec!["127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth);
        let (alice, alice_key) = leaf("alice", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let files = TlsFiles {
            trusted_ca_file: Some(write("ca.pem", ca_cert.pem())),
            client_cert_auth: true,
            ..TlsFiles::new(write("server.pem", server.pem()), write("server-key.pem", server_key.serialize_pem()))
        };
        let tls = ServerTls::from_files(&files).expect("server TLS");
        let ca_der = ca_cert.der().clone();
        let alice_der = alice.der().clone();
        let alice_key_der = alice_key.serialize_der();
        let client = move |alpn: &[&[u8]]| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca_der.clone()).expect("trust the CA");
            let mut config = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    vec![alice_der.clone()],
                    PrivateKeyDer::try_from(alice_key_der.clone()).expect("alice's key"),
                )
                .expect("client certificate");
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        };
        (tls, client)
    }

    /// Accepts one connection from a client with `config` that sends `first_bytes`; returns
    /// what the listener made of it and the bytes it reads.
    async fn accept_one(
        tls: &ServerTls,
        config: Arc<rustls::ClientConfig>,
        first_bytes: &'static [u8],
    ) -> (Protocol, ClientIo) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let server_name = ServerName::try_from("127.0.0.1").expect("server name");
            let mut stream =
                tokio_rustls::TlsConnector::from(config).connect(server_name, tcp).await.expect("handshake");
            stream.write_all(first_bytes).await.expect("write");
            stream.flush().await.expect("flush");
            // Kept open until the server has looked at it.
            stream
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let accepted = accept_tls(tls, stream).await.expect("TLS accept");
        drop(client.await.expect("client"));
        accepted
    }

    #[tokio::test]
    async fn a_grpc_connection_carries_its_certificate_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tls, client) = certificates(dir.path());
        let (protocol, io) = accept_one(&tls, client(&[ALPN_H2]), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        assert_eq!(protocol, Protocol::Grpc);
        assert_eq!(io.client_cert_user(), Some(&ClientCertUser("alice".into())));
    }

    #[tokio::test]
    async fn alpn_http1_is_the_gateway() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tls, client) = certificates(dir.path());
        let (protocol, io) = accept_one(&tls, client(&[ALPN_H2, tls::ALPN_HTTP1]), b"GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(protocol, Protocol::Http1, "the server prefers http/1.1 when the client offers both");
        assert_eq!(io.client_cert_user(), Some(&ClientCertUser("alice".into())));
    }

    #[tokio::test]
    async fn without_alpn_the_first_bytes_decide_and_are_read_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tls, client) = certificates(dir.path());
        for (first, expected) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], Protocol::Grpc),
            (&b"GET /health HTTP/1.1\r\n\r\n"[..], Protocol::Http1),
        ] {
            let (protocol, mut io) = accept_one(&tls, client(&[]), first).await;
            assert_eq!(protocol, expected);
            let mut read = vec![0u8; first.len()];
            io.read_exact(&mut read).await.expect("read the first bytes again");
            assert_eq!(read, first, "the protocol's parser sees every byte the client sent");
        }
    }
}
