//! Owns the core's responses as etcd's protobuf messages. Requests go the other way through
//! the API layer ([`crate::api::request`]), which the gateway shares.

use watchkv::{DeleteRangeResponse, Event, EventKind, KeyValue, PutResponse, RangeResponse, ResponseOp, TxnResponse};

use crate::api::pb::etcdserverpb as pb;
use crate::api::pb::mvccpb;
use crate::api::Header;

/// The header of a response nested in a txn: etcd fills in only the revision.
fn sub_header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader { revision, ..Default::default() })
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

/// The core's `KeyValue`, taking an `mvccpb.KeyValue` (one upstream sent a mirror).
#[must_use]
pub fn from_key_value(kv: mvccpb::KeyValue) -> KeyValue {
    KeyValue {
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
        header: h.map_or_else(|| sub_header(r.revision), |h| Some(h.at(r.revision))),
        kvs: r.kvs.into_iter().map(into_key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

/// `PutResponse`; `h` is `None` inside a txn.
#[must_use]
pub fn put_response(h: Option<Header>, r: PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: h.map_or_else(|| sub_header(r.revision), |h| Some(h.at(r.revision))),
        prev_kv: r.prev_kv.map(into_key_value),
    }
}

/// `DeleteRangeResponse`; `h` is `None` inside a txn.
#[must_use]
pub fn delete_response(h: Option<Header>, r: DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: h.map_or_else(|| sub_header(r.revision), |h| Some(h.at(r.revision))),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(into_key_value).collect(),
    }
}

/// `TxnResponse`; `h` is `None` for a nested txn.
#[must_use]
pub fn txn_response(h: Option<Header>, r: TxnResponse) -> pb::TxnResponse {
    use pb::response_op::Response;
    pb::TxnResponse {
        header: h.map_or_else(|| sub_header(r.revision), |h| Some(h.at(r.revision))),
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

/// `mvccpb.Event`; `prev_kv` only when the watcher asked for it. Made once per event and
/// shared by every watcher (see `wire`).
#[must_use]
pub fn event(e: &Event, with_prev_kv: bool) -> mvccpb::Event {
    let kind = match e.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(into_key_value(e.kv.clone())),
        prev_kv: if with_prev_kv { e.prev_kv.clone().map(into_key_value) } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(out.header, Some(h.at(9)));
        let Some(pb::response_op::Response::ResponseTxn(nested)) = &out.responses[0].response else {
            panic!("expected a nested txn response, got {:?}", out.responses[0]);
        };
        assert_eq!(nested.header, Some(pb::ResponseHeader { revision: 9, ..Default::default() }));
    }
}
