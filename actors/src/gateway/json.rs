//! Owns the grpc-gateway JSON shapes (spec §8): request decoding (proto or lowerCamelCase
//! names, int64 as string or number, base64 standard or URL-safe, padded or not, enums by name
//! or number, unknown fields ignored) and response encoding (proto names, int64 as strings,
//! base64, default values omitted, field-number order).

use std::fmt::Write as _;

use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use base64::Engine as _;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use watchkv::watch::response::WatchResponse;
use watchkv::watch::watcher::Filters;
use watchkv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyRange,
    KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget,
    TxnRequest, TxnResponse,
};

use crate::stream_actor::WatchCreate;

// ----- decoding helpers -----

/// Accepts an int64 as a JSON string or number (protojson).
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Num(i64),
        Str(String),
        Float(f64),
    }
    match Wire::deserialize(d)? {
        Wire::Num(n) => Ok(n),
        Wire::Str(s) => s.trim().parse().map_err(|_| de::Error::custom(format!("invalid value for int64: {s:?}"))),
        Wire::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
        Wire::Float(f) => Err(de::Error::custom(format!("invalid value for int64: {f}"))),
    }
}

/// Accepts bytes as base64, standard or URL-safe, padded or not.
fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    STANDARD_PAD_INDIFFERENT
        .decode(s.as_bytes())
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(s.as_bytes()))
        .map_err(|e| de::Error::custom(format!("invalid base64 {s:?}: {e}")))
}

/// An enum given by name or number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EnumWire {
    Num(i64),
    Name(String),
}

fn enum_value<'de, D: Deserializer<'de>>(d: D, names: &[&str]) -> Result<i64, D::Error> {
    match EnumWire::deserialize(d)? {
        EnumWire::Num(n) => Ok(n),
        EnumWire::Name(s) => names
            .iter()
            .position(|n| *n == s)
            .map(|i| i as i64)
            .ok_or_else(|| de::Error::custom(format!("invalid value for enum: {s:?}"))),
    }
}

fn sort_order<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    enum_value(d, &["NONE", "ASCEND", "DESCEND"])
}
fn sort_target<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    enum_value(d, &["KEY", "VERSION", "CREATE", "MOD", "VALUE"])
}
fn compare_result<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    enum_value(d, &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])
}
fn compare_target<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    enum_value(d, &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"])
}
fn filters<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    #[derive(Deserialize)]
    struct One(#[serde(deserialize_with = "filter_type")] i64);
    fn filter_type<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        enum_value(d, &["NOPUT", "NODELETE"])
    }
    Ok(Vec::<One>::deserialize(d)?.into_iter().map(|o| o.0).collect())
}

/// A request that does not make sense even though it parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

// ----- requests -----

/// `RangeRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangeJson {
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "bytes", alias = "rangeEnd")]
    range_end: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    limit: i64,
    #[serde(deserialize_with = "int64")]
    revision: i64,
    #[serde(deserialize_with = "sort_order", alias = "sortOrder")]
    sort_order: i64,
    #[serde(deserialize_with = "sort_target", alias = "sortTarget")]
    sort_target: i64,
    #[allow(dead_code)]
    serializable: bool,
    #[serde(alias = "keysOnly")]
    keys_only: bool,
    #[serde(alias = "countOnly")]
    count_only: bool,
    #[serde(deserialize_with = "int64", alias = "minModRevision")]
    min_mod_revision: i64,
    #[serde(deserialize_with = "int64", alias = "maxModRevision")]
    max_mod_revision: i64,
    #[serde(deserialize_with = "int64", alias = "minCreateRevision")]
    min_create_revision: i64,
    #[serde(deserialize_with = "int64", alias = "maxCreateRevision")]
    max_create_revision: i64,
}

impl RangeJson {
    /// Converts to the store's request.
    ///
    /// # Errors
    /// An unknown sort order or target.
    pub fn into_request(self) -> Result<RangeRequest, BadRequest> {
        let sort_order = match self.sort_order {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            n => return Err(BadRequest(format!("invalid sort order {n}"))),
        };
        let sort_target = match self.sort_target {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            n => return Err(BadRequest(format!("invalid sort target {n}"))),
        };
        Ok(RangeRequest {
            range: KeyRange::from_wire(&self.key, &self.range_end),
            limit: self.limit,
            revision: self.revision,
            sort_order,
            sort_target,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod_revision,
            max_mod_revision: self.max_mod_revision,
            min_create_revision: self.min_create_revision,
            max_create_revision: self.max_create_revision,
        })
    }
}

/// `PutRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PutJson {
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "bytes")]
    value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    lease: i64,
    #[serde(alias = "prevKv")]
    prev_kv: bool,
    #[serde(alias = "ignoreValue")]
    ignore_value: bool,
    #[serde(alias = "ignoreLease")]
    ignore_lease: bool,
}

impl PutJson {
    /// Converts to the store's request.
    #[must_use]
    pub fn into_request(self) -> PutRequest {
        PutRequest {
            key: self.key,
            value: self.value,
            lease: self.lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        }
    }
}

/// `DeleteRangeRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteRangeJson {
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "bytes", alias = "rangeEnd")]
    range_end: Vec<u8>,
    #[serde(alias = "prevKv")]
    prev_kv: bool,
}

impl DeleteRangeJson {
    /// Converts to the store's request.
    #[must_use]
    pub fn into_request(self) -> DeleteRangeRequest {
        DeleteRangeRequest { range: KeyRange::from_wire(&self.key, &self.range_end), prev_kv: self.prev_kv }
    }
}

/// `Compare`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CompareJson {
    #[serde(deserialize_with = "compare_result")]
    result: i64,
    #[serde(deserialize_with = "compare_target")]
    target: i64,
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    version: i64,
    #[serde(deserialize_with = "int64", alias = "createRevision")]
    create_revision: i64,
    #[serde(deserialize_with = "int64", alias = "modRevision")]
    mod_revision: i64,
    #[serde(deserialize_with = "bytes")]
    value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    lease: i64,
    #[serde(deserialize_with = "bytes", alias = "rangeEnd")]
    range_end: Vec<u8>,
}

impl CompareJson {
    fn into_compare(self) -> Result<Compare, BadRequest> {
        let result = match self.result {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            3 => CompareResult::NotEqual,
            n => return Err(BadRequest(format!("invalid compare result {n}"))),
        };
        let target = match self.target {
            0 => CompareTarget::Version(self.version),
            1 => CompareTarget::Create(self.create_revision),
            2 => CompareTarget::Mod(self.mod_revision),
            3 => CompareTarget::Value(self.value),
            4 => CompareTarget::Lease(self.lease),
            n => return Err(BadRequest(format!("invalid compare target {n}"))),
        };
        Ok(Compare { range: KeyRange::from_wire(&self.key, &self.range_end), result, target })
    }
}

/// `RequestOp`: exactly one of its fields, or none (an empty op).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RequestOpJson {
    #[serde(alias = "requestRange")]
    request_range: Option<RangeJson>,
    #[serde(alias = "requestPut")]
    request_put: Option<PutJson>,
    #[serde(alias = "requestDeleteRange")]
    request_delete_range: Option<DeleteRangeJson>,
    #[serde(alias = "requestTxn")]
    request_txn: Option<TxnJson>,
}

/// `TxnRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TxnJson {
    compare: Vec<CompareJson>,
    success: Vec<RequestOpJson>,
    failure: Vec<RequestOpJson>,
}

impl TxnJson {
    /// Converts to the store's request. An op with nothing set becomes `RequestOp::Empty`
    /// (etcd answers it with `etcdserver: key not found`, case H8).
    ///
    /// # Errors
    /// An unknown enum value, or an op with two operations set.
    pub fn into_request(self) -> Result<TxnRequest, BadRequest> {
        fn ops(list: Vec<RequestOpJson>) -> Result<Vec<RequestOp>, BadRequest> {
            list.into_iter()
                .map(|op| {
                    let set = usize::from(op.request_range.is_some())
                        + usize::from(op.request_put.is_some())
                        + usize::from(op.request_delete_range.is_some())
                        + usize::from(op.request_txn.is_some());
                    if set > 1 {
                        return Err(BadRequest("a request op sets more than one operation".into()));
                    }
                    Ok(if let Some(r) = op.request_range {
                        RequestOp::Range(r.into_request()?)
                    } else if let Some(p) = op.request_put {
                        RequestOp::Put(p.into_request())
                    } else if let Some(d) = op.request_delete_range {
                        RequestOp::DeleteRange(d.into_request())
                    } else if let Some(t) = op.request_txn {
                        RequestOp::Txn(t.into_request()?)
                    } else {
                        RequestOp::Empty
                    })
                })
                .collect()
        }
        Ok(TxnRequest {
            compare: self.compare.into_iter().map(CompareJson::into_compare).collect::<Result<_, _>>()?,
            success: ops(self.success)?,
            failure: ops(self.failure)?,
        })
    }
}

/// `CompactionRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CompactionJson {
    /// The revision.
    #[serde(deserialize_with = "int64")]
    pub revision: i64,
    /// Wait for the physical compaction.
    pub physical: bool,
}

/// `LeaseGrantRequest` (proto JSON names `TTL` and `ID`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseGrantJson {
    /// TTL in seconds.
    #[serde(rename = "TTL", alias = "ttl", deserialize_with = "int64")]
    pub ttl: i64,
    /// Requested id (0: server picks).
    #[serde(rename = "ID", alias = "id", deserialize_with = "int64")]
    pub id: i64,
}

/// `LeaseRevokeRequest`, `LeaseKeepAliveRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseIdJson {
    /// The lease id.
    #[serde(rename = "ID", alias = "id", deserialize_with = "int64")]
    pub id: i64,
}

/// `LeaseTimeToLiveRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseTtlJson {
    /// The lease id.
    #[serde(rename = "ID", alias = "id", deserialize_with = "int64")]
    pub id: i64,
    /// Include attached keys.
    pub keys: bool,
}

/// `WatchCreateRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchCreateJson {
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "bytes", alias = "rangeEnd")]
    range_end: Vec<u8>,
    #[serde(deserialize_with = "int64", alias = "startRevision")]
    start_revision: i64,
    #[serde(alias = "progressNotify")]
    progress_notify: bool,
    #[serde(deserialize_with = "filters")]
    filters: Vec<i64>,
    #[serde(alias = "prevKv")]
    prev_kv: bool,
    #[serde(deserialize_with = "int64", alias = "watchId")]
    watch_id: i64,
    fragment: bool,
}

impl WatchCreateJson {
    /// Converts to the runtime's create request (unknown filter values are ignored, as etcd does).
    #[must_use]
    pub fn into_create(self) -> WatchCreate {
        WatchCreate {
            key: self.key,
            range_end: self.range_end,
            start_revision: self.start_revision,
            progress_notify: self.progress_notify,
            filters: Filters { no_put: self.filters.contains(&0), no_delete: self.filters.contains(&1) },
            prev_kv: self.prev_kv,
            watch_id: self.watch_id,
            fragment: self.fragment,
        }
    }
}

/// `WatchCancelRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchCancelJson {
    /// The watcher to cancel.
    #[serde(deserialize_with = "int64", alias = "watchId")]
    pub watch_id: i64,
}

/// `WatchRequest`: one of create, cancel, progress.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchRequestJson {
    /// Create a watcher.
    #[serde(alias = "createRequest")]
    pub create_request: Option<WatchCreateJson>,
    /// Cancel a watcher.
    #[serde(alias = "cancelRequest")]
    pub cancel_request: Option<WatchCancelJson>,
    /// Ask for progress.
    #[serde(alias = "progressRequest")]
    pub progress_request: Option<serde::de::IgnoredAny>,
}

// ----- encoding -----

/// Identity reported in every response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Cluster id.
    pub cluster_id: u64,
    /// Member id.
    pub member_id: u64,
    /// Raft term stand-in.
    pub raft_term: u64,
}

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

/// Writes a `WatchResponse`.
pub fn write_watch_response(out: &mut String, h: Header, r: &WatchResponse) {
    let mut o = Obj::open(out);
    o.raw("header", |out| write_header(out, h, r.revision));
    o.int("watch_id", r.watch_id);
    o.flag("created", r.created);
    o.flag("canceled", r.canceled);
    o.int("compact_revision", r.compact_revision);
    o.string("cancel_reason", &r.cancel_reason);
    o.flag("fragment", r.fragment);
    o.list("events", &r.events, |out, e| write_event(out, e, r.prev_kv));
    o.close();
}

/// Writes a `google.rpc.Status` error body.
pub fn write_status(out: &mut String, code: i32, message: &str) {
    out.push_str("{\"code\":");
    let _ = write!(out, "{code}");
    out.push_str(",\"message\":");
    let _ = write!(out, "{}", serde_json::Value::String(message.to_string()));
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_protojson_variants() {
        let r: RangeJson = serde_json::from_str(
            r#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":"2","revision":3,"sort_order":"DESCEND","unknown":1}"#,
        )
        .expect("decodes");
        let req = r.into_request().expect("valid");
        assert_eq!(req.range, KeyRange::interval("foo", "fop"));
        assert_eq!((req.limit, req.revision, req.sort_order), (2, 3, SortOrder::Descend));
        // URL-safe and unpadded base64
        let p: PutJson = serde_json::from_str(r#"{"key":"-_8","value":"YQ"}"#).expect("decodes");
        let p = p.into_request();
        assert_eq!((p.key, p.value), (vec![0xfb, 0xff], b"a".to_vec()));
        let bad: Result<PutJson, _> = serde_json::from_str(r#"{"key":"!!"}"#);
        assert!(bad.is_err());
        let bad: Result<PutJson, _> = serde_json::from_str(r#"{"lease":"12x"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn encodes_like_grpc_gateway() {
        let h = Header { cluster_id: 1, member_id: 2, raft_term: 3 };
        let mut out = String::new();
        let r = WatchResponse::created(0, 1);
        write_watch_response(&mut out, h, &r);
        assert_eq!(
            out,
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"1","raft_term":"3"},"created":true}"#
        );
        let mut out = String::new();
        let e = Event {
            kind: EventKind::Delete,
            kv: KeyValue { key: b"foo".to_vec(), mod_revision: 3, ..KeyValue::default() },
            prev_kv: None,
        };
        write_event(&mut out, &e, false);
        assert_eq!(out, r#"{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"3"}}"#);
    }
}
