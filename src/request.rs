//! Owns the request and response values of the KV API (etcd `rpc.proto` without the transport
//! header) and their validation (etcd `v3rpc/key.go`: `checkTxnRequest`, `checkIntervals`).

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use crate::error::{Error, Result};
use crate::key_range::KeyRange;
use crate::kv::{KeyValue, LeaseId};

/// Sort direction of a range (etcd `RangeRequest.SortOrder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Key order (no sort requested).
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// What a range is sorted by (etcd `RangeRequest.SortTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// A read of a key range (etcd `RangeRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRequest {
    /// The keys to read.
    pub range: KeyRange,
    /// Most keys to return; `<= 0` is unlimited.
    pub limit: i64,
    /// Revision to read at; `<= 0` is the current revision.
    pub revision: i64,
    /// Sort direction.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Keep only keys with `mod_revision >=` this (0 = no filter).
    pub min_mod_revision: i64,
    /// Keep only keys with `mod_revision <=` this (0 = no filter).
    pub max_mod_revision: i64,
    /// Keep only keys with `create_revision >=` this (0 = no filter).
    pub min_create_revision: i64,
    /// Keep only keys with `create_revision <=` this (0 = no filter).
    pub max_create_revision: i64,
}

impl RangeRequest {
    /// Returns a plain read of `range` at the current revision.
    #[must_use]
    pub fn new(range: KeyRange) -> Self {
        Self {
            range,
            limit: 0,
            revision: 0,
            sort_order: SortOrder::None,
            sort_target: SortTarget::Key,
            keys_only: false,
            count_only: false,
            min_mod_revision: 0,
            max_mod_revision: 0,
            min_create_revision: 0,
            max_create_revision: 0,
        }
    }

    /// Sets the revision to read at.
    #[must_use]
    pub fn at(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// Sets the limit.
    #[must_use]
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    fn has_filters(&self) -> bool {
        self.min_mod_revision != 0
            || self.max_mod_revision != 0
            || self.min_create_revision != 0
            || self.max_create_revision != 0
    }

    /// Returns whether the MVCC read must return every match (sorting or filtering happen
    /// after it), so that the limit cannot be pushed down (etcd `txn.go executeRange`).
    ///
    /// Deliberate difference: etcd pushes the limit down when a sort target is given without a
    /// sort order, then sorts only the first `limit` keys (in key order); we sort every match
    /// first, so the answer is the real top `limit` by that target.
    pub(crate) fn needs_all(&self) -> bool {
        self.sort_order != SortOrder::None || self.sort_target != SortTarget::Key || self.has_filters()
    }
}

/// The result of a range (etcd `RangeResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResponse {
    /// The store's current revision when the read ran (not the revision read at).
    pub revision: i64,
    /// The keys found, in the requested order.
    pub kvs: Vec<KeyValue>,
    /// Whether `limit` cut the result.
    pub more: bool,
    /// Number of keys in the range at the read revision, before limit and filters.
    pub count: i64,
}

/// A write of one key (etcd `PutRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutRequest {
    /// The key (must not be empty).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Lease to attach; 0 = none.
    pub lease: LeaseId,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

impl PutRequest {
    /// Returns a put of `value` under `key`.
    #[must_use]
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), value: value.into(), ..Self::default() }
    }

    /// Sets the lease.
    #[must_use]
    pub fn lease(mut self, lease: LeaseId) -> Self {
        self.lease = lease;
        self
    }
}

/// The result of a put (etcd `PutResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutResponse {
    /// The revision the put committed at (inside a txn: the txn's revision).
    pub revision: i64,
    /// The key's previous state, if asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// A delete of a key range (etcd `DeleteRangeRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// The keys to delete.
    pub range: KeyRange,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    /// Returns a delete of `range`.
    #[must_use]
    pub fn new(range: KeyRange) -> Self {
        Self { range, prev_kv: false }
    }
}

/// The result of a delete (etcd `DeleteRangeResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeResponse {
    /// The new revision if something was deleted, else the current one.
    pub revision: i64,
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted key-values, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare relates the key's field to the given value (etcd `Compare.CompareResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    /// `=`
    Equal,
    /// `>`
    Greater,
    /// `<`
    Less,
    /// `!=`
    NotEqual,
}

/// Which field a compare reads, with the value it is compared to (etcd `Compare.target_union`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version.
    Version(i64),
    /// The key's create revision.
    Create(i64),
    /// The key's mod revision.
    Mod(i64),
    /// The key's value.
    Value(Vec<u8>),
    /// The key's lease.
    Lease(i64),
}

/// One condition of a txn (etcd `Compare`). With a range, every key in it must satisfy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key or keys compared (`range_end` since etcd 3.3).
    pub range: KeyRange,
    /// The relation.
    pub result: CompareResult,
    /// The field and value.
    pub target: CompareTarget,
}

/// One operation of a txn branch (etcd `RequestOp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested txn.
    Txn(TxnRequest),
    /// An op with nothing set (etcd answers `etcdserver: key not found`).
    Empty,
}

/// The result of one txn operation (etcd `ResponseOp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOp {
    /// From a read.
    Range(RangeResponse),
    /// From a put.
    Put(PutResponse),
    /// From a delete.
    DeleteRange(DeleteRangeResponse),
    /// From a nested txn.
    Txn(TxnResponse),
}

/// A transaction (etcd `TxnRequest`): if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnRequest {
    /// Conditions.
    pub compare: Vec<Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Ops run otherwise.
    pub failure: Vec<RequestOp>,
}

impl TxnRequest {
    /// Whether either branch, nested txns included, puts or deletes. A txn that does not is a
    /// read: it takes no revision and is served beside the writes, not in their group commit
    /// (etcd `v3_server.go` `isTxnReadonly`; here a nested txn counts by its own ops).
    #[must_use]
    pub fn writes(&self) -> bool {
        self.success.iter().chain(&self.failure).any(|op| match op {
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
            RequestOp::Txn(nested) => nested.writes(),
            RequestOp::Range(_) | RequestOp::Empty => false,
        })
    }
}

/// The result of a txn (etcd `TxnResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnResponse {
    /// The txn's revision if the executed branch changed anything, else the current one.
    pub revision: i64,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One response per op of the executed branch.
    pub responses: Vec<ResponseOp>,
}

/// Checks a txn's shape before anything runs (etcd `checkTxnRequest` + `checkIntervals`).
///
/// # Errors
/// `TooManyOps`, `EmptyKey`, `KeyNotFound` (empty op), `ValueProvided`, `LeaseProvided`,
/// `DuplicateKey`.
pub fn check_txn(txn: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    check_txn_shape(txn, max_txn_ops)?;
    check_intervals(&txn.success)?;
    check_intervals(&txn.failure)?;
    Ok(())
}

/// Checks a txn's op counts, keys and ops without the duplicate-key rule (the part of
/// [`check_txn`] that etcd's MVCC layer relies on too).
///
/// # Errors
/// `TooManyOps`, `EmptyKey`, `KeyNotFound` (empty op), `ValueProvided`, `LeaseProvided`.
pub fn check_txn_shape(txn: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    let opc = txn.compare.len().max(txn.success.len()).max(txn.failure.len());
    if opc > max_txn_ops {
        return Err(Error::TooManyOps);
    }
    if txn.compare.iter().any(|c| c.range.start().is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(r) => check_range(r)?,
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::DeleteRange(d) => check_key(d.range.start())?,
            // etcd: nested txns get the budget left after this level's ops.
            RequestOp::Txn(t) => check_txn_shape(t, max_txn_ops - opc)?,
            RequestOp::Empty => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

/// Checks a range request (etcd `checkRangeRequest`).
///
/// # Errors
/// `EmptyKey`.
pub fn check_range(r: &RangeRequest) -> Result<()> {
    check_key(r.range.start())
}

/// Checks a put request (etcd `checkPutRequest`).
///
/// # Errors
/// `EmptyKey`, `ValueProvided`, `LeaseProvided`.
pub fn check_put(p: &PutRequest) -> Result<()> {
    check_key(&p.key)?;
    if p.ignore_value && !p.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        Err(Error::EmptyKey)
    } else {
        Ok(())
    }
}

/// The keys a branch puts and the ranges it deletes, for the duplicate-key rule.
#[derive(Default)]
struct Writes {
    puts: HashSet<Vec<u8>>,
    dels: DeletedRanges,
}

impl Writes {
    /// Takes in a nested txn's writes, moving the smaller side's into the larger, so that a key
    /// is moved O(log n) times however deep the nesting (not once per level).
    fn absorb(&mut self, mut other: Writes) {
        if other.puts.len() > self.puts.len() {
            std::mem::swap(&mut self.puts, &mut other.puts);
        }
        self.puts.extend(other.puts);
        if other.dels.len() > self.dels.len() {
            std::mem::swap(&mut self.dels, &mut other.dels);
        }
        for (start, end) in other.dels.spans {
            self.dels.insert(start, end);
        }
    }
}

/// The union of the ranges a branch deletes, as disjoint half-open spans `[start, end)` keyed by
/// start (`None`: no upper bound), so that whether a key is deleted is one ordered-map lookup
/// (etcd `checkIntervals` keeps an interval tree for the same reason).
#[derive(Default)]
struct DeletedRanges {
    spans: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl DeletedRanges {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn add(&mut self, range: &KeyRange) {
        if range.is_empty() {
            return;
        }
        match range {
            KeyRange::Single(k) => {
                // The smallest key after `k` is `k` followed by a zero byte.
                let mut end = k.clone();
                end.push(0);
                self.insert(k.clone(), Some(end));
            }
            KeyRange::Interval { start, end } => self.insert(start.clone(), Some(end.clone())),
            KeyRange::FromKey(start) => self.insert(start.clone(), None),
        }
    }

    /// Adds `[start, end)`, merging it with every span it overlaps or touches.
    fn insert(&mut self, mut start: Vec<u8>, mut end: Option<Vec<u8>>) {
        let reaches = |span_end: &Option<Vec<u8>>, key: &[u8]| span_end.as_deref().is_none_or(|e| e >= key);
        if let Some((before, before_end)) =
            self.spans.range::<[u8], _>((Bound::Unbounded, Bound::Included(start.as_slice()))).next_back()
        {
            if reaches(before_end, &start) {
                start = before.clone();
                end = later_end(end, before_end.clone());
            }
        }
        let mut merged = Vec::new();
        for (next, next_end) in self.spans.range::<[u8], _>((Bound::Included(start.as_slice()), Bound::Unbounded)) {
            if !reaches(&end, next) {
                break;
            }
            merged.push(next.clone());
            end = later_end(end, next_end.clone());
        }
        for key in merged {
            self.spans.remove(&key);
        }
        self.spans.insert(start, end);
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.spans
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, end)| end.as_deref().is_none_or(|e| key < e))
    }
}

/// The later of two exclusive upper bounds (`None` is unbounded).
fn later_end(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> Option<Vec<u8>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

/// etcd `checkIntervals`: within one branch no key may be put twice, and no put may fall in a
/// range the same branch deletes; a nested txn's then/else may overlap each other (only one
/// runs) but not the enclosing branch. Each check is a hash or ordered-map lookup, so a txn's
/// cost grows as `n log n` in its operations, nested ones included.
///
/// Deliberate difference: etcd turns a from-key delete (`range_end = "\0"`) into an interval
/// that intersects nothing, so `put k` next to `delete [a, +inf)` slips through; we treat it as
/// the overlap it is.
fn check_intervals(ops: &[RequestOp]) -> Result<Writes> {
    let mut w = Writes::default();
    for op in ops {
        if let RequestOp::DeleteRange(d) = op {
            w.dels.add(&d.range);
        }
    }
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let then = check_intervals(&t.success)?;
        let other = check_intervals(&t.failure)?;
        // Both branches against what this branch wrote before them; not against each other.
        for k in then.puts.iter().chain(&other.puts) {
            if w.puts.contains(k) || w.dels.contains(k) {
                return Err(Error::DuplicateKey);
            }
        }
        w.absorb(then);
        w.absorb(other);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if w.puts.contains(&p.key) || w.dels.contains(&p.key) {
            return Err(Error::DuplicateKey);
        }
        w.puts.insert(p.key.clone());
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest::new(k, "v"))
    }
    fn del(r: KeyRange) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest::new(r))
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: vec![], success, failure }
    }

    /// A key of one or two bytes from a four-letter alphabet, so that ranges often meet.
    fn small_key() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(vec![0u8, b'a', b'b', b'c']), 1..=2)
    }

    fn small_range() -> impl proptest::strategy::Strategy<Value = KeyRange> {
        use proptest::prelude::*;
        prop_oneof![
            small_key().prop_map(KeyRange::Single),
            (small_key(), small_key()).prop_map(|(start, end)| KeyRange::Interval { start, end }),
            small_key().prop_map(KeyRange::FromKey),
        ]
    }

    proptest::proptest! {
        /// The merged spans answer exactly as asking each deleted range in turn.
        #[test]
        fn deleted_ranges_hold_exactly_the_union(
            ranges in proptest::collection::vec(small_range(), 0..12),
            probes in proptest::collection::vec(small_key(), 1..24),
        ) {
            let mut dels = DeletedRanges::default();
            for r in &ranges {
                dels.add(r);
            }
            for key in &probes {
                proptest::prop_assert_eq!(dels.contains(key), ranges.iter().any(|r| r.contains(key)), "{:?}", key);
            }
            // Disjoint and not touching: each span ends before the next one starts.
            let spans: Vec<_> = dels.spans.iter().collect();
            for pair in spans.windows(2) {
                let end = pair[0].1.as_ref().expect("only the last span is unbounded");
                proptest::prop_assert!(end < pair[1].0);
            }
        }
    }

    #[test]
    fn a_large_nested_txn_is_checked_whole() {
        // 64 nested txns of 100 deletes and 100 puts each: no key meets another...
        let branch = |i: usize| {
            let mut ops: Vec<RequestOp> =
                (0..100).map(|j| del(KeyRange::single(format!("d/{i:02}/{j:03}").into_bytes()))).collect();
            ops.extend((0..100).map(|j| put(&format!("p/{i:02}/{j:03}"))));
            RequestOp::Txn(txn(ops, vec![]))
        };
        let clean: Vec<RequestOp> = (0..64).map(branch).collect();
        assert!(check_intervals(&clean).is_ok());
        // ...until the outer branch puts a key the last nested txn deletes.
        let mut clashing = clean;
        clashing.push(put("d/63/099"));
        assert!(matches!(check_intervals(&clashing), Err(Error::DuplicateKey)));
    }

    #[test]
    fn duplicate_key_rules() {
        let ok = |t: TxnRequest| check_txn(&t, 128).is_ok();
        assert!(ok(txn(vec![put("a"), put("b")], vec![put("a")])));
        assert!(!ok(txn(vec![put("a"), put("a")], vec![])));
        assert!(!ok(txn(vec![put("b"), del(KeyRange::interval("a", "c"))], vec![])));
        assert!(ok(txn(vec![put("c"), del(KeyRange::interval("a", "c"))], vec![])));
        // nested then/else may overlap each other, not the parent
        assert!(ok(txn(vec![RequestOp::Txn(txn(vec![put("a")], vec![put("a")]))], vec![])));
        assert!(!ok(txn(vec![put("a"), RequestOp::Txn(txn(vec![put("a")], vec![]))], vec![])));
        assert!(!ok(txn(vec![del(KeyRange::single("a")), RequestOp::Txn(txn(vec![], vec![put("a")]))], vec![])));
        // deliberate difference from etcd: a from-key delete overlaps
        assert!(!ok(txn(vec![put("z"), del(KeyRange::FromKey(b"a".to_vec()))], vec![])));
    }

    #[test]
    fn shape_errors() {
        let many = txn((0..129).map(|i| put(&format!("k{i}"))).collect(), vec![]);
        assert!(matches!(check_txn(&many, 128), Err(Error::TooManyOps)));
        assert!(matches!(check_txn(&txn(vec![RequestOp::Empty], vec![]), 128), Err(Error::KeyNotFound)));
        assert!(matches!(check_txn(&txn(vec![put("")], vec![]), 128), Err(Error::EmptyKey)));
        let mut p = PutRequest::new("k", "v");
        p.ignore_value = true;
        assert!(matches!(check_put(&p), Err(Error::ValueProvided)));
        let mut p = PutRequest::new("k", "").lease(5);
        p.ignore_lease = true;
        assert!(matches!(check_put(&p), Err(Error::LeaseProvided)));
        // nested txns share the op budget
        let inner = txn((0..100).map(|i| put(&format!("n{i}"))).collect(), vec![]);
        let outer = txn((0..50).map(|i| put(&format!("o{i}"))).chain([RequestOp::Txn(inner)]).collect(), vec![]);
        assert!(matches!(check_txn(&outer, 128), Err(Error::TooManyOps)));
    }
}
