//! Owns the gateway's request decoding: grpc-gateway JSON into etcd's request messages
//! (docs/etcd-semantics.md §8), which then go through the same conversion as gRPC's
//! ([`crate::api::request`]). Accepts proto or lowerCamelCase names, int64 as string or number,
//! base64 standard or URL-safe, padded or not, line-wrapped or not, enums by name or number;
//! ignores unknown fields. Enum numbers are passed on unchecked, as protojson's open enums are, so
//! an unknown one gets the API's own error (the same text as over gRPC).

use std::borrow::Cow;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, Engine as _};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;

use crate::api::pb::etcdserverpb as pb;
use crate::api::pb::v3electionpb as pb_election;
use crate::api::pb::v3lockpb as pb_lock;
use crate::api::ApiError;

/// A request message the gateway decodes from JSON, through its JSON shape.
pub trait GatewayMessage: Sized {
    /// The message's grpc-gateway JSON shape.
    type Json: DeserializeOwned + Default;

    /// Turns the decoded shape into the message.
    ///
    /// # Errors
    /// A shape that is no message (two operations in one txn op).
    fn from_json(json: Self::Json) -> Result<Self, ApiError>;
}

/// Decodes a whole request body: a JSON object; an empty body or `null` is the empty message,
/// as grpc-gateway treats them, and a field set to `null` keeps its default (protojson).
///
/// # Errors
/// [`ApiError::Malformed`] with the decoder's text, or for a body that is not an object.
pub fn decode<M: GatewayMessage>(body: &[u8]) -> Result<M, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => M::from_json(M::Json::default()),
        // Anything but an object or `null` is refused before it is parsed.
        Some(b'[') => Err(not_an_object("an array")),
        Some(b'"') => Err(not_an_object("a string")),
        Some(b't' | b'f') => Err(not_an_object("a boolean")),
        Some(b'-' | b'0'..=b'9') => Err(not_an_object("a number")),
        // Without `null` anywhere in the body the typed decoder needs no help; with one
        // (rarely, and perhaps only inside a base64 string) the body goes through a JSON value
        // whose nulls are taken out first.
        Some(b'{') if !body.windows(4).any(|w| w == b"null") => {
            M::from_json(serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?)
        }
        Some(_) => decode_value(serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?),
    }
}

/// Decodes one JSON value of a stream of requests (`/v3/watch`, `/v3/lease/keepalive`), or a
/// body [`decode`] passes on: an object, whose `null` members keep their defaults, or `null`
/// for the empty message.
///
/// # Errors
/// [`ApiError::Malformed`] with the decoder's text, or for a value that is not an object.
pub fn decode_value<M: GatewayMessage>(mut value: serde_json::Value) -> Result<M, ApiError> {
    match &value {
        serde_json::Value::Null => return M::from_json(M::Json::default()),
        serde_json::Value::Object(_) => without_nulls(&mut value),
        serde_json::Value::Array(_) => return Err(not_an_object("an array")),
        serde_json::Value::String(_) => return Err(not_an_object("a string")),
        serde_json::Value::Number(_) => return Err(not_an_object("a number")),
        serde_json::Value::Bool(_) => return Err(not_an_object("a boolean")),
    }
    M::from_json(serde_json::from_value(value).map_err(|e| ApiError::Malformed(e.to_string()))?)
}

fn not_an_object(what: &str) -> ApiError {
    ApiError::Malformed(format!("a request is a JSON object, not {what}"))
}

/// Removes every object member whose value is `null`, at any depth, so that the field keeps its
/// default as protojson decodes it. Array elements stay: a `null` element is no message.
fn without_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(without_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_nulls),
        _ => {}
    }
}

// ----- field decoders -----

/// Padding optional when decoding, as protojson accepts bytes; non-zero trailing bits allowed
/// ("YR==" is "a"), as Go's non-strict decoder allows them (etcd 3.4's gateway decodes bytes with
/// encoding/json's base64.StdEncoding).
const PAD_INDIFFERENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
/// Standard base64, padded or not.
const STANDARD_PAD_INDIFFERENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PAD_INDIFFERENT);
/// URL-safe base64, padded or not.
const URL_SAFE_PAD_INDIFFERENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PAD_INDIFFERENT);

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

/// Accepts a uint64 as a JSON string or number (protojson).
fn uint64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Num(u64),
        Str(String),
    }
    match Wire::deserialize(d)? {
        Wire::Num(n) => Ok(n),
        Wire::Str(s) => s.trim().parse().map_err(|_| de::Error::custom(format!("invalid value for uint64: {s:?}"))),
    }
}

/// Accepts bytes as base64, standard or URL-safe, padded or not, with line breaks anywhere.
fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    // etcd 3.4's gateway decodes bytes with Go's encoding/json, whose base64 decoder skips `\r`
    // and `\n` anywhere (Go: encoding/base64 decodeQuantum), so MIME-wrapped base64 (Python's
    // `base64.encodebytes`, Java's MIME encoder) is accepted; other whitespace is not. Only such
    // input is copied.
    let unwrapped: Cow<'_, [u8]> = if s.contains(['\r', '\n']) {
        Cow::Owned(s.bytes().filter(|b| !matches!(b, b'\r' | b'\n')).collect())
    } else {
        Cow::Borrowed(s.as_bytes())
    };
    STANDARD_PAD_INDIFFERENT
        .decode(&unwrapped)
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(&unwrapped))
        .map_err(|e| de::Error::custom(format!("invalid base64 {s:?}: {e}")))
}

/// An enum given by name or by number; a number need not name a value (open enums).
fn enum_value<'de, D: Deserializer<'de>>(d: D, names: &[&str]) -> Result<i32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Num(i64),
        Name(String),
    }
    match Wire::deserialize(d)? {
        Wire::Num(n) => i32::try_from(n).map_err(|_| de::Error::custom(format!("invalid value for enum: {n}"))),
        Wire::Name(s) => names
            .iter()
            .position(|n| *n == s)
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| de::Error::custom(format!("invalid value for enum: {s:?}"))),
    }
}

fn alarm_action<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_value(d, &["GET", "ACTIVATE", "DEACTIVATE"])
}
fn alarm_type<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_value(d, &["NONE", "NOSPACE", "CORRUPT"])
}
fn sort_order<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_value(d, &["NONE", "ASCEND", "DESCEND"])
}
fn sort_target<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_value(d, &["KEY", "VERSION", "CREATE", "MOD", "VALUE"])
}
fn compare_result<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_value(d, &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])
}
fn compare_target<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_value(d, &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"])
}
fn filters<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i32>, D::Error> {
    #[derive(Deserialize)]
    struct One(#[serde(deserialize_with = "filter_type")] i32);
    fn filter_type<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        enum_value(d, &["NOPUT", "NODELETE"])
    }
    Ok(Vec::<One>::deserialize(d)?.into_iter().map(|o| o.0).collect())
}

// ----- KV -----

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
    sort_order: i32,
    #[serde(deserialize_with = "sort_target", alias = "sortTarget")]
    sort_target: i32,
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

impl GatewayMessage for pb::RangeRequest {
    type Json = RangeJson;

    fn from_json(j: RangeJson) -> Result<Self, ApiError> {
        Ok(Self {
            key: j.key,
            range_end: j.range_end,
            limit: j.limit,
            revision: j.revision,
            sort_order: j.sort_order,
            sort_target: j.sort_target,
            serializable: j.serializable,
            keys_only: j.keys_only,
            count_only: j.count_only,
            min_mod_revision: j.min_mod_revision,
            max_mod_revision: j.max_mod_revision,
            min_create_revision: j.min_create_revision,
            max_create_revision: j.max_create_revision,
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

impl GatewayMessage for pb::PutRequest {
    type Json = PutJson;

    fn from_json(j: PutJson) -> Result<Self, ApiError> {
        Ok(Self {
            key: j.key,
            value: j.value,
            lease: j.lease,
            prev_kv: j.prev_kv,
            ignore_value: j.ignore_value,
            ignore_lease: j.ignore_lease,
        })
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

impl GatewayMessage for pb::DeleteRangeRequest {
    type Json = DeleteRangeJson;

    fn from_json(j: DeleteRangeJson) -> Result<Self, ApiError> {
        Ok(Self { key: j.key, range_end: j.range_end, prev_kv: j.prev_kv })
    }
}

/// `Compare`, whose `target_union` members appear as plain fields in JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CompareJson {
    #[serde(deserialize_with = "compare_result")]
    result: i32,
    #[serde(deserialize_with = "compare_target")]
    target: i32,
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
    /// The union member the target compares: an absent field is the zero value, as in
    /// protojson, and an unknown target leaves the union empty for the API to refuse.
    fn into_compare(self) -> pb::Compare {
        use pb::compare::{CompareTarget as T, TargetUnion as U};
        let target_union = match T::try_from(self.target) {
            Ok(T::Version) => Some(U::Version(self.version)),
            Ok(T::Create) => Some(U::CreateRevision(self.create_revision)),
            Ok(T::Mod) => Some(U::ModRevision(self.mod_revision)),
            Ok(T::Value) => Some(U::Value(self.value)),
            Ok(T::Lease) => Some(U::Lease(self.lease)),
            Err(_) => None,
        };
        pb::Compare { result: self.result, target: self.target, key: self.key, range_end: self.range_end, target_union }
    }
}

/// `RequestOp`: exactly one of its fields, or none (an empty op).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RequestOpJson {
    // Boxed: an op of three bytes of JSON (`{},`) would otherwise take some 300 bytes here
    // while the body is decoded, before the txn's size and shape are checked.
    #[serde(alias = "requestRange")]
    request_range: Option<Box<RangeJson>>,
    #[serde(alias = "requestPut")]
    request_put: Option<Box<PutJson>>,
    #[serde(alias = "requestDeleteRange")]
    request_delete_range: Option<Box<DeleteRangeJson>>,
    #[serde(alias = "requestTxn")]
    request_txn: Option<Box<TxnJson>>,
}

impl RequestOpJson {
    fn into_op(self) -> Result<pb::RequestOp, ApiError> {
        use pb::request_op::Request;
        let set = usize::from(self.request_range.is_some())
            + usize::from(self.request_put.is_some())
            + usize::from(self.request_delete_range.is_some())
            + usize::from(self.request_txn.is_some());
        if set > 1 {
            // protojson refuses a second member of a oneof.
            return Err(ApiError::Malformed("a request op sets more than one operation".into()));
        }
        let request = if let Some(r) = self.request_range {
            Some(Request::RequestRange(pb::RangeRequest::from_json(*r)?))
        } else if let Some(p) = self.request_put {
            Some(Request::RequestPut(pb::PutRequest::from_json(*p)?))
        } else if let Some(d) = self.request_delete_range {
            Some(Request::RequestDeleteRange(pb::DeleteRangeRequest::from_json(*d)?))
        } else if let Some(t) = self.request_txn {
            Some(Request::RequestTxn(pb::TxnRequest::from_json(*t)?))
        } else {
            None
        };
        Ok(pb::RequestOp { request })
    }
}

/// `TxnRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TxnJson {
    compare: Vec<CompareJson>,
    success: Vec<RequestOpJson>,
    failure: Vec<RequestOpJson>,
}

impl GatewayMessage for pb::TxnRequest {
    type Json = TxnJson;

    fn from_json(j: TxnJson) -> Result<Self, ApiError> {
        Ok(Self {
            compare: j.compare.into_iter().map(CompareJson::into_compare).collect(),
            success: j.success.into_iter().map(RequestOpJson::into_op).collect::<Result<_, _>>()?,
            failure: j.failure.into_iter().map(RequestOpJson::into_op).collect::<Result<_, _>>()?,
        })
    }
}

/// `CompactionRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CompactionJson {
    #[serde(deserialize_with = "int64")]
    revision: i64,
    physical: bool,
}

impl GatewayMessage for pb::CompactionRequest {
    type Json = CompactionJson;

    fn from_json(j: CompactionJson) -> Result<Self, ApiError> {
        Ok(Self { revision: j.revision, physical: j.physical })
    }
}

// ----- Lease -----

/// `LeaseGrantRequest` (proto names `TTL` and `ID`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseGrantJson {
    #[serde(rename = "TTL", alias = "ttl", deserialize_with = "int64")]
    ttl: i64,
    #[serde(rename = "ID", alias = "id", deserialize_with = "int64")]
    id: i64,
}

impl GatewayMessage for pb::LeaseGrantRequest {
    type Json = LeaseGrantJson;

    fn from_json(j: LeaseGrantJson) -> Result<Self, ApiError> {
        Ok(Self { ttl: j.ttl, id: j.id })
    }
}

/// `AlarmRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AlarmJson {
    #[serde(deserialize_with = "alarm_action")]
    action: i32,
    #[serde(rename = "memberID", alias = "member_id", deserialize_with = "uint64")]
    member_id: u64,
    #[serde(deserialize_with = "alarm_type")]
    alarm: i32,
}

impl GatewayMessage for pb::AlarmRequest {
    type Json = AlarmJson;

    fn from_json(j: AlarmJson) -> Result<Self, ApiError> {
        Ok(Self { action: j.action, member_id: j.member_id, alarm: j.alarm })
    }
}

/// Every `Cluster` membership request (`MemberAdd`, `MemberRemove`, `MemberUpdate`,
/// `MemberPromote`): one JSON shape with each field any of them has (protojson names).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MemberJson {
    #[serde(rename = "ID", alias = "id", deserialize_with = "uint64")]
    id: u64,
    #[serde(rename = "peerURLs", alias = "peer_ur_ls", alias = "peer_urls")]
    peer_urls: Vec<String>,
    #[serde(rename = "isLearner", alias = "is_learner")]
    is_learner: bool,
}

impl GatewayMessage for pb::MemberAddRequest {
    type Json = MemberJson;

    fn from_json(j: MemberJson) -> Result<Self, ApiError> {
        Ok(Self { peer_ur_ls: j.peer_urls, is_learner: j.is_learner })
    }
}

impl GatewayMessage for pb::MemberRemoveRequest {
    type Json = MemberJson;

    fn from_json(j: MemberJson) -> Result<Self, ApiError> {
        Ok(Self { id: j.id })
    }
}

impl GatewayMessage for pb::MemberUpdateRequest {
    type Json = MemberJson;

    fn from_json(j: MemberJson) -> Result<Self, ApiError> {
        Ok(Self { id: j.id, peer_ur_ls: j.peer_urls })
    }
}

impl GatewayMessage for pb::MemberPromoteRequest {
    type Json = MemberJson;

    fn from_json(j: MemberJson) -> Result<Self, ApiError> {
        Ok(Self { id: j.id })
    }
}

/// `MoveLeaderRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MoveLeaderJson {
    #[serde(rename = "targetID", alias = "target_id", deserialize_with = "uint64")]
    target_id: u64,
}

impl GatewayMessage for pb::MoveLeaderRequest {
    type Json = MoveLeaderJson;

    fn from_json(j: MoveLeaderJson) -> Result<Self, ApiError> {
        Ok(Self { target_id: j.target_id })
    }
}

/// Every `Auth` service request: one JSON shape with each field any of them has (protojson
/// names: the proto's own, which is `hashedPassword` for that one field).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthJson {
    name: String,
    password: String,
    #[serde(rename = "hashedPassword", alias = "hashed_password")]
    hashed_password: String,
    options: Option<UserAddOptionsJson>,
    user: String,
    role: String,
    perm: Option<PermissionJson>,
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "bytes", alias = "rangeEnd")]
    range_end: Vec<u8>,
}

/// `authpb.UserAddOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UserAddOptionsJson {
    #[serde(alias = "noPassword")]
    no_password: bool,
}

/// `authpb.Permission`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PermissionJson {
    #[serde(rename = "permType", alias = "perm_type", deserialize_with = "perm_type")]
    perm_type: i32,
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "bytes", alias = "rangeEnd")]
    range_end: Vec<u8>,
}

fn perm_type<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_value(d, &["READ", "WRITE", "READWRITE"])
}

/// Implements [`GatewayMessage`] for `Auth` requests from [`AuthJson`].
macro_rules! auth_message {
    ($($msg:ident => |$j:ident| $body:expr;)*) => {
        $(impl GatewayMessage for pb::$msg {
            type Json = AuthJson;

            fn from_json($j: AuthJson) -> Result<Self, ApiError> {
                Ok($body)
            }
        })*
    };
}

auth_message! {
    AuthEnableRequest => |_j| pb::AuthEnableRequest {};
    AuthDisableRequest => |_j| pb::AuthDisableRequest {};
    AuthStatusRequest => |_j| pb::AuthStatusRequest {};
    AuthenticateRequest => |j| pb::AuthenticateRequest { name: j.name, password: j.password };
    AuthUserAddRequest => |j| pb::AuthUserAddRequest {
        name: j.name,
        password: j.password,
        options: j.options.map(|o| crate::api::pb::authpb::UserAddOptions { no_password: o.no_password }),
        hashed_password: j.hashed_password,
    };
    AuthUserGetRequest => |j| pb::AuthUserGetRequest { name: j.name };
    AuthUserListRequest => |_j| pb::AuthUserListRequest {};
    AuthUserDeleteRequest => |j| pb::AuthUserDeleteRequest { name: j.name };
    AuthUserChangePasswordRequest => |j| pb::AuthUserChangePasswordRequest {
        name: j.name,
        password: j.password,
        hashed_password: j.hashed_password,
    };
    AuthUserGrantRoleRequest => |j| pb::AuthUserGrantRoleRequest { user: j.user, role: j.role };
    AuthUserRevokeRoleRequest => |j| pb::AuthUserRevokeRoleRequest { name: j.name, role: j.role };
    AuthRoleAddRequest => |j| pb::AuthRoleAddRequest { name: j.name };
    AuthRoleGetRequest => |j| pb::AuthRoleGetRequest { role: j.role };
    AuthRoleListRequest => |_j| pb::AuthRoleListRequest {};
    AuthRoleDeleteRequest => |j| pb::AuthRoleDeleteRequest { role: j.role };
    AuthRoleGrantPermissionRequest => |j| pb::AuthRoleGrantPermissionRequest {
        name: j.name,
        perm: j.perm.map(|p| crate::api::pb::authpb::Permission { perm_type: p.perm_type, key: p.key, range_end: p.range_end }),
    };
    AuthRoleRevokePermissionRequest => |j| pb::AuthRoleRevokePermissionRequest {
        role: j.role,
        key: j.key,
        range_end: j.range_end,
    };
}

/// `HashKVRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HashKvJson {
    #[serde(deserialize_with = "int64")]
    revision: i64,
}

impl GatewayMessage for pb::HashKvRequest {
    type Json = HashKvJson;

    fn from_json(j: HashKvJson) -> Result<Self, ApiError> {
        Ok(Self { revision: j.revision })
    }
}

/// `LeaseRevokeRequest`, `LeaseKeepAliveRequest`: a lease id.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseIdJson {
    #[serde(rename = "ID", alias = "id", deserialize_with = "int64")]
    id: i64,
}

impl GatewayMessage for pb::LeaseRevokeRequest {
    type Json = LeaseIdJson;

    fn from_json(j: LeaseIdJson) -> Result<Self, ApiError> {
        Ok(Self { id: j.id })
    }
}

impl GatewayMessage for pb::LeaseKeepAliveRequest {
    type Json = LeaseIdJson;

    fn from_json(j: LeaseIdJson) -> Result<Self, ApiError> {
        Ok(Self { id: j.id })
    }
}

/// `LeaseTimeToLiveRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseTtlJson {
    #[serde(rename = "ID", alias = "id", deserialize_with = "int64")]
    id: i64,
    keys: bool,
}

impl GatewayMessage for pb::LeaseTimeToLiveRequest {
    type Json = LeaseTtlJson;

    fn from_json(j: LeaseTtlJson) -> Result<Self, ApiError> {
        Ok(Self { id: j.id, keys: j.keys })
    }
}

// ----- Lock and Election -----

/// `v3lockpb.LockRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LockJson {
    #[serde(deserialize_with = "bytes")]
    name: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    lease: i64,
}

impl GatewayMessage for pb_lock::LockRequest {
    type Json = LockJson;

    fn from_json(j: LockJson) -> Result<Self, ApiError> {
        Ok(Self { name: j.name, lease: j.lease })
    }
}

/// `v3lockpb.UnlockRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UnlockJson {
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
}

impl GatewayMessage for pb_lock::UnlockRequest {
    type Json = UnlockJson;

    fn from_json(j: UnlockJson) -> Result<Self, ApiError> {
        Ok(Self { key: j.key })
    }
}

/// `v3electionpb.CampaignRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CampaignJson {
    #[serde(deserialize_with = "bytes")]
    name: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    lease: i64,
    #[serde(deserialize_with = "bytes")]
    value: Vec<u8>,
}

impl GatewayMessage for pb_election::CampaignRequest {
    type Json = CampaignJson;

    fn from_json(j: CampaignJson) -> Result<Self, ApiError> {
        Ok(Self { name: j.name, lease: j.lease, value: j.value })
    }
}

/// `v3electionpb.LeaderKey`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaderKeyJson {
    #[serde(deserialize_with = "bytes")]
    name: Vec<u8>,
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    rev: i64,
    #[serde(deserialize_with = "int64")]
    lease: i64,
}

impl From<LeaderKeyJson> for pb_election::LeaderKey {
    fn from(j: LeaderKeyJson) -> Self {
        Self { name: j.name, key: j.key, rev: j.rev, lease: j.lease }
    }
}

/// `v3electionpb.ProclaimRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProclaimJson {
    leader: Option<LeaderKeyJson>,
    #[serde(deserialize_with = "bytes")]
    value: Vec<u8>,
}

impl GatewayMessage for pb_election::ProclaimRequest {
    type Json = ProclaimJson;

    fn from_json(j: ProclaimJson) -> Result<Self, ApiError> {
        Ok(Self { leader: j.leader.map(Into::into), value: j.value })
    }
}

/// `v3electionpb.LeaderRequest` (`Leader` and `Observe`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaderJson {
    #[serde(deserialize_with = "bytes")]
    name: Vec<u8>,
}

impl GatewayMessage for pb_election::LeaderRequest {
    type Json = LeaderJson;

    fn from_json(j: LeaderJson) -> Result<Self, ApiError> {
        Ok(Self { name: j.name })
    }
}

/// `v3electionpb.ResignRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResignJson {
    leader: Option<LeaderKeyJson>,
}

impl GatewayMessage for pb_election::ResignRequest {
    type Json = ResignJson;

    fn from_json(j: ResignJson) -> Result<Self, ApiError> {
        Ok(Self { leader: j.leader.map(Into::into) })
    }
}

// ----- Watch -----

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
    filters: Vec<i32>,
    #[serde(alias = "prevKv")]
    prev_kv: bool,
    #[serde(deserialize_with = "int64", alias = "watchId")]
    watch_id: i64,
    fragment: bool,
}

/// `WatchCancelRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchCancelJson {
    #[serde(deserialize_with = "int64", alias = "watchId")]
    watch_id: i64,
}

/// `WatchRequest`: one of create, cancel, progress.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchRequestJson {
    #[serde(alias = "createRequest")]
    create_request: Option<WatchCreateJson>,
    #[serde(alias = "cancelRequest")]
    cancel_request: Option<WatchCancelJson>,
    #[serde(alias = "progressRequest")]
    progress_request: Option<de::IgnoredAny>,
}

impl GatewayMessage for pb::WatchRequest {
    type Json = WatchRequestJson;

    /// Create wins over cancel over progress when a request sets several.
    fn from_json(j: WatchRequestJson) -> Result<Self, ApiError> {
        use pb::watch_request::RequestUnion;
        let request_union = if let Some(c) = j.create_request {
            Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: c.key,
                range_end: c.range_end,
                start_revision: c.start_revision,
                progress_notify: c.progress_notify,
                filters: c.filters,
                prev_kv: c.prev_kv,
                watch_id: c.watch_id,
                fragment: c.fragment,
            }))
        } else if let Some(c) = j.cancel_request {
            Some(RequestUnion::CancelRequest(pb::WatchCancelRequest { watch_id: c.watch_id }))
        } else if j.progress_request.is_some() {
            Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        } else {
            None
        };
        Ok(Self { request_union })
    }
}

#[cfg(test)]
mod tests {
    use watchkv::{KeyRange, SortOrder};

    use super::*;
    use crate::api::request;

    #[test]
    fn decodes_protojson_variants() {
        let r: pb::RangeRequest =
            decode(br#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":"2","revision":3,"sort_order":"DESCEND","unknown":1}"#)
                .expect("decodes");
        let req = request::range_request(r).expect("valid");
        assert_eq!(req.range, KeyRange::interval("foo", "fop"));
        assert_eq!((req.limit, req.revision, req.sort_order), (2, 3, SortOrder::Descend));
        // URL-safe and unpadded base64
        let p: pb::PutRequest = decode(br#"{"key":"-_8","value":"YQ"}"#).expect("decodes");
        let p = request::put_request(p);
        assert_eq!((p.key, p.value), (vec![0xfb, 0xff], b"a".to_vec()));
        let bad: Result<pb::PutRequest, _> = decode(br#"{"key":"!!"}"#);
        assert!(bad.is_err());
        let bad: Result<pb::PutRequest, _> = decode(br#"{"lease":"12x"}"#);
        assert!(bad.is_err());
    }

    /// etcd's gateway decodes bytes with Go's base64.StdEncoding, which skips `\r` and `\n`
    /// anywhere and ignores non-zero trailing bits: MIME-wrapped base64 (Python's
    /// `base64.encodebytes`, Java's MIME encoder) and "YR==" decode as Go decodes them.
    #[test]
    fn base64_skips_line_breaks_and_allows_trailing_bits_as_go_does() {
        let value = |body: &[u8]| decode::<pb::PutRequest>(body).map(|p| request::put_request(p).value);
        assert_eq!(value(br#"{"key":"Zm9v","value":"YmFy\nYmF6"}"#).expect("newline"), b"barbaz");
        assert_eq!(value(br#"{"key":"Zm9v","value":"YmFy\r\nYmF6\r\n"}"#).expect("CRLF"), b"barbaz");
        assert_eq!(value(br#"{"key":"Zm9v","value":"\nYWJj\nZA=\n=\n"}"#).expect("breaks in padding"), b"abcd");
        assert_eq!(value(br#"{"key":"Zm9v","value":"YR=="}"#).expect("trailing bits"), b"a");
        assert_eq!(value(br#"{"key":"Zm9v","value":"YR"}"#).expect("trailing bits, unpadded"), b"a");
        assert_eq!(value(br#"{"key":"Zm9v","value":"-_8\n"}"#).expect("URL-safe with a newline"), [0xfb, 0xff]);
        // Only line breaks are skipped: other whitespace and foreign characters are still refused.
        assert!(value(br#"{"key":"Zm9v","value":"YmFy YmF6"}"#).is_err());
        assert!(value(br#"{"key":"Zm9v","value":"YmFy\tYmF6"}"#).is_err());
        assert!(value(br#"{"key":"Zm9v","value":"YmFy\nYm!6"}"#).is_err());
    }

    /// protojson (etcd's gateway) takes `null` as the field's default, at any depth, and a body
    /// of `null` as the empty message; a body that is not an object is refused.
    #[test]
    fn nulls_keep_defaults_and_only_objects_are_requests() {
        let r: pb::RangeRequest =
            decode(br#"{"key":"Zm9v","range_end":null,"limit":null,"sort_order":null,"serializable":null}"#)
                .expect("decodes");
        assert_eq!((r.key, r.range_end, r.limit, r.sort_order, r.serializable), (b"foo".to_vec(), vec![], 0, 0, false));
        let t: pb::TxnRequest = decode(
            br#"{"compare":null,"success":[{"request_put":{"key":"YQ==","value":null,"lease":null}}],"failure":null}"#,
        )
        .expect("decodes");
        let put = match t.success.first().and_then(|op| op.request.as_ref()) {
            Some(pb::request_op::Request::RequestPut(p)) => p.clone(),
            other => panic!("a put, not {other:?}"),
        };
        assert_eq!((put.key, put.value, put.lease, t.compare.len(), t.failure.len()), (b"a".to_vec(), vec![], 0, 0, 0));
        // `null` inside a base64 value is just base64 ("bnVsbA==" is "null").
        let p: pb::PutRequest = decode(br#"{"key":"bnVsbA==","value":"bnVsbA=="}"#).expect("decodes");
        assert_eq!((p.key, p.value), (b"null".to_vec(), b"null".to_vec()));
        let empty: pb::RangeRequest = decode(b" null ").expect("the empty message");
        assert!(empty.key.is_empty());
        for body in [&br#"["Zm9v"]"#[..], b"\"Zm9v\"", b"7", b"true"] {
            let refused: Result<pb::RangeRequest, _> = decode(body);
            assert!(
                matches!(&refused, Err(ApiError::Malformed(m)) if m.starts_with("a request is a JSON object")),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn decodes_lock_and_election_requests() {
        let l: pb_lock::LockRequest = decode(br#"{"name":"bXk=","lease":"7"}"#).expect("decodes");
        assert_eq!((l.name, l.lease), (b"my".to_vec(), 7));
        let p: pb_election::ProclaimRequest =
            decode(br#"{"leader":{"name":"ZQ==","key":"ZS8x","rev":"5","lease":1},"value":"dg=="}"#).expect("decodes");
        let leader = p.leader.expect("leader");
        assert_eq!((leader.name, leader.key, leader.rev, leader.lease), (b"e".to_vec(), b"e/1".to_vec(), 5, 1));
        assert_eq!(p.value, b"v".to_vec());
        let r: pb_election::ResignRequest = decode(b"{}").expect("decodes");
        assert!(r.leader.is_none());
    }

    #[test]
    fn unknown_sort_numbers_get_the_same_text_as_over_grpc() {
        let r: pb::RangeRequest = decode(br#"{"key":"Zm9v","sort_target":9}"#).expect("decodes: enums are open");
        let err = request::range_request(r).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(err, Err("etcdserver: invalid sort option".to_string()));
    }
}
