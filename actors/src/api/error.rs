//! Owns the error table: every error a client can get, with etcd's text, its gRPC code
//! ([`ApiError::code`]) and the HTTP status the gateway answers it with ([`http_status`], a
//! function of the code as in grpc-gateway). The gRPC services turn an [`ApiError`] into a
//! `tonic::Status`; the gateway into that status and a `{"code":N,"message":"..."}` body.

use tonic::Code;
use watchkv::Error;

/// An error as a client sees it. Texts are etcd's where etcd has one (etcd:
/// api/v3rpc/rpctypes/error.go).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The store refused or failed the request; `mvcc:` texts get the `etcdserver: ` prefix,
    /// as etcd's server adds it (etcd: api/v3rpc/rpctypes/error.go `toGRPCErrorMap`).
    #[error("{}", etcd_text(.0))]
    Store(#[from] Error),
    /// An unknown sort order or sort target (etcd: rpctypes `ErrGRPCInvalidSortOption`,
    /// v3rpc/key.go `checkRangeRequest`).
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A compare with an unknown result.
    #[error("invalid compare result {0}")]
    InvalidCompareResult(i32),
    /// A compare with an unknown target.
    #[error("invalid compare target {0}")]
    InvalidCompareTarget(i32),
    /// A request body that is not its message (malformed JSON, a wrong type, bad base64, two
    /// operations in one op): the decoder's text.
    #[error("{0}")]
    Malformed(String),
    /// A watch request that is not a `WatchRequest`: the decoder's text.
    #[error("invalid watch request: {0}")]
    InvalidWatchRequest(String),
    /// The request body ended inside a JSON object.
    #[error("unexpected end of request body inside a JSON object")]
    TruncatedBody,
    /// The request body could not be read from the connection.
    #[error("reading request body: {0}")]
    Body(String),
    /// A decoded request larger than gRPC's receive limit (`max_request_bytes` plus
    /// `GRPC_OVERHEAD_BYTES`), refused as grpc-go refuses the message before etcd sees it;
    /// etcd's gateway passes that on.
    #[error("grpc: received message larger than max ({found} vs. {limit})")]
    MessageTooLarge {
        /// The message's protobuf length.
        found: usize,
        /// The receive limit.
        limit: usize,
    },
    /// The call's `Grpc-Timeout` passed before it was answered (grpc-gateway turns the header
    /// into the call's deadline).
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    /// The watch stream's actor is gone: the server is stopping.
    #[error("watch stream closed")]
    StreamClosed,
    /// A lock whose key was deleted (its lease expired or was revoked) before it was acquired
    /// (etcd: client/v3/concurrency/mutex.go `ErrSessionExpired`).
    #[error("mutex: session is expired")]
    SessionExpired,
    /// A proclaim whose leader key is gone or was re-created (etcd: concurrency/election.go
    /// `ErrElectionNotLeader`).
    #[error("election: not leader")]
    ElectionNotLeader,
    /// `Leader` on an election without candidates (etcd: concurrency `ErrElectionNoLeader`).
    #[error("election: no leader")]
    ElectionNoLeader,
    /// A proclaim or resign without its leader key (etcd: v3election `ErrMissingLeaderKey`).
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// The watch a lock or campaign waited on ended (etcd: concurrency/key.go `waitDelete`).
    #[error("lost watcher waiting for delete")]
    LostWatcher,
    /// A store error met by a lock or election call. etcd's lock and election servers run
    /// their steps through an internal client, whose errors keep their text but lose their
    /// code: the client sees `Unknown`.
    #[error("{0}")]
    Relayed(String),
    /// A member id that names no member (etcd: rpctypes `ErrGRPCMemberNotFound`).
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A promote of a member that is no learner (etcd: rpctypes `ErrGRPCMemberNotLearner`).
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// A removal that would leave too few started members, here the last one (etcd: rpctypes
    /// `ErrGRPCNotEnoughStartedMembers`).
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// A leader move to a member that does not exist (etcd: rpctypes
    /// `ErrGRPCBadLeaderTransferee`).
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// A membership change a one-member server without consensus cannot make
    /// (`crate::api::membership`).
    #[error("watchkv is one member with no consensus layer: {0}")]
    FixedMembership(&'static str),
    /// An error from upstream etcd, met by a call a mirror forwarded (`crate::forward`): its
    /// code and text unchanged.
    #[error("{message}")]
    Upstream {
        /// Upstream's gRPC code.
        code: Code,
        /// Upstream's text.
        message: String,
    },
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::Upstream { code: status.code(), message: status.message().to_owned() }
    }
}

/// The text etcd gives a store error: `mvcc:` errors travel with `etcdserver: ` in front.
fn etcd_text(e: &Error) -> String {
    let text = e.to_string();
    if text.starts_with("mvcc:") {
        format!("etcdserver: {text}")
    } else {
        text
    }
}

impl ApiError {
    /// The gRPC code: etcd's for each of its errors (etcd: api/v3rpc/rpctypes/error.go).
    #[must_use]
    pub fn code(&self) -> Code {
        match self {
            Self::Store(e) => store_code(e),
            Self::InvalidSortOption
            | Self::InvalidCompareResult(_)
            | Self::InvalidCompareTarget(_)
            | Self::Malformed(_)
            | Self::InvalidWatchRequest(_)
            | Self::TruncatedBody
            | Self::Body(_) => Code::InvalidArgument,
            Self::StreamClosed => Code::Unavailable,
            Self::MessageTooLarge { .. } => Code::ResourceExhausted,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::MemberNotFound => Code::NotFound,
            Self::MemberNotLearner | Self::NotEnoughStartedMembers | Self::BadLeaderTransferee => {
                Code::FailedPrecondition
            }
            Self::FixedMembership(_) => Code::Unimplemented,
            // Plain Go errors returned by etcd's v3lock/v3election handlers.
            Self::SessionExpired
            | Self::ElectionNotLeader
            | Self::ElectionNoLeader
            | Self::MissingLeaderKey
            | Self::LostWatcher
            | Self::Relayed(_) => Code::Unknown,
            Self::Upstream { code, .. } => *code,
        }
    }

    /// The HTTP status the gateway answers with: the code's, by [`http_status`].
    #[must_use]
    pub fn http_status(&self) -> u16 {
        http_status(self.code())
    }
}

/// The gRPC code of a store error (etcd: rpctypes `ErrGRPC*`).
fn store_code(e: &Error) -> Code {
    match e {
        Error::Compacted { .. } | Error::FutureRev { .. } | Error::LeaseTtlTooLarge => Code::OutOfRange,
        Error::LeaseNotFound => Code::NotFound,
        Error::LeaseExists | Error::MirrorWrite => Code::FailedPrecondition,
        Error::NoSpace => Code::ResourceExhausted,
        Error::Auth(a) => auth_code(a),
        Error::CorruptAlarm => Code::DataLoss,
        Error::Stopped => Code::Unavailable,
        Error::TooManyOps
        | Error::DuplicateKey
        | Error::EmptyKey
        | Error::KeyNotFound
        | Error::ValueProvided
        | Error::LeaseProvided
        | Error::RequestTooLarge
        | Error::EmptyWatcherRange
        | Error::DuplicateWatchId
        | Error::NegativeWatchId
        | Error::NegativeStartRevision
        | Error::TooManyWatchers
        | Error::WatcherNotExist => Code::InvalidArgument,
        Error::Corrupt { .. }
        | Error::Poisoned
        | Error::Internal(_)
        | Error::CompactionFailed { .. }
        | Error::Storage(_)
        | Error::Io(_) => Code::Internal,
        // `Error` is non-exhaustive: a variant added later is the client's or the server's.
        other if other.is_client_error() => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

/// The gRPC code of an auth error (etcd: rpctypes `ErrGRPC*`).
fn auth_code(e: &watchkv::auth::AuthError) -> Code {
    use watchkv::auth::AuthError as A;
    match e {
        A::UserEmpty
        | A::RoleEmpty
        | A::AuthFailed
        | A::PermissionNotGiven
        | A::InvalidAuthMgmt
        | A::AuthOldRevision => Code::InvalidArgument,
        A::PermissionDenied => Code::PermissionDenied,
        A::InvalidAuthToken => Code::Unauthenticated,
        _ => Code::FailedPrecondition,
    }
}

/// The HTTP status the gateway gives a gRPC code: grpc-gateway's `HTTPStatusFromCode`
/// (runtime/errors.go) as docs/etcd-semantics.md §8 lists it.
#[must_use]
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 408,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

impl ApiError {
    /// `e` as a lock or election call reports it ([`ApiError::Relayed`]).
    #[must_use]
    pub fn relayed(e: Error) -> Self {
        Self::Relayed(Self::Store(e).to_string())
    }

    /// This error as a lock or election call reports it: etcd's text with code `Unknown`
    /// ([`ApiError::Relayed`]), as for a refused caller or permission.
    #[must_use]
    pub fn into_relayed(self) -> Self {
        match self {
            Self::Relayed(_) => self,
            other => Self::Relayed(other.to_string()),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_get_etcds_codes_and_texts() {
        let compacted = ApiError::from(Error::Compacted { requested: 1, compact_rev: 2 });
        assert_eq!(compacted.code(), Code::OutOfRange);
        assert_eq!(compacted.http_status(), 400);
        assert_eq!(compacted.to_string(), "etcdserver: mvcc: required revision has been compacted");
        let missing = ApiError::from(Error::LeaseNotFound);
        assert_eq!((missing.code(), missing.http_status()), (Code::NotFound, 404));
        assert_eq!(missing.to_string(), "etcdserver: requested lease not found");
        let exists = ApiError::from(Error::LeaseExists);
        assert_eq!((exists.code(), exists.http_status()), (Code::FailedPrecondition, 400));
        let stopped = ApiError::from(Error::Stopped);
        assert_eq!((stopped.code(), stopped.http_status()), (Code::Unavailable, 503));
        let internal = ApiError::from(Error::Internal("broken".into()));
        assert_eq!((internal.code(), internal.http_status()), (Code::Internal, 500));
        // Already prefixed by the core: not prefixed twice.
        assert_eq!(
            ApiError::from(Error::NegativeStartRevision).to_string(),
            "etcdserver: mvcc: required revision has been compacted"
        );
    }

    #[test]
    fn lock_and_election_errors_are_unknown_as_etcd_relays_them() {
        for (e, text) in [
            (ApiError::SessionExpired, "mutex: session is expired"),
            (ApiError::ElectionNotLeader, "election: not leader"),
            (ApiError::ElectionNoLeader, "election: no leader"),
            (ApiError::MissingLeaderKey, "\"leader\" field must be provided"),
            (ApiError::relayed(Error::LeaseNotFound), "etcdserver: requested lease not found"),
        ] {
            assert_eq!((e.code(), e.http_status(), e.to_string()), (Code::Unknown, 500, text.to_string()));
        }
    }

    #[test]
    fn the_status_carries_the_code_and_text() {
        let status = tonic::Status::from(ApiError::InvalidSortOption);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "etcdserver: invalid sort option");
    }
}
