//! Owns the gRPC call counters etcd exports through go-grpc-prometheus (etcd: v3rpc/grpc.go
//! `grpc_prometheus.UnaryServerInterceptor`, `StreamServerInterceptor` and `Register`):
//! `grpc_server_started_total` and `grpc_server_handled_total` by service, method and call type,
//! the second also by status code. etcd's dashboards and alerts read them for the RPC rate, the
//! failed-RPC rate and the open watch and keep-alive streams (started minus handled).
//!
//! The router ([`super::router::GrpcRouter`]) counts a call as started when it routes it, and as
//! handled with the status it ends with: a trailers-only answer's at once, else the body's
//! trailers (a unary call's status, a stream's end), or `Canceled` for a call or body dropped
//! before its status (the client reset the stream or went away). Only the methods of
//! [`METHODS`] are counted, as grpc-go counts only registered methods. A call costs two relaxed
//! atomic adds and a reference count's increment and decrement. etcd's
//! `grpc_server_msg_received_total` and `_msg_sent_total` are not kept.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};

/// How a method's messages flow, as go-grpc-prometheus labels it (`grpc_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl CallType {
    /// The label's value.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            CallType::Unary => "unary",
            CallType::ServerStream => "server_stream",
            CallType::BidiStream => "bidi_stream",
        }
    }
}

/// One gRPC method the counters know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// `etcdserverpb.KV`.
    pub service: &'static str,
    /// `Put`.
    pub method: &'static str,
    /// How its messages flow.
    pub kind: CallType,
}

const fn m(service: &'static str, method: &'static str, kind: CallType) -> Method {
    Method { service, method, kind }
}

use CallType::{BidiStream, ServerStream, Unary};

/// Every method the client port serves, as etcd's protos declare them (a unit test checks the
/// list against `actors/proto`).
pub const METHODS: &[Method] = &[
    m("etcdserverpb.KV", "Range", Unary),
    m("etcdserverpb.KV", "RangeStream", ServerStream),
    m("etcdserverpb.KV", "Put", Unary),
    m("etcdserverpb.KV", "DeleteRange", Unary),
    m("etcdserverpb.KV", "Txn", Unary),
    m("etcdserverpb.KV", "Compact", Unary),
    m("etcdserverpb.Watch", "Watch", BidiStream),
    m("etcdserverpb.Lease", "LeaseGrant", Unary),
    m("etcdserverpb.Lease", "LeaseRevoke", Unary),
    m("etcdserverpb.Lease", "LeaseKeepAlive", BidiStream),
    m("etcdserverpb.Lease", "LeaseTimeToLive", Unary),
    m("etcdserverpb.Lease", "LeaseLeases", Unary),
    m("etcdserverpb.Cluster", "MemberAdd", Unary),
    m("etcdserverpb.Cluster", "MemberRemove", Unary),
    m("etcdserverpb.Cluster", "MemberUpdate", Unary),
    m("etcdserverpb.Cluster", "MemberList", Unary),
    m("etcdserverpb.Cluster", "MemberPromote", Unary),
    m("etcdserverpb.Maintenance", "Alarm", Unary),
    m("etcdserverpb.Maintenance", "Status", Unary),
    m("etcdserverpb.Maintenance", "Defragment", Unary),
    m("etcdserverpb.Maintenance", "Hash", Unary),
    m("etcdserverpb.Maintenance", "HashKV", Unary),
    m("etcdserverpb.Maintenance", "Snapshot", ServerStream),
    m("etcdserverpb.Maintenance", "MoveLeader", Unary),
    m("etcdserverpb.Maintenance", "Downgrade", Unary),
    m("etcdserverpb.Auth", "AuthEnable", Unary),
    m("etcdserverpb.Auth", "AuthDisable", Unary),
    m("etcdserverpb.Auth", "AuthStatus", Unary),
    m("etcdserverpb.Auth", "Authenticate", Unary),
    m("etcdserverpb.Auth", "UserAdd", Unary),
    m("etcdserverpb.Auth", "UserGet", Unary),
    m("etcdserverpb.Auth", "UserList", Unary),
    m("etcdserverpb.Auth", "UserDelete", Unary),
    m("etcdserverpb.Auth", "UserChangePassword", Unary),
    m("etcdserverpb.Auth", "UserGrantRole", Unary),
    m("etcdserverpb.Auth", "UserRevokeRole", Unary),
    m("etcdserverpb.Auth", "RoleAdd", Unary),
    m("etcdserverpb.Auth", "RoleGet", Unary),
    m("etcdserverpb.Auth", "RoleList", Unary),
    m("etcdserverpb.Auth", "RoleDelete", Unary),
    m("etcdserverpb.Auth", "RoleGrantPermission", Unary),
    m("etcdserverpb.Auth", "RoleRevokePermission", Unary),
    m("v3lockpb.Lock", "Lock", Unary),
    m("v3lockpb.Lock", "Unlock", Unary),
    m("v3electionpb.Election", "Campaign", Unary),
    m("v3electionpb.Election", "Proclaim", Unary),
    m("v3electionpb.Election", "Leader", Unary),
    m("v3electionpb.Election", "Observe", ServerStream),
    m("v3electionpb.Election", "Resign", Unary),
    m("grpc.health.v1.Health", "Check", Unary),
    m("grpc.health.v1.Health", "Watch", ServerStream),
];

/// gRPC's status codes by number, named as grpc-go's `codes.Code.String()` names them (the
/// `grpc_code` label).
pub const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The code a call ended with when its body was dropped before its status (the client reset
/// the stream or went away), as grpc-go's handler sees its context canceled.
const CANCELED: usize = 1;
/// The code of a status that is not a number gRPC defines.
const UNKNOWN: usize = 2;

/// The counters of one server's calls, shared by its routers and read by `/metrics`.
#[derive(Debug)]
pub struct CallCounters {
    /// Per method of [`METHODS`].
    started: Box<[AtomicU64]>,
    /// Per method of [`METHODS`] and code of [`CODES`]: `method * CODES.len() + code`.
    handled: Box<[AtomicU64]>,
}

impl Default for CallCounters {
    fn default() -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Self { started: zeros(METHODS.len()), handled: zeros(METHODS.len() * CODES.len()) }
    }
}

/// One method's counts at a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodCounts {
    /// Which method.
    pub method: Method,
    /// Calls started.
    pub started: u64,
    /// Calls handled, per code of [`CODES`].
    pub handled: [u64; 17],
}

impl CallCounters {
    /// The index in [`METHODS`] of the method a request path names (`/etcdserverpb.KV/Put`).
    #[must_use]
    pub fn method_index(path: &str) -> Option<usize> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        METHODS.iter().position(|m| m.method == method && m.service == service)
    }

    /// Counts a call of `METHODS[method]` as started.
    pub fn started(&self, method: usize) {
        if let Some(counter) = self.started.get(method) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a call of `METHODS[method]` as handled with the gRPC status `code` (a
    /// `grpc-status` value; anything else counts as `Unknown`).
    pub fn handled(&self, method: usize, code: &[u8]) {
        let code = std::str::from_utf8(code)
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|c| *c < CODES.len())
            .unwrap_or(UNKNOWN);
        self.handled_code(method, code);
    }

    /// Counts a call of `METHODS[method]` as handled `Canceled`: dropped before its status.
    pub fn canceled(&self, method: usize) {
        self.handled_code(method, CANCELED);
    }

    fn handled_code(&self, method: usize, code: usize) {
        if let Some(counter) = self.handled.get(method * CODES.len() + code) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every method's counts now, in [`METHODS`] order (zeros included, as etcd pre-registers
    /// every method with every code).
    #[must_use]
    pub fn snapshot(&self) -> Vec<MethodCounts> {
        METHODS
            .iter()
            .enumerate()
            .map(|(i, method)| {
                let mut handled = [0; 17];
                for (code, count) in handled.iter_mut().enumerate() {
                    *count = self.handled[i * CODES.len() + code].load(Ordering::Relaxed);
                }
                MethodCounts { method: *method, started: self.started[i].load(Ordering::Relaxed), handled }
            })
            .collect()
    }
}

/// A response body that counts its call as handled when its status goes by in the trailers,
/// or as `Canceled` when it is dropped before them. A body whose call was already counted (a
/// trailers-only answer, a method not counted) passes through untouched.
pub struct CountedBody {
    inner: tonic::body::Body,
    /// The counters and the method, until the call is counted.
    pending: Option<(Arc<CallCounters>, usize)>,
}

impl CountedBody {
    /// `inner`, counted as handled for `METHODS[method]` when its status comes.
    #[must_use]
    pub fn new(inner: tonic::body::Body, pending: Option<(Arc<CallCounters>, usize)>) -> Self {
        Self { inner, pending }
    }
}

impl HttpBody for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                if let Some((counters, method)) = self.pending.take() {
                    counters.handled(method, status.as_bytes());
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        if let Some((counters, method)) = self.pending.take() {
            counters.canceled(method);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `rpc` of every `service` in the protos the server is built from, as (service,
    /// method, streams in, streams out).
    fn proto_methods() -> Vec<(String, String, bool, bool)> {
        let protos = [
            ("etcdserverpb", include_str!("../../proto/etcd/api/etcdserverpb/rpc.proto")),
            ("v3lockpb", include_str!("../../proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto")),
            (
                "v3electionpb",
                include_str!("../../proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto"),
            ),
        ];
        let mut out = Vec::new();
        for (package, text) in protos {
            let mut service = String::new();
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = format!("{package}.{}", rest.trim_end_matches(['{', ' ']));
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let (name, rest) = rest.split_once('(').expect("rpc name(");
                    let (input, output) = rest.split_once("returns").expect("returns");
                    out.push((
                        service.clone(),
                        name.trim().to_string(),
                        input.contains("stream "),
                        output.contains("stream "),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn the_methods_are_the_protos() {
        let mut listed: Vec<(String, String, bool, bool)> = METHODS
            .iter()
            .filter(|m| m.service != "grpc.health.v1.Health")
            .map(|m| {
                let (input, output) = match m.kind {
                    CallType::Unary => (false, false),
                    CallType::ServerStream => (false, true),
                    CallType::BidiStream => (true, true),
                };
                (m.service.to_string(), m.method.to_string(), input, output)
            })
            .collect();
        let mut declared = proto_methods();
        listed.sort();
        declared.sort();
        assert_eq!(listed, declared);
    }

    #[test]
    fn a_call_counts_once_with_its_status_or_as_canceled() {
        let counters = Arc::new(CallCounters::default());
        let put = CallCounters::method_index("/etcdserverpb.KV/Put").expect("Put is counted");
        let watch = CallCounters::method_index("/etcdserverpb.Watch/Watch").expect("Watch is counted");
        assert_eq!(CallCounters::method_index("/etcdserverpb.KV/Nope"), None);
        assert_eq!(CallCounters::method_index("etcdserverpb.KV/Put"), None);
        counters.started(put);
        counters.handled(put, b"0");
        counters.started(put);
        counters.handled(put, b"11");
        counters.started(put);
        counters.handled(put, b"99");
        counters.started(watch);
        drop(CountedBody::new(tonic::body::Body::empty(), Some((Arc::clone(&counters), watch))));
        let counts = counters.snapshot();
        assert_eq!(counts[put].started, 3);
        assert_eq!((counts[put].handled[0], counts[put].handled[11], counts[put].handled[UNKNOWN]), (1, 1, 1));
        assert_eq!((counts[watch].started, counts[watch].handled[CANCELED]), (1, 1));
        assert_eq!(counts.iter().map(|c| c.handled.iter().sum::<u64>()).sum::<u64>(), 4);
    }

    /// A body read to its trailers counts once, with their status, and not again when it is
    /// dropped.
    #[tokio::test]
    async fn a_body_read_to_its_trailers_counts_its_status_once() {
        use http_body_util::BodyExt;
        let counters = Arc::new(CallCounters::default());
        let range = CallCounters::method_index("/etcdserverpb.KV/Range").expect("Range is counted");
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("11"));
        let frames =
            vec![Ok::<_, tonic::Status>(Frame::data(bytes::Bytes::from_static(b"x"))), Ok(Frame::trailers(trailers))];
        let inner = tonic::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)));
        let mut body = CountedBody::new(inner, Some((Arc::clone(&counters), range)));
        let collected = body.frame().await.expect("data").expect("ok");
        assert!(collected.is_data());
        let trailers = body.frame().await.expect("trailers").expect("ok");
        assert!(trailers.is_trailers());
        assert!(body.frame().await.is_none(), "the body ends after its trailers");
        drop(body);
        let counts = &counters.snapshot()[range];
        assert_eq!((counts.handled[11], counts.handled[CANCELED], counts.handled.iter().sum::<u64>()), (1, 0, 1));
    }
}
