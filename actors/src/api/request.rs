//! Owns the one conversion of etcd's request messages into the core's requests, with the
//! validation that belongs to the API rather than the store (enum values etcd's server checks
//! before the store sees the request). gRPC hands it the decoded protobuf, the gateway the
//! message it decoded from JSON, so a bad request gets the same text on both.

use watchkv::watch::watcher::Filters;
use watchkv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, PutRequest, RangeRequest, RequestOp,
    SortOrder, SortTarget, TxnRequest,
};

use super::pb::etcdserverpb as pb;
use super::ApiError;
use crate::WatchCreate;

/// Whether a txn goes through raft in etcd and so meets `--max-request-bytes`: every txn but
/// one whose ops, in both branches, are all ranges (etcd: v3_server.go `Txn` serves those with
/// `isTxnReadonly` without a proposal, so only gRPC's receive limit applies to them; a nested
/// txn makes it a proposal).
#[must_use]
pub fn txn_is_proposed(req: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as Op;
    !req.success.iter().chain(&req.failure).all(|op| matches!(op.request, Some(Op::RequestRange(_))))
}

/// Whether a write whose request message encodes to `message_len` bytes is within
/// `max_request_bytes` as etcd counts it: etcd measures the raft entry that wraps the request
/// (etcdserver/v3_server.go `processInternalRaftRequestOnce`, `InternalRaftRequest{Header: {ID},
/// Put: ...}`), so the message as a field (tag and length) plus a request header holding etcd's
/// 64-bit request id counts too: 18 bytes more at the default limit. The id starts with the
/// member id's low 16 bits, so its varint takes ten bytes or (top bit clear) nine; ten are
/// counted, so that nothing any etcd member refuses is taken. With auth on, the header also
/// names the caller and the auth revision: `auth_header_bytes` of them
/// ([`crate::api::auth::Auth::raft_header_bytes`]). `etcdserver: request is too large`
/// otherwise.
#[must_use]
pub fn write_fits(message_len: usize, max_request_bytes: usize, auth_header_bytes: usize) -> bool {
    use prost::encoding::encoded_len_varint;
    /// The request id's tag and ten-byte varint.
    const REQUEST_ID_FIELD: usize = 1 + 10;
    let header = REQUEST_ID_FIELD + auth_header_bytes;
    // The `header` field: its two-byte tag (field 100), its length, then the header.
    let header_field = 2 + encoded_len_varint(header as u64) + header;
    let as_field = 1 + encoded_len_varint(message_len as u64) + message_len;
    as_field + header_field <= max_request_bytes
}

/// `RangeRequest`.
///
/// # Errors
/// An unknown sort order or target: etcd's `invalid sort option` (etcd: v3rpc/key.go
/// `checkRangeRequest`).
pub fn range_request(r: pb::RangeRequest) -> Result<RangeRequest, ApiError> {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    let sort_order = match O::try_from(r.sort_order) {
        Ok(O::None) => SortOrder::None,
        Ok(O::Ascend) => SortOrder::Ascend,
        Ok(O::Descend) => SortOrder::Descend,
        Err(_) => return Err(ApiError::InvalidSortOption),
    };
    let sort_target = match T::try_from(r.sort_target) {
        Ok(T::Key) => SortTarget::Key,
        Ok(T::Version) => SortTarget::Version,
        Ok(T::Create) => SortTarget::Create,
        Ok(T::Mod) => SortTarget::Mod,
        Ok(T::Value) => SortTarget::Value,
        Err(_) => return Err(ApiError::InvalidSortOption),
    };
    Ok(RangeRequest {
        range: KeyRange::from_wire(&r.key, &r.range_end),
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

/// `PutRequest`.
#[must_use]
pub fn put_request(r: pb::PutRequest) -> PutRequest {
    PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

/// `DeleteRangeRequest`.
#[must_use]
pub fn delete_request(r: pb::DeleteRangeRequest) -> DeleteRangeRequest {
    DeleteRangeRequest { range: KeyRange::from_wire(&r.key, &r.range_end), prev_kv: r.prev_kv }
}

/// `Compare`: the value compared is read from `target_union` by `target`, as etcd's
/// `applyCompare` does; a union of another kind compares against the zero value.
fn compare(c: pb::Compare) -> Result<Compare, ApiError> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => return Err(ApiError::InvalidCompareResult(c.result)),
    };
    let union = c.target_union;
    let target = match T::try_from(c.target) {
        Ok(T::Version) => CompareTarget::Version(if let Some(U::Version(v)) = union { v } else { 0 }),
        Ok(T::Create) => CompareTarget::Create(if let Some(U::CreateRevision(v)) = union { v } else { 0 }),
        Ok(T::Mod) => CompareTarget::Mod(if let Some(U::ModRevision(v)) = union { v } else { 0 }),
        Ok(T::Value) => CompareTarget::Value(if let Some(U::Value(v)) = union { v } else { Vec::new() }),
        Ok(T::Lease) => CompareTarget::Lease(if let Some(U::Lease(v)) = union { v } else { 0 }),
        Err(_) => return Err(ApiError::InvalidCompareTarget(c.target)),
    };
    Ok(Compare { range: KeyRange::from_wire(&c.key, &c.range_end), result, target })
}

/// `TxnRequest`, nested txns included. An op with nothing set becomes `RequestOp::Empty`,
/// which the store answers with etcd's `key not found` (docs/etcd-semantics.md §1.3).
///
/// # Errors
/// An unknown enum value in a compare or a nested range.
pub fn txn_request(t: pb::TxnRequest) -> Result<TxnRequest, ApiError> {
    fn ops(list: Vec<pb::RequestOp>) -> Result<Vec<RequestOp>, ApiError> {
        use pb::request_op::Request;
        list.into_iter()
            .map(|op| {
                Ok(match op.request {
                    Some(Request::RequestRange(r)) => RequestOp::Range(range_request(r)?),
                    Some(Request::RequestPut(p)) => RequestOp::Put(put_request(p)),
                    Some(Request::RequestDeleteRange(d)) => RequestOp::DeleteRange(delete_request(d)),
                    Some(Request::RequestTxn(t)) => RequestOp::Txn(txn_request(t)?),
                    None => RequestOp::Empty,
                })
            })
            .collect()
    }
    Ok(TxnRequest {
        compare: t.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: ops(t.success)?,
        failure: ops(t.failure)?,
    })
}

/// `WatchCreateRequest`; filter values other than NOPUT and NODELETE are ignored, as etcd does.
#[must_use]
pub fn watch_create(c: pb::WatchCreateRequest) -> WatchCreate {
    use pb::watch_create_request::FilterType;
    WatchCreate {
        key: c.key,
        range_end: c.range_end,
        start_revision: c.start_revision,
        progress_notify: c.progress_notify,
        filters: Filters {
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        },
        prev_kv: c.prev_kv,
        watch_id: c.watch_id,
        fragment: c.fragment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sort_order_is_etcds_invalid_sort_option() {
        let req = pb::RangeRequest { key: b"a".to_vec(), sort_order: 7, ..Default::default() };
        let err = range_request(req).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(err, Err("etcdserver: invalid sort option".to_string()));
        let req = pb::RangeRequest { key: b"a".to_vec(), sort_target: 9, ..Default::default() };
        assert!(matches!(range_request(req), Err(ApiError::InvalidSortOption)));
    }

    #[test]
    fn compare_reads_the_union_named_by_its_target() {
        let c = pb::Compare {
            key: b"k".to_vec(),
            target: pb::compare::CompareTarget::Mod as i32,
            result: pb::compare::CompareResult::Greater as i32,
            target_union: Some(pb::compare::TargetUnion::ModRevision(7)),
            ..Default::default()
        };
        let got = compare(c).map(|c| c.target).map_err(|e| e.to_string());
        assert_eq!(got, Ok(CompareTarget::Mod(7)));
        // A union of another kind: etcd compares against the zero value.
        let c = pb::Compare {
            key: b"k".to_vec(),
            target: pb::compare::CompareTarget::Value as i32,
            target_union: Some(pb::compare::TargetUnion::Version(3)),
            ..Default::default()
        };
        assert_eq!(compare(c).map(|c| c.target).map_err(|e| e.to_string()), Ok(CompareTarget::Value(Vec::new())));
    }

    /// etcd 3.4.23 at its default limit (1.5 MiB) takes a put of key `big` with a value of
    /// 1,572,838 bytes on a member whose request ids take nine bytes, and refuses one byte
    /// more; a member whose ids take ten refuses that one too. The ten-byte member's limit is
    /// the one kept.
    #[test]
    fn writes_are_measured_as_etcds_raft_entry() {
        use prost::Message as _;
        let put = |len: usize| pb::PutRequest { key: b"big".to_vec(), value: vec![b'v'; len], ..Default::default() };
        let limit = watchkv::config::DEFAULT_MAX_REQUEST_BYTES;
        assert!(write_fits(put(1_572_837).encoded_len(), limit, 0));
        assert!(!write_fits(put(1_572_838).encoded_len(), limit, 0));
        // With auth on, the header also carries `username` "alice" (7 bytes as a field) and
        // the auth revision 9 (2 bytes): nine bytes fewer for the value.
        assert!(write_fits(put(1_572_828).encoded_len(), limit, 9));
        assert!(!write_fits(put(1_572_829).encoded_len(), limit, 9));
    }
}
