//! Owns the HTTP/JSON gateway: etcd's grpc-gateway routes (spec §8) on actix-web, mountable
//! under any prefix of a host service with `App::configure(gateway::configure(handle))`.
//! Unary routes answer one JSON body; `/v3/watch` and `/v3/lease/keepalive` stream.

pub mod json;
mod metrics;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use watchkv::Error;

use crate::Handle;
use json::Header;

/// The version reported by `/v3/maintenance/status`: an etcd 3.5 release, so clients' feature
/// gates turn on (Xline #867).
pub const REPORTED_ETCD_VERSION: &str = "3.5.0";

/// What the gateway needs: the store handle and the identity it reports.
#[derive(Clone)]
pub struct Gateway {
    /// The running store.
    pub handle: Handle,
    /// Identity in response headers.
    pub header: Header,
    /// Largest request body accepted (etcd `max-request-bytes`).
    pub max_request_bytes: usize,
    started: Instant,
}

impl Gateway {
    /// Returns a gateway over `handle` with a member id derived from nothing but constants,
    /// so that restarts report the same identity.
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        Self {
            handle,
            header: Header { cluster_id: 0x1c0f_fee0_c0ff_ee01, member_id: 0x0a7c_4b1e_0000_0001, raft_term: 1 },
            max_request_bytes: 1_572_864,
            started: Instant::now(),
        }
    }
}

/// Returns a function for `App::configure` / `Scope::configure` that mounts every route.
///
/// Serve it with `HttpServer::h1_allow_half_closed(false)`: a watch client that ends its
/// request body and then goes away is otherwise never noticed while nothing is written to it,
/// and its stream and watchers live on (etcd's Go server cancels the request on the EOF).
pub fn configure(handle: Handle) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let gateway = Arc::new(Gateway::new(handle));
    move |cfg: &mut web::ServiceConfig| configure_with(cfg, Arc::clone(&gateway))
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
        .route("/v3/watch", web::post().to(watch::watch))
        .route("/health", web::get().to(health))
        .route("/version", web::get().to(version))
        .route("/metrics", web::get().to(metrics::metrics));
}

/// An error in grpc-gateway's shape: an HTTP status from the gRPC code, and
/// `{"code":N,"message":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The gRPC status code.
    pub code: i32,
    /// etcd's message text.
    pub message: String,
}

impl ApiError {
    /// An `InvalidArgument` error.
    #[must_use]
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { code: 3, message: message.into() }
    }

    /// Returns the HTTP status grpc-gateway uses for the code (`runtime.HTTPStatusFromCode`).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self.code {
            1 => StatusCode::REQUEST_TIMEOUT,
            3 | 9 | 11 => StatusCode::BAD_REQUEST,
            4 => StatusCode::GATEWAY_TIMEOUT,
            5 => StatusCode::NOT_FOUND,
            6 | 10 => StatusCode::CONFLICT,
            7 => StatusCode::FORBIDDEN,
            8 => StatusCode::TOO_MANY_REQUESTS,
            12 => StatusCode::NOT_IMPLEMENTED,
            14 => StatusCode::SERVICE_UNAVAILABLE,
            16 => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Returns the JSON body.
    #[must_use]
    pub fn body(&self) -> String {
        let mut out = String::new();
        json::write_status(&mut out, self.code, &self.message);
        out
    }

    fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status()).content_type("application/json").body(self.body())
    }
}

impl From<Error> for ApiError {
    /// Maps a store error to etcd's gRPC code and message (`rpctypes`): `mvcc:` texts get the
    /// `etcdserver: ` prefix as etcd's server adds it.
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Compacted { .. } | Error::FutureRev { .. } | Error::LeaseTtlTooLarge => 11,
            Error::LeaseNotFound => 5,
            Error::LeaseExists => 9,
            Error::Stopped => 14,
            Error::Corrupt { .. }
            | Error::Poisoned
            | Error::Storage(_)
            | Error::Io(_)
            | Error::CompactionFailed { .. } => 13,
            _ => 3,
        };
        let text = e.to_string();
        let message = if text.starts_with("mvcc:") { format!("etcdserver: {text}") } else { text };
        Self { code, message }
    }
}

impl From<json::BadRequest> for ApiError {
    fn from(e: json::BadRequest) -> Self {
        Self::invalid(e.0)
    }
}

type ApiResult = Result<String, ApiError>;

fn reply(result: ApiResult) -> HttpResponse {
    match result {
        Ok(body) => HttpResponse::Ok().content_type("application/json").body(body),
        Err(e) => e.response(),
    }
}

/// Reads a whole body, refusing more than `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("reading request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::invalid(Error::RequestTooLarge.to_string()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Decodes a JSON request body; an empty body is the empty message, as grpc-gateway treats it.
async fn decode<T: DeserializeOwned + Default>(payload: web::Payload, gw: &Gateway) -> Result<T, ApiError> {
    let body = read_body(payload, gw.max_request_bytes).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::invalid(e.to_string()))
}

async fn range(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = decode::<json::RangeJson>(payload, &gw).await?.into_request()?;
            let resp = gw.handle.range(req).await?;
            let mut out = String::new();
            json::write_range(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn put(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = decode::<json::PutJson>(payload, &gw).await?.into_request();
            let resp = gw.handle.put(req).await?;
            let mut out = String::new();
            json::write_put(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn delete_range(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = decode::<json::DeleteRangeJson>(payload, &gw).await?.into_request();
            let resp = gw.handle.delete_range(req).await?;
            let mut out = String::new();
            json::write_delete(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn txn(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = decode::<json::TxnJson>(payload, &gw).await?.into_request()?;
            let resp = gw.handle.txn(req).await?;
            let mut out = String::new();
            json::write_txn(&mut out, Some(gw.header), &resp);
            Ok(out)
        }
        .await,
    )
}

async fn compaction(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = decode::<json::CompactionJson>(payload, &gw).await?;
            let rev = gw.handle.compact(req.revision, req.physical).await?;
            let mut out = String::new();
            json::write_header_only(&mut out, gw.header, rev);
            Ok(out)
        }
        .await,
    )
}

async fn lease_grant(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = decode::<json::LeaseGrantJson>(payload, &gw).await?;
            let (id, ttl, rev) = gw.handle.lease_grant(req.id, req.ttl).await?;
            let mut out = String::new();
            json::write_lease(&mut out, gw.header, rev, id, ttl);
            Ok(out)
        }
        .await,
    )
}

async fn lease_revoke(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = decode::<json::LeaseIdJson>(payload, &gw).await?;
            let rev = gw.handle.lease_revoke(req.id).await?;
            let mut out = String::new();
            json::write_header_only(&mut out, gw.header, rev);
            Ok(out)
        }
        .await,
    )
}

/// etcd's `LeaseKeepAlive` is a stream: every request object in the body gets one
/// `{"result":{...}}` line; an unknown lease answers TTL 0, as etcd does
/// ([`Handle::lease_keep_alive_answer`]).
async fn lease_keep_alive(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    let body = match read_body(payload, gw.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let mut out = String::new();
    for item in serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>() {
        let req = match item
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<json::LeaseIdJson>(v).map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => {
                out.push_str("{\"error\":");
                json::write_status(&mut out, 3, &e);
                out.push_str("}\n");
                break;
            }
        };
        let (ttl, rev) = match gw.handle.lease_keep_alive_answer(req.id).await {
            Ok(r) => r,
            Err(e) => {
                let e = ApiError::from(e);
                out.push_str("{\"error\":");
                out.push_str(&e.body());
                out.push_str("}\n");
                break;
            }
        };
        out.push_str("{\"result\":");
        json::write_lease(&mut out, gw.header, rev, req.id, ttl);
        out.push_str("}\n");
    }
    HttpResponse::Ok().content_type("application/json").body(out)
}

async fn lease_time_to_live(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req = decode::<json::LeaseTtlJson>(payload, &gw).await?;
            let (s, rev) = gw.handle.lease_time_to_live_answer(req.id, req.keys).await?;
            let mut out = String::new();
            json::write_lease_ttl(&mut out, gw.header, rev, s.id, s.ttl, s.granted_ttl, &s.keys);
            Ok(out)
        }
        .await,
    )
}

async fn lease_leases(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let _ = read_body(payload, gw.max_request_bytes).await?;
            let (ids, rev) = gw.handle.leases().await?;
            let mut out = String::new();
            json::write_leases(&mut out, gw.header, rev, &ids);
            Ok(out)
        }
        .await,
    )
}

async fn status(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    reply(async {
        let _ = read_body(payload, gw.max_request_bytes).await?;
        let rev = gw.handle.current_revision();
        let db_size = gw.handle.db_size().await.unwrap_or(0);
        let mut out = String::new();
        out.push_str("{\"header\":");
        json::write_header(&mut out, gw.header, rev);
        out.push_str(&format!(
            ",\"version\":\"{REPORTED_ETCD_VERSION}\",\"dbSize\":\"{db_size}\",\"leader\":\"{}\",\"raftIndex\":\"{rev}\",\"raftTerm\":\"{}\",\"raftAppliedIndex\":\"{rev}\",\"dbSizeInUse\":\"{db_size}\"}}",
            gw.header.member_id, gw.header.raft_term
        ));
        Ok(out)
    }
    .await)
}

/// etcd's `GET /version`: clients (Python etcd3gw by default) pick the gateway prefix from it.
async fn version() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!("{{\"etcdserver\":\"{REPORTED_ETCD_VERSION}\",\"etcdcluster\":\"{REPORTED_ETCD_VERSION}\"}}"))
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
