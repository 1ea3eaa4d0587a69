//! Owns the transport-neutral API layer between [`Handle`](crate::Handle) and the wire, which
//! the gateway and the gRPC services both use and neither owns (docs/design.md, "Actors talk
//! through one protocol"):
//!
//! - [`Header`]: the identity in every response header (cluster id, member id, raft term; the
//!   revision is the response's own);
//! - [`REPORTED_ETCD_VERSION`]: the etcd version reported to clients;
//! - [`ApiError`]: the error table: each error's gRPC code, the HTTP status grpc-gateway gives
//!   that code, and etcd's text;
//! - [`pb`]: etcd's API messages, the schema both transports speak;
//! - [`request`]: every request message turned into the core's request, with its validation,
//!   the one conversion both transports go through;
//! - [`auth`]: callers, tokens and the permission each request needs; [`auth_service`]: etcd's
//!   `Auth` service for both transports;
//! - [`alarm`]: alarm requests and answers in etcd's messages;
//! - [`stream`]: a transport's watch stream, its requests and its close-on-drop;
//! - [`Coordination`]: the Lock and Election services' calls ([`lock`], [`election`]), etcd's
//!   concurrency recipes run on the server.
//! - [`identity`]: [`ClientCertUser`], the user a verified TLS client certificate names.

pub mod alarm;
pub mod auth;
pub mod auth_service;
pub(crate) mod coordination;
pub mod election;
mod error;
pub mod identity;
pub mod lock;
pub mod membership;
pub mod pb;
pub mod request;
pub mod stream;

pub use coordination::{Coordination, DEFAULT_SESSION_TTL};
pub use error::{http_status, ApiError};
pub use identity::ClientCertUser;
pub use stream::{StreamRequests, TransportStream};

/// The version reported by `Maintenance.Status` and `GET /version`: an etcd 3.5 release, so
/// that clients' feature gates turn on (Xline #867).
pub const REPORTED_ETCD_VERSION: &str = "3.5.0";

/// The name `MemberList` reports for this member.
pub const MEMBER_NAME: &str = "watchkv";

/// Identity reported in every response header. The default is made of constants only, so a
/// restarted server reports the same identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Cluster id.
    pub cluster_id: u64,
    /// Member id; also the leader `Maintenance.Status` reports (a single member leads itself).
    pub member_id: u64,
    /// Raft term stand-in (there is no raft).
    pub raft_term: u64,
}

impl Default for Header {
    fn default() -> Self {
        Self { cluster_id: 0x1c0f_fee0_c0ff_ee01, member_id: watchkv::config::DEFAULT_MEMBER_ID, raft_term: 1 }
    }
}

impl Header {
    /// The full response header of a response at `revision`.
    #[must_use]
    pub fn at(self, revision: i64) -> pb::etcdserverpb::ResponseHeader {
        pb::etcdserverpb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        }
    }
}
