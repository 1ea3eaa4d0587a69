//! Owns the translation between etcd's protobuf messages and the core's request and response
//! types, in both directions (the server uses one, the test client and tools the other).

use watchkv::watch::response::WatchResponse;
use watchkv::watch::watcher::Filters;
use watchkv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyRange,
    KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget,
    TxnRequest, TxnResponse,
};

use super::pb::etcdserverpb as pb;
use super::pb::mvccpb;
use crate::gateway::json::Header;
use crate::stream_actor::WatchCreate;

/// etcd's text for an unknown sort order or target (`rpctypes.ErrGRPCInvalidSortOption`).
pub const INVALID_SORT_OPTION: &str = "etcdserver: invalid sort option";

/// A request that cannot be translated: the message for an `InvalidArgument` status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// A full response header: identity plus the revision.
#[must_use]
pub fn header(h: Header, revision: i64) -> pb::ResponseHeader {
    pb::ResponseHeader { cluster_id: h.cluster_id, member_id: h.member_id, revision, raft_term: h.raft_term }
}

/// The header of a response nested in a txn: etcd fills in only the revision.
fn sub_header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader { revision, ..Default::default() })
}

// ----- requests: protobuf -> core -----

/// `RangeRequest`.
///
/// # Errors
/// An unknown sort order or target.
pub fn range_request(r: pb::RangeRequest) -> Result<RangeRequest, BadRequest> {
    let sort_order = match pb::range_request::SortOrder::try_from(r.sort_order) {
        Ok(pb::range_request::SortOrder::None) => SortOrder::None,
        Ok(pb::range_request::SortOrder::Ascend) => SortOrder::Ascend,
        Ok(pb::range_request::SortOrder::Descend) => SortOrder::Descend,
        Err(_) => return Err(BadRequest(INVALID_SORT_OPTION.into())),
    };
    let sort_target = match pb::range_request::SortTarget::try_from(r.sort_target) {
        Ok(pb::range_request::SortTarget::Key) => SortTarget::Key,
        Ok(pb::range_request::SortTarget::Version) => SortTarget::Version,
        Ok(pb::range_request::SortTarget::Create) => SortTarget::Create,
        Ok(pb::range_request::SortTarget::Mod) => SortTarget::Mod,
        Ok(pb::range_request::SortTarget::Value) => SortTarget::Value,
        Err(_) => return Err(BadRequest(INVALID_SORT_OPTION.into())),
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
fn compare(c: pb::Compare) -> Result<Compare, BadRequest> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => return Err(BadRequest(format!("invalid compare result {}", c.result))),
    };
    let union = c.target_union;
    let target = match T::try_from(c.target) {
        Ok(T::Version) => CompareTarget::Version(if let Some(U::Version(v)) = union { v } else { 0 }),
        Ok(T::Create) => CompareTarget::Create(if let Some(U::CreateRevision(v)) = union { v } else { 0 }),
        Ok(T::Mod) => CompareTarget::Mod(if let Some(U::ModRevision(v)) = union { v } else { 0 }),
        Ok(T::Value) => CompareTarget::Value(if let Some(U::Value(v)) = union { v } else { Vec::new() }),
        Ok(T::Lease) => CompareTarget::Lease(if let Some(U::Lease(v)) = union { v } else { 0 }),
        Err(_) => return Err(BadRequest(format!("invalid compare target {}", c.target))),
    };
    Ok(Compare { range: KeyRange::from_wire(&c.key, &c.range_end), result, target })
}

/// `TxnRequest`, nested txns included.
///
/// # Errors
/// An unknown enum value in a compare or a nested range.
pub fn txn_request(t: pb::TxnRequest) -> Result<TxnRequest, BadRequest> {
    fn ops(list: Vec<pb::RequestOp>) -> Result<Vec<RequestOp>, BadRequest> {
        list.into_iter()
            .map(|op| {
                Ok(match op.request {
                    Some(pb::request_op::Request::RequestRange(r)) => RequestOp::Range(range_request(r)?),
                    Some(pb::request_op::Request::RequestPut(p)) => RequestOp::Put(put_request(p)),
                    Some(pb::request_op::Request::RequestDeleteRange(d)) => RequestOp::DeleteRange(delete_request(d)),
                    Some(pb::request_op::Request::RequestTxn(t)) => RequestOp::Txn(txn_request(t)?),
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

// ----- responses: core -> protobuf -----

/// `mvccpb.KeyValue`, copying the core value (a watch response is encoded per watcher).
#[must_use]
pub fn key_value(kv: &KeyValue) -> mvccpb::KeyValue {
    into_key_value(kv.clone())
}

/// `mvccpb.KeyValue`, taking the core value.
#[must_use]
pub fn into_key_value(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// `RangeResponse`; `h` is `None` inside a txn.
#[must_use]
pub fn range_response(h: Option<Header>, r: RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: h.map_or_else(|| sub_header(r.revision), |h| Some(header(h, r.revision))),
        kvs: r.kvs.into_iter().map(into_key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

/// `PutResponse`; `h` is `None` inside a txn.
#[must_use]
pub fn put_response(h: Option<Header>, r: PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: h.map_or_else(|| sub_header(r.revision), |h| Some(header(h, r.revision))),
        prev_kv: r.prev_kv.map(into_key_value),
    }
}

/// `DeleteRangeResponse`; `h` is `None` inside a txn.
#[must_use]
pub fn delete_response(h: Option<Header>, r: DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: h.map_or_else(|| sub_header(r.revision), |h| Some(header(h, r.revision))),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(into_key_value).collect(),
    }
}

/// `TxnResponse`; `h` is `None` for a nested txn.
#[must_use]
pub fn txn_response(h: Option<Header>, r: TxnResponse) -> pb::TxnResponse {
    use pb::response_op::Response;
    pb::TxnResponse {
        header: h.map_or_else(|| sub_header(r.revision), |h| Some(header(h, r.revision))),
        succeeded: r.succeeded,
        responses: r
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    ResponseOp::Range(r) => Response::ResponseRange(range_response(None, r)),
                    ResponseOp::Put(r) => Response::ResponsePut(put_response(None, r)),
                    ResponseOp::DeleteRange(r) => Response::ResponseDeleteRange(delete_response(None, r)),
                    ResponseOp::Txn(r) => Response::ResponseTxn(txn_response(None, r)),
                }),
            })
            .collect(),
    }
}

/// `mvccpb.Event`; `prev_kv` only when the watcher asked for it.
#[must_use]
pub fn event(e: &Event, with_prev_kv: bool) -> mvccpb::Event {
    let kind = match e.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(key_value(&e.kv)),
        prev_kv: if with_prev_kv { e.prev_kv.as_ref().map(key_value) } else { None },
    }
}

/// `WatchResponse`.
#[must_use]
pub fn watch_response(h: Header, r: &WatchResponse) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(header(h, r.revision)),
        watch_id: r.watch_id,
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        cancel_reason: r.cancel_reason.clone(),
        fragment: r.fragment,
        events: r.events.iter().map(|e| event(e, r.prev_kv)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sort_order_is_etcds_invalid_sort_option() {
        let req = pb::RangeRequest { key: b"a".to_vec(), sort_order: 7, ..Default::default() };
        assert_eq!(range_request(req), Err(BadRequest(INVALID_SORT_OPTION.into())));
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
        let got = compare(c).map(|c| c.target);
        assert_eq!(got, Ok(CompareTarget::Mod(7)));
        // A union of another kind: etcd compares against the zero value.
        let c = pb::Compare {
            key: b"k".to_vec(),
            target: pb::compare::CompareTarget::Value as i32,
            target_union: Some(pb::compare::TargetUnion::Version(3)),
            ..Default::default()
        };
        assert_eq!(compare(c).map(|c| c.target), Ok(CompareTarget::Value(Vec::new())));
    }

    #[test]
    fn nested_txn_headers_carry_only_the_revision() {
        let inner = TxnResponse {
            revision: 9,
            succeeded: true,
            responses: vec![ResponseOp::Put(PutResponse { revision: 9, prev_kv: None })],
        };
        let h = Header { cluster_id: 1, member_id: 2, raft_term: 3 };
        let out = txn_response(
            Some(h),
            TxnResponse { revision: 9, succeeded: true, responses: vec![ResponseOp::Txn(inner)] },
        );
        assert_eq!(out.header, Some(header(h, 9)));
        let Some(pb::response_op::Response::ResponseTxn(nested)) = &out.responses[0].response else {
            panic!("expected a nested txn response, got {:?}", out.responses[0]);
        };
        assert_eq!(nested.header, Some(pb::ResponseHeader { revision: 9, ..Default::default() }));
    }
}
