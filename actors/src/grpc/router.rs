//! Owns the dispatch of a gRPC request to its service by the first segment of its path
//! (`/etcdserverpb.KV/Put` → the KV service), in place of tonic's axum-based `Routes` on the
//! client port.
//!
//! Why (docs/benchmarks.md, "Puts over gRPC"): `Routes` matches every request through an axum
//! router and boxes its body twice (into axum's body, then tonic's), a few allocations and
//! dynamic calls per request and per body frame on the path of every unary call. Here a request
//! goes to the generated service with hyper's body as it came; each service still matches its
//! own methods and answers `Unimplemented` for one it does not have, and a path naming no
//! service gets the same answer, as from `Routes`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{Body as HttpBody, BoxFuture, Service, StdError};
use tonic::server::NamedService;

use super::call_metrics::{CallCounters, CountedBody};
use super::health::HealthService;
use super::pb::etcdserverpb::auth_server::AuthServer;
use super::pb::etcdserverpb::cluster_server::ClusterServer;
use super::pb::etcdserverpb::kv_server::KvServer;
use super::pb::etcdserverpb::lease_server::LeaseServer;
use super::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use super::pb::v3electionpb::election_server::ElectionServer;
use super::pb::v3lockpb::lock_server::LockServer;
use super::watch_body::WatchService;
use super::GrpcApi;
use tonic_health::pb::health_server::HealthServer;

/// Every gRPC service of [`GrpcApi`], dispatched by service name (see the module docs).
#[derive(Clone)]
pub struct GrpcRouter {
    kv: KvServer<GrpcApi>,
    watch: WatchService,
    lease: LeaseServer<GrpcApi>,
    maintenance: MaintenanceServer<GrpcApi>,
    cluster: ClusterServer<GrpcApi>,
    auth: AuthServer<GrpcApi>,
    lock: LockServer<GrpcApi>,
    election: ElectionServer<GrpcApi>,
    health: HealthServer<HealthService>,
    /// The server's call counters ([`super::call_metrics`]).
    calls: Arc<CallCounters>,
}

impl GrpcRouter {
    /// Routes to the services of `api`; incoming messages may be at most `max_decoding` bytes,
    /// outgoing ones are unlimited, as in etcd.
    pub(super) fn new(api: &GrpcApi, max_decoding: usize) -> Self {
        Self {
            kv: KvServer::new(api.clone())
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(usize::MAX),
            watch: WatchService::new(api, max_decoding),
            lease: LeaseServer::new(api.clone()).max_decoding_message_size(max_decoding),
            maintenance: MaintenanceServer::new(api.clone()).max_decoding_message_size(max_decoding),
            cluster: ClusterServer::new(api.clone()).max_decoding_message_size(max_decoding),
            auth: AuthServer::new(api.clone()).max_decoding_message_size(max_decoding),
            lock: LockServer::new(api.clone()).max_decoding_message_size(max_decoding),
            election: ElectionServer::new(api.clone()).max_decoding_message_size(max_decoding),
            health: HealthServer::new(HealthService::new(api.handle().shutting_down())),
            calls: api.call_counters(),
        }
    }

    /// The same services, configured alike, as tonic's `Routes` (for a `tonic::transport`
    /// server).
    pub(super) fn into_routes(self) -> tonic::service::Routes {
        tonic::service::Routes::new(self.kv)
            .add_service(self.watch)
            .add_service(self.lease)
            .add_service(self.maintenance)
            .add_service(self.cluster)
            .add_service(self.auth)
            .add_service(self.lock)
            .add_service(self.election)
            .add_service(self.health)
    }
}

/// The service a gRPC path names: `/etcdserverpb.KV/Put` → `etcdserverpb.KV`.
fn service_name(path: &str) -> Option<&str> {
    path.strip_prefix('/')?.split_once('/').map(|(service, _)| service)
}

/// The answer to a path that names no service we serve: `Unimplemented` in the response's
/// headers (gRPC's trailers-only form), as tonic's `Routes` gives.
fn unimplemented() -> http::Response<Body> {
    let (parts, ()) = tonic::Status::unimplemented("").into_http::<()>().into_parts();
    http::Response::from_parts(parts, Body::empty())
}

impl<B> Service<http::Request<B>> for GrpcRouter
where
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<CountedBody>;
    type Error = Infallible;
    /// The service's own future, its answer passed through [`as_grpc_go_answers_too_large`] and
    /// counted ([`RoutedCall`]).
    type Future = RoutedCall;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Every service is always ready (the generated ones return Ready at once).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = CallCounters::method_index(request.uri().path());
        if let Some(method) = method {
            self.calls.started(method);
        }
        let response = match service_name(request.uri().path()) {
            Some(KvServer::<GrpcApi>::NAME) => self.kv.call(request),
            Some(WatchService::NAME) => self.watch.call(request),
            Some(LeaseServer::<GrpcApi>::NAME) => self.lease.call(request),
            Some(MaintenanceServer::<GrpcApi>::NAME) => self.maintenance.call(request),
            Some(ClusterServer::<GrpcApi>::NAME) => self.cluster.call(request),
            Some(AuthServer::<GrpcApi>::NAME) => self.auth.call(request),
            Some(LockServer::<GrpcApi>::NAME) => self.lock.call(request),
            Some(ElectionServer::<GrpcApi>::NAME) => self.election.call(request),
            Some(HealthServer::<HealthService>::NAME) => self.health.call(request),
            _ => Box::pin(std::future::ready(Ok(unimplemented()))),
        };
        RoutedCall { response, pending: method.map(|method| (Arc::clone(&self.calls), method)) }
    }
}

/// A routed call's answer: the service's own, passed through [`as_grpc_go_answers_too_large`],
/// counted as handled at once when it is trailers-only (its status in the headers), else when
/// its body's trailers go by ([`CountedBody`]).
pub struct RoutedCall {
    response: BoxFuture<http::Response<Body>, Infallible>,
    /// The counters and the method, when the method is counted.
    pending: Option<(Arc<CallCounters>, usize)>,
}

impl Drop for RoutedCall {
    /// A call dropped before its answer (its client reset the stream or left while a `Lock`
    /// waited) is handled `Canceled`, as grpc-go's handler sees its context canceled.
    fn drop(&mut self) {
        if let Some((calls, method)) = self.pending.take() {
            calls.canceled(method);
        }
    }
}

impl Future for RoutedCall {
    type Output = Result<http::Response<CountedBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Poll::Ready(Ok(response)) = self.response.as_mut().poll(cx) else { return Poll::Pending };
        let response = as_grpc_go_answers_too_large(response);
        let mut pending = self.pending.take();
        if let Some(status) = response.headers().get("grpc-status") {
            if let Some((calls, method)) = pending.take() {
                calls.handled(method, status.as_bytes());
            }
        }
        Poll::Ready(Ok(response.map(|body| CountedBody::new(body, pending))))
    }
}

/// tonic's answer to a request message over the receive limit, given as grpc-go (etcd's
/// server: rpc_util.go `recvAndDecompress`) gives it: `ResourceExhausted` with `grpc: received
/// message larger than max (N vs. M)`, not tonic's `OutOfRange`, which etcd's clients take for
/// a compacted or future revision. Every other response is left as it is. Only a trailers-only
/// answer (a unary call's request, a stream's first) is seen here; a later message of a stream
/// keeps tonic's answer.
fn as_grpc_go_answers_too_large(response: http::Response<Body>) -> http::Response<Body> {
    if response.headers().get("grpc-status").map(http::HeaderValue::as_bytes) != Some(b"11") {
        return response;
    }
    let Some(status) = tonic::Status::from_header_map(response.headers()) else { return response };
    let Some(status) = too_large_as_grpc_go(&status) else { return response };
    let (parts, ()) = status.into_http::<()>().into_parts();
    http::Response::from_parts(parts, Body::empty())
}

/// tonic's refusal of a message over the receive limit as grpc-go gives it (see
/// [`as_grpc_go_answers_too_large`]); `None` for any other status.
pub(super) fn too_large_as_grpc_go(status: &tonic::Status) -> Option<tonic::Status> {
    if status.code() != tonic::Code::OutOfRange {
        return None;
    }
    let sizes = status.message().strip_prefix("Error, decoded message length too large: found ")?;
    let (found, limit) = sizes.strip_suffix(" bytes")?.split_once(" bytes, the limit is: ")?;
    Some(tonic::Status::resource_exhausted(format!("grpc: received message larger than max ({found} vs. {limit})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_over_the_limit_is_answered_as_grpc_go_answers_it() {
        let tonics = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 3145755 bytes, the limit is: 2097152 bytes",
        );
        let (parts, ()) = tonics.into_http::<()>().into_parts();
        let answer = as_grpc_go_answers_too_large(http::Response::from_parts(parts, Body::empty()));
        let status = tonic::Status::from_header_map(answer.headers()).expect("a status");
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::ResourceExhausted, "grpc: received message larger than max (3145755 vs. 2097152)")
        );
        // Any other OutOfRange (a compacted revision) is left alone.
        let compacted = tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        let (parts, ()) = compacted.into_http::<()>().into_parts();
        let answer = as_grpc_go_answers_too_large(http::Response::from_parts(parts, Body::empty()));
        let status = tonic::Status::from_header_map(answer.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::OutOfRange);
    }

    #[test]
    fn a_path_names_its_service() {
        assert_eq!(service_name("/etcdserverpb.KV/Put"), Some("etcdserverpb.KV"));
        assert_eq!(service_name("/v3lockpb.Lock/Unlock"), Some("v3lockpb.Lock"));
        assert_eq!(service_name("/etcdserverpb.KV"), None);
        assert_eq!(service_name("etcdserverpb.KV/Put"), None);
        assert_eq!(service_name(""), None);
    }

    #[test]
    fn the_service_names_are_etcds() {
        // What etcd's clients put in their paths; a renamed package would route nothing.
        assert_eq!(KvServer::<GrpcApi>::NAME, "etcdserverpb.KV");
        assert_eq!(WatchService::NAME, "etcdserverpb.Watch");
        assert_eq!(LeaseServer::<GrpcApi>::NAME, "etcdserverpb.Lease");
        assert_eq!(MaintenanceServer::<GrpcApi>::NAME, "etcdserverpb.Maintenance");
        assert_eq!(ClusterServer::<GrpcApi>::NAME, "etcdserverpb.Cluster");
        assert_eq!(AuthServer::<GrpcApi>::NAME, "etcdserverpb.Auth");
        assert_eq!(LockServer::<GrpcApi>::NAME, "v3lockpb.Lock");
        assert_eq!(ElectionServer::<GrpcApi>::NAME, "v3electionpb.Election");
        assert_eq!(HealthServer::<HealthService>::NAME, "grpc.health.v1.Health");
    }

    #[test]
    fn a_path_naming_no_service_is_unimplemented() {
        let response = unimplemented();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "12");
        assert_eq!(response.headers()["content-type"], "application/grpc");
    }
}
