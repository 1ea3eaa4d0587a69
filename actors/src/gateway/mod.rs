//! Owns the HTTP/JSON gateway: etcd's grpc-gateway routes (docs/etcd-semantics.md §8) on
//! actix-web, mountable under any prefix of a host service with
//! `App::configure(gateway::configure(handle))`. Unary routes answer one JSON body;
//! `/v3/watch`, `/v3/lease/keepalive` and `/v3/maintenance/snapshot` stream. Requests are decoded into etcd's messages
//! ([`decode`]) and converted by the API layer as gRPC's are; responses are encoded by
//! [`encode`]; errors come from the API layer's table.

pub mod decode;
pub mod encode;
mod metrics;
mod snapshot;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use watchkv::config::DEFAULT_MAX_REQUEST_BYTES;
use watchkv::Error;

use crate::api::pb::etcdserverpb as pb;
use crate::api::{request, ApiError, Header};
use crate::Handle;
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
    started: Instant,
}

impl Gateway {
    /// Returns a gateway over `handle` reporting the default identity ([`Header::default`])
    /// and accepting requests up to etcd's default size.
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        Self {
            handle,
            header: Header::default(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
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

/// Mounts every route for an already configured [`Gateway`].
pub fn configure_with(cfg: &mut web::ServiceConfig, gateway: Arc<Gateway>) {
    cfg.app_data(web::Data::from(gateway))
        .route("/v3/kv/range", web::post().to(range))
        .route("/v3/kv/put", web::post().to(put))
        .route("/v3/kv/deleterange", web::post().to(delete_range))
        .route("/v3/kv/txn", web::post().to(txn))
        .route("/v3/kv/compaction", web::post().to(compaction))
        .route("/v3/lease/grant", web::post().to(lease_grant))
        .route("/v3/lease/revoke", web::post().to(lease_revoke))
        .route("/v3/kv/lease/revoke", web::post().to(lease_revoke))
        .route("/v3/lease/keepalive", web::post().to(lease_keep_alive))
        .route("/v3/lease/timetolive", web::post().to(lease_time_to_live))
        .route("/v3/kv/lease/timetolive", web::post().to(lease_time_to_live))
        .route("/v3/lease/leases", web::post().to(lease_leases))
        .route("/v3/kv/lease/leases", web::post().to(lease_leases))
        .route("/v3/maintenance/status", web::post().to(status))
        .route("/v3/maintenance/snapshot", web::post().to(snapshot::snapshot))
        .route("/v3/watch", web::post().to(watch::watch))
        .route("/health", web::get().to(health))
        .route("/version", web::get().to(version))
        .route("/metrics", web::get().to(metrics::metrics));
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

/// Reads and decodes a request body into its message.
async fn message<M: GatewayMessage>(payload: web::Payload, gw: &Gateway) -> Result<M, ApiError> {
    decode::decode(&read_body(payload, gw.max_request_bytes).await?)
}

async fn range(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = request::range_request(message(payload, &gw).await?)?;
            let resp = gw.handle.range(req).await?;
            let mut out = String::new();
            encode::write_range(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn put(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = request::put_request(message(payload, &gw).await?);
            let resp = gw.handle.put(req).await?;
            let mut out = String::new();
            encode::write_put(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn delete_range(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = request::delete_request(message(payload, &gw).await?);
            let resp = gw.handle.delete_range(req).await?;
            let mut out = String::new();
            encode::write_delete(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn txn(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = request::txn_request(message(payload, &gw).await?)?;
            let resp = gw.handle.txn(req).await?;
            let mut out = String::new();
            encode::write_txn(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn compaction(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: pb::CompactionRequest = message(payload, &gw).await?;
            let rev = gw.handle.compact(req.revision, req.physical).await?;
            let mut out = String::new();
            encode::write_header_only(&mut out, gw.header, rev);
            Ok(out)
        }
        .await,
    )
}

async fn lease_grant(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: pb::LeaseGrantRequest = message(payload, &gw).await?;
            let (id, ttl, rev) = gw.handle.lease_grant(req.id, req.ttl).await?;
            let mut out = String::new();
            encode::write_lease(&mut out, gw.header, rev, id, ttl);
            Ok(out)
        }
        .await,
    )
}

async fn lease_revoke(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: pb::LeaseRevokeRequest = message(payload, &gw).await?;
            let rev = gw.handle.lease_revoke(req.id).await?;
            let mut out = String::new();
            encode::write_header_only(&mut out, gw.header, rev);
            Ok(out)
        }
        .await,
    )
}

/// etcd's `LeaseKeepAlive` is a stream: every request object in the body gets one
/// `{"result":{...}}` line; an unknown lease answers TTL 0, as etcd does
/// ([`Handle::lease_keep_alive_answer`]). The first bad request ends the body with one
/// `{"error":{...}}` line.
async fn lease_keep_alive(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    let body = match read_body(payload, gw.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let mut out = String::new();
    for item in serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>() {
        let answer = async {
            let value = item.map_err(|e| ApiError::Malformed(e.to_string()))?;
            let req: pb::LeaseKeepAliveRequest = decode::decode_value(value)?;
            let (ttl, rev) = gw.handle.lease_keep_alive_answer(req.id).await?;
            Ok::<_, ApiError>((req.id, ttl, rev))
        };
        match answer.await {
            Ok((id, ttl, rev)) => {
                out.push_str("{\"result\":");
                encode::write_lease(&mut out, gw.header, rev, id, ttl);
                out.push_str("}\n");
            }
            Err(e) => {
                out.push_str("{\"error\":");
                encode::write_error(&mut out, &e);
                out.push_str("}\n");
                break;
            }
        }
    }
    HttpResponse::Ok().content_type("application/json").body(out)
}

async fn lease_time_to_live(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: pb::LeaseTimeToLiveRequest = message(payload, &gw).await?;
            let (s, rev) = gw.handle.lease_time_to_live_answer(req.id, req.keys).await?;
            let mut out = String::new();
            encode::write_lease_ttl(&mut out, gw.header, rev, s.id, s.ttl, s.granted_ttl, &s.keys);
            Ok(out)
        }
        .await,
    )
}

/// `LeaseLeasesRequest` has no fields: the body is read only for its size.
async fn lease_leases(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let _ = read_body(payload, gw.max_request_bytes).await?;
            let (ids, rev) = gw.handle.leases().await?;
            let mut out = String::new();
            encode::write_leases(&mut out, gw.header, rev, &ids);
            Ok(out)
        }
        .await,
    )
}

/// `StatusRequest` has no fields: the body is read only for its size.
async fn status(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let _ = read_body(payload, gw.max_request_bytes).await?;
            let rev = gw.handle.current_revision();
            let db_size = gw.handle.db_size().await.unwrap_or(0);
            let mut out = String::new();
            encode::write_member_status(&mut out, gw.header, rev, db_size);
            Ok(out)
        }
        .await,
    )
}

/// etcd's `GET /version`: clients (Python etcd3gw by default) pick the gateway prefix from it.
async fn version() -> HttpResponse {
    let mut out = String::new();
    encode::write_version(&mut out);
    HttpResponse::Ok().content_type("application/json").body(out)
}

async fn health(gw: web::Data<Gateway>) -> HttpResponse {
    match gw.handle.stats().await {
        Ok(_) => HttpResponse::Ok()
            .content_type("application/json")
            .body(format!("{{\"health\":\"true\",\"uptime_seconds\":{}}}", gw.started.elapsed().as_secs())),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(format!("{{\"health\":\"false\",\"reason\":{}}}", serde_json::Value::String(e.to_string()))),
    }
}
