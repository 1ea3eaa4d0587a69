//! Owns the HTTP/JSON gateway: etcd's grpc-gateway routes (docs/etcd-semantics.md §8) on
//! actix-web, mountable under any prefix of a host service with
//! `App::configure(gateway::configure(handle))`. Unary routes answer one JSON body;
//! `/v3/watch`, `/v3/lease/keepalive`, `/v3/election/observe` and `/v3/maintenance/snapshot` stream. Requests are decoded into etcd's messages
//! ([`decode`]) and converted by the API layer as gRPC's are; responses are encoded by
//! [`encode`]; errors come from the API layer's table.

mod coordination;
mod cors;
pub mod decode;
pub mod encode;
mod json_stream;
mod metrics;
mod snapshot;
mod watch;
mod websocket;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{guard, web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use watchkv::config::{DEFAULT_MAX_REQUEST_BYTES, GRPC_OVERHEAD_BYTES};
use watchkv::Error;

use crate::api::auth::Caller;
use crate::api::auth_service::AuthService;
use crate::api::membership::{self, MemberChange};
use crate::api::pb::etcdserverpb as pb;
use crate::api::{request, ApiError, Header};
use crate::forward;
use crate::protocol::Alarm;
use crate::Handle;
pub use cors::Cors;
use decode::GatewayMessage;

/// What the gateway needs: the store handle and the identity it reports.
#[derive(Clone)]
pub struct Gateway {
    /// The running store.
    pub handle: Handle,
    /// Identity in response headers.
    pub header: Header,
    /// Largest request body accepted (etcd `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// The client URLs `/v3/cluster/member/list` reports for this member (etcd
    /// `--advertise-client-urls`), as the gRPC `Cluster` service does.
    pub client_urls: Vec<String>,
    /// Mirror mode: where writes, lease calls and linearizable reads' quorum go
    /// ([`crate::forward`]); `None` on a normal server.
    pub upstream: Option<crate::forward::Upstream>,
    /// The origins a browser page may call the gateway from (etcd `--cors`; default every
    /// origin, as etcd's). The server's client port applies it ([`crate::listener`]); an
    /// embedder wraps its `App` with it (`App::new().wrap(gw.cors.clone())`).
    pub cors: Cors,
    /// The gRPC services' call counters, which `/metrics` reports as etcd does
    /// (`grpc_server_started_total`, `grpc_server_handled_total`): the binary sets them from its
    /// [`crate::grpc::GrpcApi::call_counters`]; `None` reports none.
    pub grpc_calls: Option<Arc<crate::grpc::call_metrics::CallCounters>>,
    started: Instant,
}

impl Gateway {
    /// Refuses a decoded request whose protobuf is larger than gRPC's receive limit
    /// (`max_request_bytes` plus `GRPC_OVERHEAD_BYTES`) with grpc-go's `ResourceExhausted`, as
    /// etcd's gateway passes on what etcd's gRPC server answered it.
    fn check_receive_limit(&self, msg: &impl prost::Message) -> Result<(), ApiError> {
        let limit = self.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES);
        let found = msg.encoded_len();
        if found > limit {
            return Err(ApiError::MessageTooLarge { found, limit });
        }
        Ok(())
    }

    /// The largest JSON body read (and the largest `/v3/watch` request object): base64 and
    /// JSON's names and quoting make a request's JSON several times its protobuf, and etcd's
    /// gateway reads a body whole and leaves the limit to gRPC, so four times
    /// `max_request_bytes` plus gRPC's framing allowance; the decoded request then meets the
    /// same limits as over gRPC ([`message`], [`write_message`]).
    fn max_json_bytes(&self) -> usize {
        self.max_request_bytes.saturating_mul(4).saturating_add(GRPC_OVERHEAD_BYTES)
    }

    /// Returns a gateway over `handle` reporting the default identity ([`Header::default`])
    /// and accepting requests up to etcd's default size.
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        Self {
            handle,
            header: Header::default(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            client_urls: Vec::new(),
            upstream: None,
            cors: Cors::default(),
            grpc_calls: None,
            started: Instant::now(),
        }
    }
}

/// Returns a function for `App::configure` / `Scope::configure` that mounts every route.
///
/// Serve it with [`http_server`] (or an `HttpServer` with `h1_allow_half_closed(false)`): a
/// watch client that ends its request body and then goes away is otherwise never noticed
/// while nothing is written to it, and its stream and watchers live on (etcd's Go server
/// cancels the request on the EOF).
pub fn configure(handle: Handle) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let gateway = Arc::new(Gateway::new(handle));
    move |cfg: &mut web::ServiceConfig| configure_with(cfg, Arc::clone(&gateway))
}

/// `HttpServer::new(factory)` set up as the gateway needs it: a client that closes its socket
/// after its watch request frees its watchers, because the socket's EOF ends the request (as in
/// Go's server, and so in etcd). An embedder that builds its own `HttpServer` must set
/// `h1_allow_half_closed(false)` itself; this helper cannot forget it.
///
/// ```no_run
/// use actix_web::{web, App, HttpResponse};
/// use watchkv_actors::{gateway, ActorsConfig};
///
/// # async fn run() -> std::io::Result<()> {
/// let handle = watchkv_actors::start(ActorsConfig::new("./my.data")).await.map_err(std::io::Error::other)?;
/// let store = handle.clone();
/// gateway::http_server(move || {
///     App::new()
///         .route("/hello", web::get().to(|| async { HttpResponse::Ok().body("hello") }))
///         .service(web::scope("/kv").configure(gateway::configure(store.clone())))
/// })
/// .bind("127.0.0.1:8080")?
/// .run()
/// .await?;
/// handle.shutdown().await.map_err(std::io::Error::other)
/// # }
/// ```
pub fn http_server<F, I, S, B>(factory: F) -> actix_web::HttpServer<F, I, S, B>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_service::ServiceFactory<actix_http::Request, Config = actix_web::dev::AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>> + 'static,
    <S::Service as actix_service::Service<actix_http::Request>>::Future: 'static,
    S::Service: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    actix_web::HttpServer::new(factory).h1_allow_half_closed(false)
}

/// A gateway route's two paths: under `/v3/`, and under the deprecated `/v3beta/`, where etcd
/// 3.4 serves every route as well (removed in etcd 3.5).
fn v3(route: &str) -> [String; 2] {
    [format!("/v3/{route}"), format!("/v3beta/{route}")]
}

/// Mounts every route for an already configured [`Gateway`]. Each `/v3/` path (and its
/// `/v3beta/` alias) is a resource that takes `POST` only (and a WebSocket upgrade where etcd's
/// gateway takes one), so another method gets 405 Method Not Allowed, as from etcd
/// ([`v3_resource`]); `/health`, `/version` and `/metrics` take `GET`.
pub fn configure_with(cfg: &mut web::ServiceConfig, gateway: Arc<Gateway>) {
    cfg.app_data(web::Data::from(gateway))
        .service(v3_resource("kv/range").route(web::post().to(timed(range))))
        .service(v3_resource("kv/put").route(web::post().to(timed(put))))
        .service(v3_resource("kv/deleterange").route(web::post().to(timed(delete_range))))
        .service(v3_resource("kv/txn").route(web::post().to(timed(txn))))
        .service(v3_resource("kv/compaction").route(web::post().to(timed(compaction))))
        .service(v3_resource("lease/grant").route(web::post().to(timed(lease_grant))))
        .service(v3_resource("lease/revoke").route(web::post().to(timed(lease_revoke))))
        .service(v3_resource("kv/lease/revoke").route(web::post().to(timed(lease_revoke))))
        .service(
            v3_resource("lease/keepalive").route(web::post().to(timed(lease_keep_alive))).route(
                web::get()
                    .guard(guard::fn_guard(websocket::is_upgrade))
                    .to(|gw, http, payload| websocket::serve(lease_keep_alive, gw, http, payload)),
            ),
        )
        .service(v3_resource("lease/timetolive").route(web::post().to(timed(lease_time_to_live))))
        .service(v3_resource("kv/lease/timetolive").route(web::post().to(timed(lease_time_to_live))))
        .service(v3_resource("lease/leases").route(web::post().to(timed(lease_leases))))
        .service(v3_resource("kv/lease/leases").route(web::post().to(timed(lease_leases))))
        .service(v3_resource("maintenance/status").route(web::post().to(timed(status))))
        .service(v3_resource("cluster/member/list").route(web::post().to(timed(member_list))))
        .service(v3_resource("cluster/member/add").route(web::post().to(timed(member_add))))
        .service(v3_resource("cluster/member/remove").route(web::post().to(timed(member_remove))))
        .service(v3_resource("cluster/member/update").route(web::post().to(timed(member_update))))
        .service(v3_resource("cluster/member/promote").route(web::post().to(timed(member_promote))))
        .service(v3_resource("maintenance/transfer-leadership").route(web::post().to(timed(move_leader))))
        // etcd's gateway maps Hash and HashKV both to /v3/maintenance/hash, where Hash wins;
        // /v3/maintenance/hashkv reaches HashKV.
        .service(v3_resource("maintenance/alarm").route(web::post().to(timed(alarm))))
        .service(v3_resource("maintenance/defragment").route(web::post().to(timed(defragment))))
        .service(v3_resource("maintenance/hash").route(web::post().to(timed(hash))))
        .service(v3_resource("maintenance/hashkv").route(web::post().to(timed(hash_kv))))
        .service(v3_resource("auth/enable").route(web::post().to(timed(auth_enable))))
        .service(v3_resource("auth/disable").route(web::post().to(timed(auth_disable))))
        .service(v3_resource("auth/status").route(web::post().to(timed(auth_status))))
        .service(v3_resource("auth/authenticate").route(web::post().to(authenticate)))
        .service(v3_resource("auth/user/add").route(web::post().to(timed(user_add))))
        .service(v3_resource("auth/user/get").route(web::post().to(timed(user_get))))
        .service(v3_resource("auth/user/list").route(web::post().to(timed(user_list))))
        .service(v3_resource("auth/user/delete").route(web::post().to(timed(user_delete))))
        .service(v3_resource("auth/user/changepw").route(web::post().to(timed(user_change_password))))
        .service(v3_resource("auth/user/grant").route(web::post().to(timed(user_grant_role))))
        .service(v3_resource("auth/user/revoke").route(web::post().to(timed(user_revoke_role))))
        .service(v3_resource("auth/role/add").route(web::post().to(timed(role_add))))
        .service(v3_resource("auth/role/get").route(web::post().to(timed(role_get))))
        .service(v3_resource("auth/role/list").route(web::post().to(timed(role_list))))
        .service(v3_resource("auth/role/delete").route(web::post().to(timed(role_delete))))
        .service(v3_resource("auth/role/grant").route(web::post().to(timed(role_grant_permission))))
        .service(v3_resource("auth/role/revoke").route(web::post().to(timed(role_revoke_permission))))
        .service(v3_resource("maintenance/snapshot").route(web::post().to(timed(snapshot::snapshot))))
        .service(
            v3_resource("watch").route(web::post().to(timed(watch::watch))).route(
                web::get()
                    .guard(guard::fn_guard(websocket::is_upgrade))
                    .to(|gw, http, payload| websocket::serve(watch::watch, gw, http, payload)),
            ),
        )
        .service(v3_resource("lock/lock").route(web::post().to(timed(coordination::lock))))
        .service(v3_resource("lock/unlock").route(web::post().to(timed(coordination::unlock))))
        .service(v3_resource("election/campaign").route(web::post().to(timed(coordination::campaign))))
        .service(v3_resource("election/proclaim").route(web::post().to(timed(coordination::proclaim))))
        .service(v3_resource("election/leader").route(web::post().to(timed(coordination::leader))))
        .service(v3_resource("election/observe").route(web::post().to(timed(coordination::observe))))
        .service(v3_resource("election/resign").route(web::post().to(timed(coordination::resign))))
        .route("/health", web::get().to(health))
        .route("/version", web::get().to(version))
        .route("/metrics", web::get().to(metrics::metrics));
}

/// Mounts what etcd's metrics port serves (`--listen-metrics-urls`; etcd:
/// etcdhttp/metrics.go `HandleMetricsHealth`): `GET /health` and `GET /metrics`, and nothing
/// else. Serve it with [`crate::listener::serve_metrics`].
pub fn configure_metrics_with(cfg: &mut web::ServiceConfig, gateway: Arc<Gateway>) {
    cfg.app_data(web::Data::from(gateway))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics::metrics));
}

/// On the server's own ports, after the routes: the other methods on `get_only` paths
/// (`/health`, `/version`) get 405 with `Allow: GET`, as from etcd's handlers, and `/metrics`
/// answers any method, as etcd's (Prometheus' `promhttp.Handler` does not look at it). Not
/// part of [`configure_with`]: in an embedder's `App` those methods stay the embedder's.
pub(crate) fn configure_port_methods(cfg: &mut web::ServiceConfig, get_only: &[&str]) {
    for path in get_only {
        cfg.service(web::resource(*path).to(|| async {
            let mut answer = plain_text_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
            let allow = actix_web::http::header::HeaderValue::from_static("GET");
            answer.headers_mut().insert(actix_web::http::header::ALLOW, allow);
            answer
        }));
    }
    cfg.service(web::resource("/metrics").to(metrics::metrics));
}

/// A gateway route's resource (under `/v3/` and `/v3beta/`): a method its routes do not take
/// gets 405 `Method Not Allowed` in plain text, as from grpc-gateway (no `Allow` header).
fn v3_resource(route: &str) -> actix_web::Resource {
    web::resource(v3(route))
        .default_service(web::to(|| async { plain_text_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n") }))
}

/// `handler` within the deadline a `Grpc-Timeout` header sets, as etcd's gateway does
/// (grpc-gateway's `AnnotateContext` makes it the gRPC call's deadline): a call not answered
/// by then gets 504, `context deadline exceeded`, and is dropped (a waiting lock or campaign
/// gives its place up, as when its client leaves). A deadline under a millisecond has passed
/// by the time the request is routed, so the call is not made at all, as etcd does not propose
/// a write whose deadline has passed. A streaming route's deadline covers only the start of
/// its answer. A malformed header is refused with grpc-gateway's `invalid grpc-timeout`.
fn timed<F, Fut>(
    handler: F,
) -> impl Fn(web::Data<Gateway>, HttpRequest, web::Payload) -> futures_util::future::LocalBoxFuture<'static, HttpResponse>
       + Clone
       + 'static
where
    F: Fn(web::Data<Gateway>, HttpRequest, web::Payload) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = HttpResponse> + 'static,
{
    move |gw, http, payload| {
        let timeout = match http.headers().get("grpc-timeout").map(grpc_timeout) {
            None => return Box::pin(handler(gw, http, payload)),
            Some(Ok(timeout)) => timeout,
            Some(Err(e)) => return Box::pin(std::future::ready(error_response(&e))),
        };
        if timeout < std::time::Duration::from_millis(1) {
            return Box::pin(std::future::ready(error_response(&ApiError::DeadlineExceeded)));
        }
        let call = handler(gw, http, payload);
        Box::pin(async move {
            actix_web::rt::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| error_response(&ApiError::DeadlineExceeded))
        })
    }
}

/// A `Grpc-Timeout` value: up to eight digits and a unit, `H`, `M`, `S`, `m`, `u` or `n`
/// (gRPC's HTTP/2 protocol; grpc-gateway's `timeoutDecode`).
fn grpc_timeout(value: &actix_web::http::header::HeaderValue) -> Result<std::time::Duration, ApiError> {
    use std::time::Duration;
    let invalid =
        || ApiError::Malformed(format!("invalid grpc-timeout: {}", String::from_utf8_lossy(value.as_bytes())));
    let text = value.to_str().map_err(|_| invalid())?;
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    Ok(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(invalid()),
    })
}

type ApiResult = Result<String, ApiError>;

/// The HTTP answer to an error: its status and `{"code":N,"message":"..."}` from the API
/// layer's error table.
fn error_response(e: &ApiError) -> HttpResponse {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = String::new();
    encode::write_error(&mut body, e);
    HttpResponse::build(status).content_type("application/json").body(body)
}

fn reply(result: ApiResult) -> HttpResponse {
    match result {
        Ok(body) => HttpResponse::Ok().content_type("application/json").body(body),
        Err(e) => error_response(&e),
    }
}

/// The revision of a forwarded call's answer.
fn revision(header: Option<pb::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

/// Reads a whole body, refusing more than `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Body(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::RequestTooLarge.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads and decodes a request body into its message, refused when its protobuf is larger than
/// gRPC's receive limit, as over gRPC ([`Gateway::check_receive_limit`]).
async fn message<M: GatewayMessage + prost::Message>(payload: web::Payload, gw: &Gateway) -> Result<M, ApiError> {
    let msg: M = decode::decode(&read_body(payload, gw.max_json_bytes()).await?)?;
    gw.check_receive_limit(&msg)?;
    Ok(msg)
}

/// A write's [`message`], refused when its raft entry would be larger than
/// `max_request_bytes` (etcd `ErrGRPCRequestTooLarge`, [`request::write_fits`]), as over gRPC.
async fn write_message<M: GatewayMessage + prost::Message>(
    payload: web::Payload,
    gw: &Gateway,
    caller: &Caller,
) -> Result<M, ApiError> {
    let msg: M = message(payload, gw).await?;
    if !request::write_fits(msg.encoded_len(), gw.max_request_bytes, gw.handle.auth().raft_header_bytes(caller)) {
        return Err(Error::RequestTooLarge.into());
    }
    Ok(msg)
}

/// The token an HTTP request carries. etcd's gateway hands `Grpc-Metadata-Token` on as gRPC
/// metadata `token`, and `Authorization` and `Grpc-Metadata-Authorization` as `authorization`,
/// and etcd reads `token` first (etcd: grpc-gateway runtime `AnnotateContext`, auth/store.go
/// `AuthInfoFromCtx`).
fn token(req: &HttpRequest) -> Option<&str> {
    let headers = req.headers();
    headers
        .get("grpc-metadata-token")
        .or_else(|| headers.get(actix_web::http::header::AUTHORIZATION))
        .or_else(|| headers.get("grpc-metadata-authorization"))
        .and_then(|v| v.to_str().ok())
        .or_else(|| websocket::bearer_token(req))
}

/// The caller of an HTTP request: its token ([`token`]), else its connection's TLS client
/// certificate user.
///
/// # Errors
/// `etcdserver: invalid auth token`.
pub(crate) fn caller(gw: &Gateway, req: &HttpRequest) -> Result<Caller, ApiError> {
    let cert_user = req.conn_data::<crate::api::ClientCertUser>().map(|u| u.0.as_str());
    gw.handle.auth().caller(token(req), cert_user)
}

/// The credentials a `/v3/watch` request presented, for its creates.
pub(crate) fn credentials(req: &HttpRequest) -> crate::api::stream::Credentials {
    crate::api::stream::Credentials {
        token: token(req).map(str::to_string),
        cert_user: req.conn_data::<crate::api::ClientCertUser>().map(|u| u.0.clone()),
    }
}

async fn range(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let req: pb::RangeRequest = message(payload, &gw).await?;
            let linearizable = !req.serializable;
            let req = request::range_request(req)?;
            gw.handle.auth().check_range(&caller, &req.range)?;
            if let (Some(upstream), true) = (&gw.upstream, linearizable) {
                upstream.linearize().await?;
            }
            let resp = gw.handle.range(req).await?;
            let mut out = String::new();
            encode::write_range(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn put(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let req: pb::PutRequest = write_message(payload, &gw, &caller).await?;
            let forwarded = gw.upstream.as_ref().map(|_| req.clone());
            let req = request::put_request(req);
            // What the checks read: the store refuses the write if it changes before it
            // applies it (`Handle::put_checked`).
            let stamp = gw.handle.auth().stamp();
            let lease_keys = crate::api::auth::lease_keys(&gw.handle, gw.upstream.as_ref(), req.lease).await?;
            gw.handle.auth().check_put(&caller, &req.key, req.prev_kv, &lease_keys)?;
            let resp = match (&gw.upstream, forwarded) {
                (Some(upstream), Some(f)) => forward::core::put(upstream.put(f).await?.into_inner()),
                _ => gw.handle.put_checked(req, stamp).await?,
            };
            let mut out = String::new();
            encode::write_put(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn delete_range(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let req: pb::DeleteRangeRequest = write_message(payload, &gw, &caller).await?;
            let forwarded = gw.upstream.as_ref().map(|_| req.clone());
            let req = request::delete_request(req);
            let stamp = gw.handle.auth().stamp();
            gw.handle.auth().check_delete(&caller, &req.range, req.prev_kv)?;
            let resp = match (&gw.upstream, forwarded) {
                (Some(upstream), Some(f)) => forward::core::delete(upstream.delete_range(f).await?.into_inner()),
                _ => gw.handle.delete_range_checked(req, stamp).await?,
            };
            let mut out = String::new();
            encode::write_delete(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn txn(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let req: pb::TxnRequest = message(payload, &gw).await?;
            if request::txn_is_proposed(&req)
                && !request::write_fits(
                    prost::Message::encoded_len(&req),
                    gw.max_request_bytes,
                    gw.handle.auth().raft_header_bytes(&caller),
                )
            {
                return Err(Error::RequestTooLarge.into());
            }
            let forwarded = gw.upstream.as_ref().map(|_| req.clone());
            let req = request::txn_request(req)?;
            let stamp = gw.handle.auth().stamp();
            crate::api::auth::check_txn(&gw.handle, gw.upstream.as_ref(), &caller, &req).await?;
            let resp = match (&gw.upstream, forwarded) {
                (Some(upstream), Some(f)) if forward::txn_writes(&f) => {
                    forward::core::txn(upstream.txn(f).await?.into_inner())
                }
                (Some(upstream), Some(_)) => {
                    // A read-only txn is a read, answered locally; etcd's txns are linearizable.
                    upstream.linearize().await?;
                    gw.handle.txn(req).await?
                }
                _ => gw.handle.txn_checked(req, stamp).await?,
            };
            let mut out = String::new();
            encode::write_txn(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn compaction(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            // The root role, as etcd since the fix for CVE-2026-33413 (v3rpc key.go `Compact`).
            gw.handle.auth().check_admin(&caller(&gw, &http)?)?;
            let req: pb::CompactionRequest = message(payload, &gw).await?;
            let rev = match &gw.upstream {
                Some(upstream) => revision(upstream.compact(req).await?.into_inner().header),
                None => gw.handle.compact(req.revision, req.physical).await?,
            };
            let mut out = String::new();
            encode::write_header_only(&mut out, gw.header, rev);
            Ok(out)
        }
        .await,
    )
}

async fn lease_grant(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            // A user, as etcd since the fix for CVE-2026-33413 (v3_server.go `LeaseGrant`).
            gw.handle.auth().require_user(&caller(&gw, &http)?)?;
            let req: pb::LeaseGrantRequest = message(payload, &gw).await?;
            let (id, ttl, rev) = match &gw.upstream {
                Some(upstream) => {
                    let resp = upstream.lease_grant(req).await?.into_inner();
                    (resp.id, resp.ttl, revision(resp.header))
                }
                None => gw.handle.lease_grant(req.id, req.ttl).await?,
            };
            let mut out = String::new();
            encode::write_lease(&mut out, gw.header, rev, id, ttl);
            Ok(out)
        }
        .await,
    )
}

async fn lease_revoke(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let req: pb::LeaseRevokeRequest = message(payload, &gw).await?;
            crate::api::auth::check_lease_revoke(&gw.handle, gw.upstream.as_ref(), &caller, req.id).await?;
            let rev = match &gw.upstream {
                Some(upstream) => revision(upstream.lease_revoke(req).await?.into_inner().header),
                None => gw.handle.lease_revoke(req.id).await?,
            };
            let mut out = String::new();
            encode::write_header_only(&mut out, gw.header, rev);
            Ok(out)
        }
        .await,
    )
}

/// A streaming JSON response (watch, keep-alive, snapshot, observe) to `http`: chunked on
/// HTTP/1.1, as etcd's gateway sends it. HTTP/1.0 has no chunked encoding (RFC 9112 §6.1), so
/// an HTTP/1.0 client gets the bytes as they are and the body ends when the connection closes,
/// as Go's `net/http` serves it (actix-http would send chunks it cannot read).
pub(crate) fn json_stream_response<S, E>(http: &HttpRequest, body: S) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<web::Bytes, E>> + 'static,
    E: Into<Box<dyn std::error::Error>> + 'static,
{
    let http_1_0 = http.version() < actix_web::http::Version::HTTP_11;
    let mut builder = HttpResponse::Ok();
    builder.content_type("application/json");
    if http_1_0 {
        builder.force_close();
    }
    let mut response = builder.streaming(body);
    if http_1_0 {
        response.head_mut().no_chunking(true);
    }
    response
}

/// etcd's `LeaseKeepAlive` is a stream: every request object in the body gets one
/// `{"result":{...}}` line as soon as it arrives, while the body stays open, so a client that
/// keeps one request open renews its lease for as long as it sends (etcd's gateway forwards
/// each request as it reads it: `request_Lease_LeaseKeepAlive_0`). An unknown lease answers
/// TTL 0, as etcd does ([`Handle::lease_keep_alive_answer`]). A body whose first request is bad
/// gets the HTTP error; a later bad request ends the body with one `{"error":{...}}` line.
async fn lease_keep_alive(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    let caller = match caller(&gw, &http) {
        Ok(caller) => caller,
        Err(e) => return error_response(&e),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let mut objects = json_stream::JsonObjects::new(payload, gw.max_json_bytes(), ApiError::Malformed);
    actix_web::rt::spawn(async move {
        while let Some(object) = objects.next().await {
            if tx.send(object).await.is_err() {
                // The client went away.
                return;
            }
        }
    });
    let first = match rx.recv().await {
        Some(Err(e)) => return error_response(&e),
        first => first,
    };
    // Each answer is written as it comes, not gathered: a body of millions of small requests
    // does not become one reply of hundreds of megabytes, and a client that stops reading
    // stops the answering.
    let caller = std::sync::Arc::new(caller);
    let lines = futures_util::stream::unfold(Some((gw, rx, first)), move |state| {
        let caller = std::sync::Arc::clone(&caller);
        async move {
            let (gw, mut rx, first) = state?;
            let item = match first {
                Some(item) => item,
                None => rx.recv().await?,
            };
            let answer = async {
                let req: pb::LeaseKeepAliveRequest = decode::decode_value(item?)?;
                crate::api::auth::check_lease_keep_alive(&gw.handle, gw.upstream.as_ref(), &caller, req.id).await?;
                let (ttl, rev) = match &gw.upstream {
                    Some(upstream) => upstream.lease_keep_alive_once(req.id).await?,
                    None => gw.handle.lease_keep_alive_answer(req.id).await?,
                };
                Ok::<_, ApiError>((req.id, ttl, rev))
            };
            let mut out = String::new();
            let next = match answer.await {
                Ok((id, ttl, rev)) => {
                    out.push_str("{\"result\":");
                    encode::write_lease(&mut out, gw.header, rev, id, ttl);
                    out.push_str("}\n");
                    Some((gw, rx, None))
                }
                Err(e) => {
                    // The first bad request ends the body.
                    out.push_str("{\"error\":");
                    encode::write_error(&mut out, &e);
                    out.push_str("}\n");
                    None
                }
            };
            Some((Ok::<_, actix_web::Error>(web::Bytes::from(out)), next))
        }
    });
    json_stream_response(&http, lines)
}

async fn lease_time_to_live(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let req: pb::LeaseTimeToLiveRequest = message(payload, &gw).await?;
            let mut out = String::new();
            let asked_keys = req.keys;
            if let Some(upstream) = &gw.upstream {
                let r = upstream.lease_time_to_live(req).await?.into_inner();
                gw.handle.auth().check_lease_time_to_live(&caller, asked_keys, &r.keys)?;
                let rev = revision(r.header);
                encode::write_lease_ttl(&mut out, gw.header, rev, r.id, r.ttl, r.granted_ttl, &r.keys);
                return Ok(out);
            }
            let (s, rev) = gw.handle.lease_time_to_live_answer(req.id, req.keys).await?;
            gw.handle.auth().check_lease_time_to_live(&caller, asked_keys, &s.keys)?;
            encode::write_lease_ttl(&mut out, gw.header, rev, s.id, s.ttl, s.granted_ttl, &s.keys);
            Ok(out)
        }
        .await,
    )
}

/// `LeaseLeasesRequest` has no fields: the body is read only for its size.
async fn lease_leases(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            gw.handle.auth().require_user(&caller)?;
            let _ = read_body(payload, gw.max_json_bytes()).await?;
            let (ids, rev): (Vec<i64>, i64) = match &gw.upstream {
                Some(upstream) => {
                    let resp = upstream.lease_leases(pb::LeaseLeasesRequest {}).await?.into_inner();
                    (resp.leases.iter().map(|l| l.id).collect(), revision(resp.header))
                }
                None => gw.handle.leases().await?,
            };
            crate::api::auth::check_lease_leases(&gw.handle, gw.upstream.as_ref(), &caller, &ids).await?;
            let mut out = String::new();
            encode::write_leases(&mut out, gw.header, rev, &ids);
            Ok(out)
        }
        .await,
    )
}

/// `StatusRequest` has no fields: the body is read only for its size.
async fn status(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            // A user, as etcd since the fix for CVE-2026-33413 (v3rpc maintenance.go `Status`).
            gw.handle.auth().require_user(&caller(&gw, &http)?)?;
            let _ = read_body(payload, gw.max_json_bytes()).await?;
            let rev = gw.handle.current_revision();
            let db_size = gw.handle.db_size().await?;
            let alarms = gw.handle.alarm(Alarm::Get(None)).await?;
            let errors: Vec<String> =
                alarms.iter().map(crate::api::alarm::status_error).chain(gw.handle.upstream_error()).collect();
            let mut out = String::new();
            encode::write_member_status(&mut out, gw.header, rev, db_size, &errors);
            Ok(out)
        }
        .await,
    )
}

/// `MemberList`: one member, this server, as the gRPC `Cluster` service answers.
async fn member_list(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            // A user, as etcd since the fix for CVE-2026-33413 (server.go `MemberList`).
            gw.handle.auth().require_user(&caller(&gw, &http)?)?;
            let _ = read_body(payload, gw.max_json_bytes()).await?;
            let mut out = String::new();
            encode::write_member_list(&mut out, gw.header, crate::api::MEMBER_NAME, &gw.client_urls);
            Ok(out)
        }
        .await,
    )
}

/// A membership change, admin only, refused as over gRPC ([`membership::member_change`]).
async fn member_change<M: GatewayMessage + prost::Message>(
    gw: web::Data<Gateway>,
    http: HttpRequest,
    payload: web::Payload,
    change: fn(&M) -> MemberChange,
) -> HttpResponse {
    reply(
        async {
            gw.handle.auth().check_admin(&caller(&gw, &http)?)?;
            let req: M = message(payload, &gw).await?;
            Err(membership::member_change(gw.header.member_id, gw.upstream.is_some(), change(&req)))
        }
        .await,
    )
}

async fn member_add(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    member_change::<pb::MemberAddRequest>(gw, http, payload, |_| MemberChange::Add).await
}

async fn member_remove(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    member_change::<pb::MemberRemoveRequest>(gw, http, payload, |r| MemberChange::Remove(r.id)).await
}

async fn member_update(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    member_change::<pb::MemberUpdateRequest>(gw, http, payload, |r| MemberChange::Update(r.id)).await
}

async fn member_promote(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    member_change::<pb::MemberPromoteRequest>(gw, http, payload, |r| MemberChange::Promote(r.id)).await
}

/// `MoveLeader`, admin only, as over gRPC ([`membership::move_leader`]); etcd's answer has no
/// header.
async fn move_leader(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            gw.handle.auth().check_admin(&caller(&gw, &http)?)?;
            let req: pb::MoveLeaderRequest = message(payload, &gw).await?;
            membership::move_leader(gw.header.member_id, req.target_id)?;
            Ok("{}".to_string())
        }
        .await,
    )
}

async fn alarm(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let req: pb::AlarmRequest = message(payload, &gw).await?;
            let alarms = match crate::api::alarm::alarm_request(req)? {
                Some(request) => {
                    crate::api::alarm::check_alarm(gw.handle.auth(), &caller, &request)?;
                    gw.handle.alarm(request).await?
                }
                None => Vec::new(),
            };
            let mut out = String::new();
            encode::write_alarms(&mut out, &alarms);
            Ok(out)
        }
        .await,
    )
}

/// `DefragmentRequest` has no fields; etcd's answer is `{}`.
async fn defragment(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            gw.handle.auth().check_admin(&caller(&gw, &http)?)?;
            let _ = read_body(payload, gw.max_json_bytes()).await?;
            gw.handle.defragment().await?;
            Ok("{}".to_string())
        }
        .await,
    )
}

/// `HashRequest` has no fields: the body is read only for its size.
async fn hash(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            gw.handle.auth().check_admin(&caller(&gw, &http)?)?;
            let _ = read_body(payload, gw.max_json_bytes()).await?;
            let (hash, rev) = gw.handle.hash().await?;
            let mut out = String::new();
            encode::write_hash(&mut out, gw.header, rev, hash);
            Ok(out)
        }
        .await,
    )
}

async fn hash_kv(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            gw.handle.auth().check_admin(&caller(&gw, &http)?)?;
            let req: pb::HashKvRequest = message(payload, &gw).await?;
            let kv = gw.handle.hash_kv(req.revision).await?;
            let mut out = String::new();
            encode::write_hash_kv(&mut out, gw.header, &kv);
            Ok(out)
        }
        .await,
    )
}

/// The header-only answer at the current revision.
fn header_now(gw: &Gateway) -> String {
    let mut out = String::new();
    encode::write_header_only(&mut out, gw.header, gw.handle.current_revision());
    out
}

/// Defines gateway handlers for `Auth` requests that answer a header only.
macro_rules! auth_header_only {
    ($($handler:ident: $msg:ident => $method:ident;)*) => {
        $(async fn $handler(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
            reply(
                async {
                    let caller = caller(&gw, &http)?;
                    let r: pb::$msg = message(payload, &gw).await?;
                    AuthService::new(&gw.handle, &caller).$method(r).await?;
                    Ok(header_now(&gw))
                }
                .await,
            )
        })*
    };
}

auth_header_only! {
    user_add: AuthUserAddRequest => user_add;
    user_delete: AuthUserDeleteRequest => user_delete;
    user_change_password: AuthUserChangePasswordRequest => user_change_password;
    user_grant_role: AuthUserGrantRoleRequest => user_grant_role;
    user_revoke_role: AuthUserRevokeRoleRequest => user_revoke_role;
    role_add: AuthRoleAddRequest => role_add;
    role_delete: AuthRoleDeleteRequest => role_delete;
    role_grant_permission: AuthRoleGrantPermissionRequest => role_grant_permission;
    role_revoke_permission: AuthRoleRevokePermissionRequest => role_revoke_permission;
}

async fn auth_enable(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let _: pb::AuthEnableRequest = message(payload, &gw).await?;
            AuthService::new(&gw.handle, &caller).enable().await?;
            Ok(header_now(&gw))
        }
        .await,
    )
}

async fn auth_disable(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let _: pb::AuthDisableRequest = message(payload, &gw).await?;
            AuthService::new(&gw.handle, &caller).disable().await?;
            Ok(header_now(&gw))
        }
        .await,
    )
}

async fn auth_status(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let _: pb::AuthStatusRequest = message(payload, &gw).await?;
            let s = AuthService::new(&gw.handle, &caller).status()?;
            let mut out = String::new();
            encode::write_auth_status(&mut out, gw.header, gw.handle.current_revision(), s.enabled, s.auth_revision);
            Ok(out)
        }
        .await,
    )
}

async fn authenticate(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let r: pb::AuthenticateRequest = message(payload, &gw).await?;
            let anonymous = Caller::default();
            let resp = AuthService::new(&gw.handle, &anonymous).authenticate(r).await?;
            let mut out = String::new();
            encode::write_token(&mut out, gw.header, gw.handle.current_revision(), &resp.token);
            Ok(out)
        }
        .await,
    )
}

async fn user_get(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let r: pb::AuthUserGetRequest = message(payload, &gw).await?;
            let resp = AuthService::new(&gw.handle, &caller).user_get(&r)?;
            let mut out = String::new();
            encode::write_names(&mut out, gw.header, gw.handle.current_revision(), "roles", &resp.roles);
            Ok(out)
        }
        .await,
    )
}

async fn user_list(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let _: pb::AuthUserListRequest = message(payload, &gw).await?;
            let resp = AuthService::new(&gw.handle, &caller).user_list()?;
            let mut out = String::new();
            encode::write_names(&mut out, gw.header, gw.handle.current_revision(), "users", &resp.users);
            Ok(out)
        }
        .await,
    )
}

async fn role_get(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let r: pb::AuthRoleGetRequest = message(payload, &gw).await?;
            let resp = AuthService::new(&gw.handle, &caller).role_get(&r)?;
            let mut out = String::new();
            encode::write_role_perms(&mut out, gw.header, gw.handle.current_revision(), &resp.perm);
            Ok(out)
        }
        .await,
    )
}

async fn role_list(gw: web::Data<Gateway>, http: HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let caller = caller(&gw, &http)?;
            let _: pb::AuthRoleListRequest = message(payload, &gw).await?;
            let resp = AuthService::new(&gw.handle, &caller).role_list()?;
            let mut out = String::new();
            encode::write_names(&mut out, gw.header, gw.handle.current_revision(), "roles", &resp.roles);
            Ok(out)
        }
        .await,
    )
}

/// The client port's answer to a path nothing serves, as etcd's gives it: under `/v3/` (and
/// `/v3beta/`) grpc-gateway's `Not Found`, elsewhere Go's (see [`go_not_found`]).
pub(crate) async fn not_found(http: HttpRequest) -> HttpResponse {
    let path = http.path();
    if path.starts_with("/v3/") || path.starts_with("/v3beta/") {
        plain_text_error(StatusCode::NOT_FOUND, "Not Found\n")
    } else {
        go_not_found().await
    }
}

/// Go's answer to a path its `ServeMux` has no handler for (net/http `NotFound`), what etcd's
/// metrics port gives for any path but `/health` and `/metrics`.
pub(crate) async fn go_not_found() -> HttpResponse {
    plain_text_error(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// An error as Go's `http.Error` writes it: plain text, not to be sniffed as anything else.
fn plain_text_error(status: StatusCode, text: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .content_type("text/plain; charset=utf-8")
        .body(text)
}

/// etcd's `GET /version`: clients (Python etcd3gw by default) pick the gateway prefix from it.
async fn version() -> HttpResponse {
    let mut out = String::new();
    encode::write_version(&mut out);
    HttpResponse::Ok().content_type("application/json").body(out)
}

/// etcd 3.5's `/health`: `{"health":"true"}`, or `"false"` with a reason while an alarm is
/// raised (`?exclude=NOSPACE` leaves that kind out, as etcd's does; repeat it for several), while an earlier storage
/// failure has poisoned the store, once the store has stopped, or on a mirror whose upstream
/// watch has been down for longer than `mirror_status::UPSTREAM_DOWN_UNHEALTHY_AFTER`. A false answer is HTTP 503
/// so that an orchestrator's probe sees it (etcd answers 503 too).
async fn health(gw: web::Data<Gateway>, query: web::Query<Vec<(String, String)>>) -> HttpResponse {
    let health = gw.handle.health().await;
    // etcd: health.go `getQuerySet`: every `exclude` value, each one alarm name (no splitting).
    let excluded: Vec<&str> =
        query.iter().filter(|(k, v)| k == "exclude" && !v.is_empty()).map(|(_, v)| v.as_str()).collect();
    // etcd: `serializable=true` skips the leader check (a mirror's upstream, here).
    let serializable = query.iter().any(|(k, v)| k == "serializable" && v == "true");
    let alarm = health.alarms.iter().find(|a| !excluded.contains(&a.alarm.name()));
    let reason = if health.stopped {
        Some("the store has stopped".to_string())
    } else if health.poisoned {
        Some(watchkv::Error::Poisoned.to_string())
    } else {
        alarm.map(|a| format!("ALARM {}", a.alarm.name())).or_else(|| {
            // A mirror whose upstream watch has been down too long serves stale reads.
            if serializable {
                return None;
            }
            let upstream = gw.handle.upstream_status()?;
            upstream.report(gw.handle.upstream_applied()).health_problem()
        })
    };
    match reason {
        None => HttpResponse::Ok()
            .content_type("application/json")
            .body(format!("{{\"health\":\"true\",\"uptime_seconds\":{}}}", gw.started.elapsed().as_secs())),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(format!("{{\"health\":\"false\",\"reason\":{}}}", serde_json::Value::String(reason))),
    }
}
