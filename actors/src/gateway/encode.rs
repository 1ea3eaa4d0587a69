//! Owns the gateway's response encoding: the core's responses as grpc-gateway writes etcd's
//! messages (docs/etcd-semantics.md §8): proto field names, int64 as strings, bytes as base64,
//! default values omitted, fields in field-number order. Written by hand rather than through
//! the protobuf messages so that a watch response is written straight from the core's values.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tonic::Code;
use watchkv::watch::response::WatchResponse;
use watchkv::{
    DeleteRangeResponse, Event, EventKind, KeyValue, PutResponse, RangeResponse, ResponseOp, TxnResponse, WireForm,
};

use crate::api::election::{Leadership, Proclamation};
use crate::api::{ApiError, Header, REPORTED_ETCD_VERSION};

/// Writes a JSON object field by field, omitting defaults as protojson does.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
    }

    fn int(&mut self, name: &str, v: i64) {
        if v != 0 {
            self.key(name);
            let _ = write!(self.out, "\"{v}\"");
        }
    }

    fn uint(&mut self, name: &str, v: u64) {
        if v != 0 {
            self.key(name);
            let _ = write!(self.out, "\"{v}\"");
        }
    }

    /// A uint32 (or int32) field: protojson writes these as JSON numbers.
    fn uint32(&mut self, name: &str, v: u32) {
        if v != 0 {
            self.key(name);
            let _ = write!(self.out, "{v}");
        }
    }

    fn flag(&mut self, name: &str, v: bool) {
        if v {
            self.key(name);
            self.out.push_str("true");
        }
    }

    fn bytes(&mut self, name: &str, v: &[u8]) {
        if !v.is_empty() {
            self.key(name);
            self.out.push('"');
            STANDARD.encode_string(v, self.out);
            self.out.push('"');
        }
    }

    fn string(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            self.key(name);
            let _ = write!(self.out, "{}", serde_json::Value::String(v.to_string()));
        }
    }

    fn raw(&mut self, name: &str, f: impl FnOnce(&mut String)) {
        self.key(name);
        f(self.out);
    }

    fn list<T>(&mut self, name: &str, items: &[T], mut f: impl FnMut(&mut String, &T)) {
        if items.is_empty() {
            return;
        }
        self.key(name);
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            f(self.out, item);
        }
        self.out.push(']');
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// Writes a response header with `revision`.
pub fn write_header(out: &mut String, h: Header, revision: i64) {
    let mut o = Obj::open(out);
    o.uint("cluster_id", h.cluster_id);
    o.uint("member_id", h.member_id);
    o.int("revision", revision);
    o.uint("raft_term", h.raft_term);
    o.close();
}

/// Writes a `mvccpb.KeyValue`.
pub fn write_kv(out: &mut String, kv: &KeyValue) {
    let mut o = Obj::open(out);
    o.bytes("key", &kv.key);
    o.int("create_revision", kv.create_revision);
    o.int("mod_revision", kv.mod_revision);
    o.int("version", kv.version);
    o.bytes("value", &kv.value);
    o.int("lease", kv.lease);
    o.close();
}

/// Writes a `mvccpb.Event`; `prev_kv` only if `with_prev`.
pub fn write_event(out: &mut String, e: &Event, with_prev: bool) {
    let mut o = Obj::open(out);
    if e.kind == EventKind::Delete {
        o.raw("type", |out| out.push_str("\"DELETE\""));
    }
    o.raw("kv", |out| write_kv(out, &e.kv));
    if let (true, Some(prev)) = (with_prev, &e.prev_kv) {
        o.raw("prev_kv", |out| write_kv(out, prev));
    }
    o.close();
}

/// Writes a `RangeResponse`; `header` is `None` inside a txn (etcd fills only the revision).
pub fn write_range(out: &mut String, h: Option<Header>, r: &RangeResponse) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_sub_header(out, h, r.revision));
    o.list("kvs", &r.kvs, write_kv);
    o.flag("more", r.more);
    o.int("count", r.count);
    o.close();
}

fn write_sub_header(out: &mut String, h: Option<Header>, revision: i64) {
    match h {
        Some(h) => write_header(out, h, revision),
        None => {
            let mut o = Obj::open(out);
            o.int("revision", revision);
            o.close();
        }
    }
}

/// Writes a `PutResponse`.
pub fn write_put(out: &mut String, h: Option<Header>, r: &PutResponse) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_sub_header(out, h, r.revision));
    if let Some(prev) = &r.prev_kv {
        o.raw("prev_kv", |out| write_kv(out, prev));
    }
    o.close();
}

/// Writes a `DeleteRangeResponse`.
pub fn write_delete(out: &mut String, h: Option<Header>, r: &DeleteRangeResponse) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_sub_header(out, h, r.revision));
    o.int("deleted", r.deleted);
    o.list("prev_kvs", &r.prev_kvs, write_kv);
    o.close();
}

/// Writes a `TxnResponse`.
pub fn write_txn(out: &mut String, h: Option<Header>, r: &TxnResponse) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_sub_header(out, h, r.revision));
    o.flag("succeeded", r.succeeded);
    o.list("responses", &r.responses, |out, op| {
        let mut inner = Obj::open(out);
        match op {
            ResponseOp::Range(r) => inner.raw("response_range", |out| write_range(out, None, r)),
            ResponseOp::Put(r) => inner.raw("response_put", |out| write_put(out, None, r)),
            ResponseOp::DeleteRange(r) => inner.raw("response_delete_range", |out| write_delete(out, None, r)),
            ResponseOp::Txn(r) => inner.raw("response_txn", |out| write_txn(out, None, r)),
        }
        inner.close();
    });
    o.close();
}

/// Writes a response whose only field is the header (`CompactionResponse`,
/// `LeaseRevokeResponse`).
pub fn write_header_only(out: &mut String, h: Header, revision: i64) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.close();
}

/// Writes a `LeaseGrantResponse` / `LeaseKeepAliveResponse` body: header, `ID`, `TTL`.
pub fn write_lease(out: &mut String, h: Header, revision: i64, id: i64, ttl: i64) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.int("ID", id);
    o.int("TTL", ttl);
    o.close();
}

/// Writes a `v3lockpb.LockResponse`.
pub fn write_lock(out: &mut String, h: Header, revision: i64, key: &[u8]) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.bytes("key", key);
    o.close();
}

/// Writes a `v3electionpb.CampaignResponse`.
pub fn write_campaign(out: &mut String, h: Header, revision: i64, leader: &Leadership) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.raw("leader", |out| {
        let mut l = Obj::open(out);
        l.bytes("name", &leader.name);
        l.bytes("key", &leader.key);
        l.int("rev", leader.rev);
        l.int("lease", leader.lease);
        l.close();
    });
    o.close();
}

/// Writes a `v3electionpb.LeaderResponse` (`Leader`, and each line of `Observe`).
pub fn write_leader(out: &mut String, h: Header, p: &Proclamation) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, p.revision));
    o.raw("kv", |out| write_kv(out, &p.kv));
    o.close();
}

/// Writes a `LeaseTimeToLiveResponse`.
pub fn write_lease_ttl(out: &mut String, h: Header, revision: i64, id: i64, ttl: i64, granted: i64, keys: &[Vec<u8>]) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.int("ID", id);
    o.int("TTL", ttl);
    o.int("grantedTTL", granted);
    o.list("keys", keys, |out, k| {
        out.push('"');
        STANDARD.encode_string(k, out);
        out.push('"');
    });
    o.close();
}

/// Writes a `LeaseLeasesResponse`.
pub fn write_leases(out: &mut String, h: Header, revision: i64, ids: &[i64]) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.list("leases", ids, |out, id| {
        let mut l = Obj::open(out);
        l.int("ID", *id);
        l.close();
    });
    o.close();
}

/// Writes a `WatchResponse` line as etcd's gateway streams it: `{"result":{...}}` and a
/// newline. Each event is written from its JSON made once per event and shared by every
/// watcher that receives it (`Event::encoded`), so a watcher's line costs its header and
/// flags plus a copy of bytes already made.
#[must_use]
pub fn watch_response_line(h: Header, r: &WatchResponse) -> Vec<u8> {
    let mut head = String::with_capacity(160);
    head.push_str("{\"result\":");
    let mut o = Obj::open(&mut head);
    o.raw("header", |out| write_header(out, h, r.revision));
    o.int("watch_id", r.watch_id);
    o.flag("created", r.created);
    o.flag("canceled", r.canceled);
    o.int("compact_revision", r.compact_revision);
    o.string("cancel_reason", &r.cancel_reason);
    o.flag("fragment", r.fragment);
    if r.events.is_empty() {
        o.close();
        head.push_str("}\n");
        return head.into_bytes();
    }
    o.raw("events", |out| out.push('['));
    let (form, prev_kv) = if r.prev_kv { (WireForm::JsonWithPrevKv, true) } else { (WireForm::Json, false) };
    let json = move |e: &Event| {
        let mut json = String::new();
        write_event(&mut json, e, prev_kv);
        json.into_bytes()
    };
    // The line's size first, so that it is written into one allocation: grown event by event,
    // a line of large events was copied again at each doubling (the gRPC encoder's case,
    // docs/benchmarks.md, "Large values").
    let events_len: usize = r.events.iter().map(|e| e.encoded(form, json).len() + 1).sum();
    let mut out = head.into_bytes();
    out.reserve(events_len + 3);
    for (i, event) in r.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event.encoded(form, json));
    }
    out.extend_from_slice(b"]}}\n");
    out
}

/// Writes a `StatusResponse`: one member that leads itself, the revision standing in for raft's
/// index and applied index.
pub fn write_member_status(out: &mut String, h: Header, revision: i64, db_size: u64, errors: &[String]) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.string("version", REPORTED_ETCD_VERSION);
    o.uint("dbSize", db_size);
    o.uint("leader", h.member_id);
    o.int("raftIndex", revision);
    o.uint("raftTerm", h.raft_term);
    o.int("raftAppliedIndex", revision);
    o.list("errors", errors, |out, e| {
        let _ = write!(out, "{}", serde_json::Value::String(e.clone()));
    });
    o.uint("dbSizeInUse", db_size);
    o.close();
}

/// Writes a `MemberListResponse` of one member, this server: its id, name and client URLs (no
/// peer URLs: it has no peers), with etcd's field names (`ID`, `clientURLs`).
pub fn write_member_list(out: &mut String, h: Header, name: &str, client_urls: &[String]) {
    let mut o = Obj::open(out);
    // etcd's cluster service header carries no revision (etcdserver/api/v3rpc/member.go
    // `ClusterServer.header`).
    o.raw("header", |out| write_header(out, h, 0));
    o.raw("members", |out| {
        out.push('[');
        let mut m = Obj::open(out);
        m.uint("ID", h.member_id);
        m.string("name", name);
        m.list("clientURLs", client_urls, |out, url| {
            let _ = write!(out, "{}", serde_json::Value::String(url.clone()));
        });
        m.close();
        out.push(']');
    });
    o.close();
}

/// Writes an `AlarmResponse`: etcd's carries no header.
pub fn write_alarms(out: &mut String, alarms: &[watchkv::alarm::AlarmMember]) {
    let mut o = Obj::open(out);
    o.list("alarms", alarms, |out, a| {
        let mut l = Obj::open(out);
        l.uint("memberID", a.member_id);
        l.string("alarm", a.alarm.name());
        l.close();
    });
    o.close();
}

/// Writes an `AuthStatusResponse`.
pub fn write_auth_status(out: &mut String, h: Header, revision: i64, enabled: bool, auth_revision: u64) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.flag("enabled", enabled);
    o.uint("authRevision", auth_revision);
    o.close();
}

/// Writes an `AuthenticateResponse`.
pub fn write_token(out: &mut String, h: Header, revision: i64, token: &str) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.string("token", token);
    o.close();
}

/// Writes a response of a header and a list of names (`roles` of `AuthUserGetResponse` and
/// `AuthRoleListResponse`, `users` of `AuthUserListResponse`).
pub fn write_names(out: &mut String, h: Header, revision: i64, field: &str, names: &[String]) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.list(field, names, |out, n| {
        let _ = write!(out, "{}", serde_json::Value::String(n.clone()));
    });
    o.close();
}

/// Writes an `AuthRoleGetResponse`: permission types by name, the zero one (`READ`) left out
/// as protojson leaves out zero values.
pub fn write_role_perms(out: &mut String, h: Header, revision: i64, perms: &[crate::api::pb::authpb::Permission]) {
    const NAMES: [&str; 3] = ["READ", "WRITE", "READWRITE"];
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.list("perm", perms, |out, p| {
        let mut l = Obj::open(out);
        if p.perm_type != 0 {
            let name = usize::try_from(p.perm_type).ok().and_then(|i| NAMES.get(i)).copied();
            match name {
                Some(name) => l.string("permType", name),
                None => l.raw("permType", |out| {
                    let _ = write!(out, "{}", p.perm_type);
                }),
            }
        }
        l.bytes("key", &p.key);
        l.bytes("range_end", &p.range_end);
        l.close();
    });
    o.close();
}

/// Writes a `HashResponse`.
pub fn write_hash(out: &mut String, h: Header, revision: i64, hash: u32) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.uint32("hash", hash);
    o.close();
}

/// Writes a `HashKVResponse`.
pub fn write_hash_kv(out: &mut String, h: Header, kv: &watchkv::hash::KvHash) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, kv.current_revision));
    o.uint32("hash", kv.hash);
    o.int("compact_revision", kv.compact_revision);
    o.int("hash_revision", kv.hash_revision);
    o.close();
}

/// Writes one line of the snapshot stream: `{"result":SnapshotResponse}`.
pub fn write_snapshot_line(out: &mut String, h: Header, revision: i64, remaining_bytes: u64, blob: &[u8]) {
    out.push_str("{\"result\":");
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, revision));
    o.uint("remaining_bytes", remaining_bytes);
    o.bytes("blob", blob);
    o.close();
    out.push('}');
}

/// Writes etcd's `GET /version` body.
pub fn write_version(out: &mut String) {
    let mut o = Obj::open(out);
    o.string("etcdserver", REPORTED_ETCD_VERSION);
    o.string("etcdcluster", REPORTED_ETCD_VERSION);
    o.close();
}

/// Writes a `google.rpc.Status` error body: the code as its number, as protojson writes an
/// int32.
pub fn write_status(out: &mut String, code: Code, message: &str) {
    out.push_str("{\"code\":");
    let _ = write!(out, "{}", code as i32);
    out.push_str(",\"message\":");
    let _ = write!(out, "{}", serde_json::Value::String(message.to_string()));
    out.push('}');
}

/// Writes an error body for `e`: its code and etcd's text.
pub fn write_error(out: &mut String, e: &ApiError) {
    write_status(out, e.code(), &e.to_string());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn encodes_like_grpc_gateway() {
        let h = Header { cluster_id: 1, member_id: 2, raft_term: 3 };
        let line = |r: &WatchResponse| String::from_utf8(watch_response_line(h, r)).expect("utf-8");
        assert_eq!(
            line(&WatchResponse::created(0, 1)),
            "{\"result\":{\"header\":{\"cluster_id\":\"1\",\"member_id\":\"2\",\"revision\":\"1\",\"raft_term\":\"3\"},\"created\":true}}\n"
        );
        let mut out = String::new();
        let e = Event::new(
            EventKind::Delete,
            KeyValue { key: b"foo".to_vec(), mod_revision: 3, ..KeyValue::default() },
            None,
        );
        write_event(&mut out, &e, false);
        assert_eq!(out, r#"{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"3"}}"#);
    }

    #[test]
    fn watch_lines_share_each_events_json_and_match_the_fields_written_one_by_one() {
        let h = Header { cluster_id: 1, member_id: 2, raft_term: 3 };
        let prev = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: b"a".to_vec(),
            lease: 0,
        };
        let kv = KeyValue { mod_revision: 3, version: 2, value: b"b".to_vec(), ..prev.clone() };
        let put = Arc::new(Event::new(EventKind::Put, kv, Some(prev)));
        let delete = Arc::new(Event::new(
            EventKind::Delete,
            KeyValue { key: b"k".to_vec(), mod_revision: 4, ..KeyValue::default() },
            None,
        ));
        for with_prev in [false, true] {
            let mut r = WatchResponse::events(7, 4, vec![Arc::clone(&put), Arc::clone(&delete)], with_prev);
            r.fragment = true;
            let mut expected = String::from("{\"result\":{\"header\":");
            write_header(&mut expected, h, 4);
            expected.push_str(",\"watch_id\":\"7\",\"fragment\":true,\"events\":[");
            write_event(&mut expected, &put, with_prev);
            expected.push(',');
            write_event(&mut expected, &delete, with_prev);
            expected.push_str("]}}\n");
            // Twice: the second line is written from the events' cached JSON.
            for _ in 0..2 {
                let line = watch_response_line(h, &r);
                assert_eq!(String::from_utf8(line).expect("utf-8"), expected);
                let parsed: serde_json::Value = serde_json::from_str(&expected).expect("valid JSON");
                assert_eq!(parsed["result"]["events"].as_array().map(Vec::len), Some(2));
            }
        }
        let json = |e: &Event, form| e.encoded(form, |_| unreachable!("encoded by the lines above")).to_vec();
        assert!(String::from_utf8(json(&put, WireForm::JsonWithPrevKv)).expect("utf-8").contains("prev_kv"));
        assert!(!String::from_utf8(json(&put, WireForm::Json)).expect("utf-8").contains("prev_kv"));
    }
}
