//! Model-based property test of `KvStore` against a tiny in-memory reference model of etcd's MVCC
//! rules (docs/etcd-semantics.md §1–§5: revisions, key generations, event contents, key ranges,
//! compaction) plus leases and restart.
//!
//! Every generated case opens a store in a fresh directory and runs up to 60 operations on both
//! the store and the model: puts (with leases, `prev_kv`, `ignore_value`/`ignore_lease`),
//! deletes, txns (compares on value/version/create/mod/lease, nested txns, reads inside, the
//! duplicate-key rule, `KvStore::mvcc_txn` without it), compactions (half of them waited for),
//! lease grant/revoke/keep-alive/expiry on a fake clock, restarts, and reads with limits, sort
//! orders, filters, `keys_only`, `count_only`. After each operation it checks the current and
//! compact revisions, the exact events produced, the exact responses (or error kind and
//! fields), reads at several revisions, the key-index size and the lease table (ids, remaining
//! and granted TTL, keys). After every restart, every waited compaction and at the end of the
//! case it reads the whole key space at every readable revision and compares the history rows
//! on disk (docs/etcd-semantics.md §1.1, §5) with the model's.
//!
//! The model is deliberately naive: per key the full list of changes (never compacted: reads
//! below the compact revision must fail anyway), the current and compact revisions, and the
//! leases with their TTL and deadline in seconds. A lease's keys are not stored: they are the
//! live keys whose latest `lease` names it. An event's `prev_kv` is the key's state before the
//! change; when an `mvcc_txn` changes a key twice, that is the earlier change of the same
//! revision (what the store and its history rows give; etcd's gRPC layer would read the key at
//! `mod_revision - 1` instead).
//!
//! Time is a fake clock: `base + now` seconds with `base` taken once per case, so nothing
//! depends on how long the test takes. The proptest seed is fixed unless `PROPTEST_RNG_SEED` is
//! set (then that seed is used), and `PROPTEST_CASES` overrides the number of cases (64).
//! Failures are not persisted: shrunk ones are kept by hand in `tests/regression.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestCaseError};
use watchkv::Revision;
use watchkv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Durability, Error, Event,
    EventKind, KeyRange, KeyValue, KvStore, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, SortOrder, SortTarget, StoreConfig, TxnRequest, TxnResponse,
};

// ----- alphabet and store constants -----

/// Keys written and read: collisions are frequent, `ab` is a prefix child of `a`, `b\xff` tests
/// prefix ends with 0xff.
const KEYS: &[&[u8]] = &[b"a", b"ab", b"b", b"b\xff", b"c"];
/// Bounds of intervals and from-key ranges (`\0` as a from-key start is "all keys").
const BOUNDS: &[&[u8]] = &[b"\0", b"a", b"aa", b"ab", b"b", b"b\xff", b"c", b"d"];
/// Values written and compared.
const VALUES: &[&[u8]] = &[b"", b"x", b"y", b"z"];
/// `StoreConfig::max_txn_ops` used by every case: small, so that nested budgets run out.
const MAX_TXN_OPS: usize = 6;
/// `StoreConfig::min_lease_ttl` (the default).
const MIN_TTL: i64 = 2;
/// A lease id that is never granted.
const UNKNOWN_LEASE: LeaseId = 4242;

// ----- generated operations -----

#[derive(Debug, Clone)]
enum RangeSpec {
    Single(usize),
    Interval(usize, usize),
    Prefix(usize),
    FromKey(usize),
    All,
}

impl RangeSpec {
    fn build(&self) -> KeyRange {
        match self {
            Self::Single(k) => KeyRange::single(KEYS[*k]),
            Self::Interval(a, b) => KeyRange::interval(BOUNDS[*a], BOUNDS[*b]),
            Self::Prefix(k) => KeyRange::prefix(KEYS[*k]),
            Self::FromKey(k) => KeyRange::FromKey(BOUNDS[*k].to_vec()),
            Self::All => KeyRange::all(),
        }
    }
}

/// Options of a read besides its range, revision and limit.
#[derive(Debug, Clone)]
struct ReadOpts {
    order: u8,
    target: u8,
    keys_only: bool,
    count_only: bool,
    /// Filters relative to the current revision (`None` = 0 = no filter).
    min_mod: Option<i8>,
    max_mod: Option<i8>,
    min_create: Option<i8>,
    max_create: Option<i8>,
}

/// A read: range, limit and (sometimes) the other options.
#[derive(Debug, Clone)]
struct ReadSpec {
    range: RangeSpec,
    limit: i64,
    opts: Option<ReadOpts>,
}

impl ReadSpec {
    fn build(&self, rev: i64, m: &Model) -> RangeRequest {
        let mut req = RangeRequest::new(self.range.build()).at(rev).limit(self.limit);
        if let Some(o) = &self.opts {
            req.sort_order = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][usize::from(o.order) % 3];
            req.sort_target =
                [SortTarget::Key, SortTarget::Version, SortTarget::Create, SortTarget::Mod, SortTarget::Value]
                    [usize::from(o.target) % 5];
            req.keys_only = o.keys_only;
            req.count_only = o.count_only;
            req.min_mod_revision = rel_rev(o.min_mod, m);
            req.max_mod_revision = rel_rev(o.max_mod, m);
            req.min_create_revision = rel_rev(o.min_create, m);
            req.max_create_revision = rel_rev(o.max_create, m);
        }
        req
    }
}

/// A revision chosen relative to the model's state when the op runs.
#[derive(Debug, Clone, Copy)]
enum RevSel {
    Zero,
    Current,
    Prev,
    Compact,
    BelowCompact,
    Future,
    /// Uniform in `[compact - 1, current + 1]`.
    Pick(u16),
}

impl RevSel {
    fn resolve(self, m: &Model) -> i64 {
        match self {
            Self::Zero => 0,
            Self::Current => m.current,
            Self::Prev => m.current - 1,
            Self::Compact => m.compact,
            Self::BelowCompact => m.compact - 1,
            Self::Future => m.current + 1,
            Self::Pick(x) => pick(m.compact - 1, m.current + 1, x),
        }
    }
}

fn pick(lo: i64, hi: i64, x: u16) -> i64 {
    lo + i64::from(x) % (hi - lo + 1)
}

/// The revision of a `Compact` op.
#[derive(Debug, Clone, Copy)]
enum CompactSel {
    /// Uniform in `0..=current + 1`.
    Pick(u16),
    Current,
    Future,
    AtCompact,
    /// `compact + 1 + k`, at most `current`.
    Above(u8),
}

impl CompactSel {
    fn resolve(self, m: &Model) -> i64 {
        match self {
            Self::Pick(x) => pick(0, m.current + 1, x),
            Self::Current => m.current,
            Self::Future => m.current + 1,
            Self::AtCompact => m.compact,
            Self::Above(k) => (m.compact.max(0) + 1 + i64::from(k)).min(m.current),
        }
    }
}

#[derive(Debug, Clone)]
struct PutSpec {
    key: usize,
    value: usize,
    /// Index into the leases granted so far (mod their number), if any.
    lease: Option<usize>,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

#[derive(Debug, Clone)]
enum TargetSpec {
    Value(usize),
    Version(i64),
    /// `current + d` (at least 0), or 0 for `None`.
    Create(Option<i8>),
    Mod(Option<i8>),
    /// A granted lease, or 0 for `None`.
    Lease(Option<usize>),
}

#[derive(Debug, Clone)]
struct CompareSpec {
    range: RangeSpec,
    result: u8,
    target: TargetSpec,
}

#[derive(Debug, Clone)]
enum TxnOpSpec {
    Put(PutSpec),
    Delete { range: RangeSpec, prev_kv: bool },
    Range { read: ReadSpec, rev: RevSel },
    Txn(Box<TxnSpec>),
}

#[derive(Debug, Clone)]
struct TxnSpec {
    compare: Vec<CompareSpec>,
    success: Vec<TxnOpSpec>,
    failure: Vec<TxnOpSpec>,
}

#[derive(Debug, Clone)]
enum Op {
    Put(PutSpec),
    DeleteRange {
        range: RangeSpec,
        prev_kv: bool,
    },
    /// `strict`: the builder drops what would break the duplicate-key rule and fixes invalid
    /// shapes, so that most txns run; `mvcc`: run through `KvStore::mvcc_txn` (no duplicate-key
    /// rule).
    Txn {
        spec: TxnSpec,
        strict: bool,
        mvcc: bool,
    },
    Compact {
        sel: CompactSel,
        wait: bool,
    },
    LeaseGrant {
        id: Option<i64>,
        ttl: i64,
    },
    LeaseRevoke {
        which: usize,
    },
    KeepAlive {
        which: usize,
    },
    ExpireLeases {
        secs: u64,
    },
    Restart,
    Range {
        read: ReadSpec,
        rev: RevSel,
    },
}

/// An extra read made after each op.
#[derive(Debug, Clone)]
struct Probe {
    read: ReadSpec,
    rev: u16,
}

#[derive(Debug, Clone)]
struct Case {
    batch_limit: usize,
    restore_chunk: usize,
    ops: Vec<(Op, Probe)>,
}

// ----- strategies -----

fn range_spec() -> impl Strategy<Value = RangeSpec> {
    prop_oneof![
        4 => (0..KEYS.len()).prop_map(RangeSpec::Single),
        3 => (0..BOUNDS.len(), 0..BOUNDS.len()).prop_map(|(a, b)| RangeSpec::Interval(a, b)),
        1 => (0..KEYS.len()).prop_map(RangeSpec::Prefix),
        1 => (0..BOUNDS.len()).prop_map(RangeSpec::FromKey),
        1 => Just(RangeSpec::All),
    ]
}

fn compare_range_spec() -> impl Strategy<Value = RangeSpec> {
    prop_oneof![
        6 => (0..KEYS.len()).prop_map(RangeSpec::Single),
        1 => (0..BOUNDS.len(), 0..BOUNDS.len()).prop_map(|(a, b)| RangeSpec::Interval(a, b)),
        1 => (0..KEYS.len()).prop_map(RangeSpec::Prefix),
    ]
}

fn read_opts() -> impl Strategy<Value = ReadOpts> {
    let filter = || prop::option::weighted(0.2, -4i8..=0);
    (0u8..3, 0u8..5, prop::bool::weighted(0.2), prop::bool::weighted(0.1), filter(), filter(), filter(), filter())
        .prop_map(|(order, target, keys_only, count_only, min_mod, max_mod, min_create, max_create)| ReadOpts {
            order,
            target,
            keys_only,
            count_only,
            min_mod,
            max_mod,
            min_create,
            max_create,
        })
}

fn read_spec() -> impl Strategy<Value = ReadSpec> {
    (range_spec(), 0i64..=3, prop::option::weighted(0.3, read_opts())).prop_map(|(range, limit, opts)| ReadSpec {
        range,
        limit,
        opts,
    })
}

fn rev_sel() -> impl Strategy<Value = RevSel> {
    prop_oneof![
        3 => Just(RevSel::Zero),
        1 => Just(RevSel::Current),
        1 => Just(RevSel::Prev),
        1 => Just(RevSel::Compact),
        1 => Just(RevSel::BelowCompact),
        1 => Just(RevSel::Future),
        4 => any::<u16>().prop_map(RevSel::Pick),
    ]
}

fn txn_rev_sel() -> impl Strategy<Value = RevSel> {
    prop_oneof![8 => Just(RevSel::Zero), 3 => rev_sel()]
}

fn compact_sel() -> impl Strategy<Value = CompactSel> {
    prop_oneof![
        3 => any::<u16>().prop_map(CompactSel::Pick),
        2 => Just(CompactSel::Current),
        1 => Just(CompactSel::Future),
        1 => Just(CompactSel::AtCompact),
        3 => (0u8..4).prop_map(CompactSel::Above),
    ]
}

fn put_spec() -> impl Strategy<Value = PutSpec> {
    (
        0..KEYS.len(),
        0..VALUES.len(),
        prop::option::weighted(0.35, any::<u8>().prop_map(usize::from)),
        any::<bool>(),
        prop::bool::weighted(0.04),
        prop::bool::weighted(0.04),
    )
        .prop_map(|(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutSpec {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        })
}

fn compare_spec() -> impl Strategy<Value = CompareSpec> {
    let target = prop_oneof![
        3 => (0..VALUES.len()).prop_map(TargetSpec::Value),
        2 => (0i64..4).prop_map(TargetSpec::Version),
        1 => prop::option::weighted(0.8, -4i8..=1).prop_map(TargetSpec::Create),
        2 => prop::option::weighted(0.8, -4i8..=1).prop_map(TargetSpec::Mod),
        1 => prop::option::weighted(0.7, any::<u8>().prop_map(usize::from)).prop_map(TargetSpec::Lease),
    ];
    (compare_range_spec(), 0u8..4, target).prop_map(|(range, result, target)| CompareSpec { range, result, target })
}

fn leaf_op() -> impl Strategy<Value = TxnOpSpec> {
    prop_oneof![
        4 => put_spec().prop_map(TxnOpSpec::Put),
        2 => (range_spec(), any::<bool>()).prop_map(|(range, prev_kv)| TxnOpSpec::Delete { range, prev_kv }),
        2 => (read_spec(), txn_rev_sel()).prop_map(|(read, rev)| TxnOpSpec::Range { read, rev }),
    ]
}

fn nested_txn() -> impl Strategy<Value = TxnSpec> {
    (
        prop::collection::vec(compare_spec(), 0..=2),
        prop::collection::vec(leaf_op(), 0..=3),
        prop::collection::vec(leaf_op(), 0..=2),
    )
        .prop_map(|(compare, success, failure)| TxnSpec { compare, success, failure })
}

fn txn_spec() -> impl Strategy<Value = TxnSpec> {
    let op = prop_oneof![7 => leaf_op(), 1 => nested_txn().prop_map(|t| TxnOpSpec::Txn(Box::new(t)))];
    let success = prop_oneof![
        30 => prop::collection::vec(op.clone(), 0..=4),
        1 => prop::collection::vec(op.clone(), MAX_TXN_OPS + 1..=MAX_TXN_OPS + 1),
    ];
    (prop::collection::vec(compare_spec(), 0..=2), success, prop::collection::vec(op, 0..=3))
        .prop_map(|(compare, success, failure)| TxnSpec { compare, success, failure })
}

/// A txn whose branches, nested txns included (two levels deep), only read
/// (`KvStore::plan_read_txn`).
fn read_only_txn_spec() -> impl Strategy<Value = TxnSpec> {
    let read = || (read_spec(), txn_rev_sel()).prop_map(|(read, rev)| TxnOpSpec::Range { read, rev });
    let branches = |op: BoxedStrategy<TxnOpSpec>| {
        (
            prop::collection::vec(compare_spec(), 0..=2),
            prop::collection::vec(op.clone(), 0..=2),
            prop::collection::vec(op, 0..=2),
        )
            .prop_map(|(compare, success, failure)| TxnOpSpec::Txn(Box::new(TxnSpec { compare, success, failure })))
    };
    let inner = branches(read().boxed());
    let nested = branches(prop_oneof![3 => read(), 1 => inner].boxed());
    let op = prop_oneof![5 => read(), 1 => nested];
    (
        prop::collection::vec(compare_spec(), 0..=2),
        prop::collection::vec(op.clone(), 0..=3),
        prop::collection::vec(op, 0..=2),
    )
        .prop_map(|(compare, success, failure)| TxnSpec { compare, success, failure })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        25 => put_spec().prop_map(Op::Put),
        8 => (range_spec(), any::<bool>()).prop_map(|(range, prev_kv)| Op::DeleteRange { range, prev_kv }),
        20 => (txn_spec(), prop::bool::weighted(0.8), prop::bool::weighted(0.25))
            .prop_map(|(spec, strict, mvcc)| Op::Txn { spec, strict, mvcc }),
        5 => (read_only_txn_spec(), prop::bool::weighted(0.8)).prop_map(|(spec, strict)| Op::Txn { spec, strict, mvcc: false }),
        6 => (compact_sel(), any::<bool>()).prop_map(|(sel, wait)| Op::Compact { sel, wait }),
        6 => (prop::option::weighted(0.7, 1i64..=6), 0i64..=8).prop_map(|(id, ttl)| Op::LeaseGrant { id, ttl }),
        3 => any::<u8>().prop_map(|w| Op::LeaseRevoke { which: usize::from(w) }),
        2 => any::<u8>().prop_map(|w| Op::KeepAlive { which: usize::from(w) }),
        4 => (1u64..=6).prop_map(|secs| Op::ExpireLeases { secs }),
        3 => Just(Op::Restart),
        8 => (read_spec(), rev_sel()).prop_map(|(read, rev)| Op::Range { read, rev }),
    ]
}

fn probe() -> impl Strategy<Value = Probe> {
    (read_spec(), any::<u16>()).prop_map(|(read, rev)| Probe { read, rev })
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=3, prop::sample::select(vec![1usize, 2, 3, 10_000]), prop::collection::vec((op(), probe()), 1..=60))
        .prop_map(|(batch_limit, restore_chunk, ops)| Case { batch_limit, restore_chunk, ops })
}

// ----- the model -----

/// An error kind with the fields the model can predict.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MErr {
    Compacted {
        requested: i64,
        compact_rev: i64,
    },
    FutureRev {
        requested: i64,
        current_rev: i64,
    },
    TooManyOps,
    DuplicateKey,
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    LeaseNotFound,
    LeaseExists,
    /// Anything the model never predicts.
    Unexpected(String),
}

/// One expired lease: its id and the revision and events of its revoke (or the error).
type ExpiredLease = (LeaseId, Result<(i64, Vec<Event>), MErr>);

fn merr(e: &Error) -> MErr {
    match e {
        Error::Compacted { requested, compact_rev } => {
            MErr::Compacted { requested: *requested, compact_rev: *compact_rev }
        }
        Error::FutureRev { requested, current_rev } => {
            MErr::FutureRev { requested: *requested, current_rev: *current_rev }
        }
        Error::TooManyOps => MErr::TooManyOps,
        Error::DuplicateKey => MErr::DuplicateKey,
        Error::KeyNotFound => MErr::KeyNotFound,
        Error::ValueProvided => MErr::ValueProvided,
        Error::LeaseProvided => MErr::LeaseProvided,
        Error::LeaseNotFound => MErr::LeaseNotFound,
        Error::LeaseExists => MErr::LeaseExists,
        other => MErr::Unexpected(format!("{other:?}")),
    }
}

#[derive(Debug, Clone)]
struct MLease {
    ttl: i64,
    /// Seconds on the fake clock.
    deadline: i64,
}

/// One change of a key, as the model recorded it.
#[derive(Debug, Clone)]
struct Change {
    rev: i64,
    /// Index of the change in its write (etcd's sub revision).
    sub: i64,
    /// The new state, `None` for a delete.
    state: Option<KeyValue>,
    /// `(rev, sub)` of the key's previous change if the key was live before this one.
    prev: Option<(i64, i64)>,
}

#[derive(Debug, Clone)]
struct Model {
    /// Per key, every change in revision order.
    hist: BTreeMap<Vec<u8>, Vec<Change>>,
    current: i64,
    compact: i64,
    leases: BTreeMap<LeaseId, MLease>,
    /// Every id granted so far, in grant order (ops pick leases by index into this).
    granted: Vec<LeaseId>,
    /// Fake clock, seconds after `base`.
    now: i64,
}

/// Plain byte-wise range membership (docs/etcd-semantics.md §4), written independently of
/// `KeyRange::contains`.
fn in_range(range: &KeyRange, key: &[u8]) -> bool {
    match range {
        KeyRange::Single(k) => k.as_slice() == key,
        KeyRange::Interval { start, end } => start.as_slice() <= key && key < end.as_slice(),
        KeyRange::FromKey(k) => k.as_slice() <= key,
    }
}

/// Reads `req` (all but its revision) out of a key → state map (docs/etcd-semantics.md §1.4 step 4,
/// etcd `executeRange`): `count` is every key of the range, before filters and limit; `count_only`
/// returns no key-values; filters, then sorting (a non-key target without an order sorts ascending;
/// ties keep key order, the store's documented choice where etcd's sort is not stable), then the
/// limit; `keys_only` blanks values. Like the store, the limit applies after sorting by a non-key
/// target even without a sort order; etcd (`rangeLimit`) pushes the limit down in that case and
/// sorts only the first `limit + 1` keys in key order.
fn read(state: &BTreeMap<Vec<u8>, KeyValue>, req: &RangeRequest, header: i64) -> RangeResponse {
    let mut kvs: Vec<KeyValue> =
        state.iter().filter(|(k, _)| in_range(&req.range, k)).map(|(_, v)| v.clone()).collect();
    let count = kvs.len() as i64;
    if req.count_only {
        kvs.clear();
    }
    let bound = |v: i64, lo: i64, hi: i64| (lo == 0 || v >= lo) && (hi == 0 || v <= hi);
    kvs.retain(|kv| {
        bound(kv.mod_revision, req.min_mod_revision, req.max_mod_revision)
            && bound(kv.create_revision, req.min_create_revision, req.max_create_revision)
    });
    let order = match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if order != SortOrder::None {
        let by = |kv: &KeyValue| match req.sort_target {
            SortTarget::Key => (kv.key.clone(), 0),
            SortTarget::Version => (Vec::new(), kv.version),
            SortTarget::Create => (Vec::new(), kv.create_revision),
            SortTarget::Mod => (Vec::new(), kv.mod_revision),
            SortTarget::Value => (kv.value.clone(), 0),
        };
        kvs.sort_by(|a, b| if order == SortOrder::Descend { by(b).cmp(&by(a)) } else { by(a).cmp(&by(b)) });
    }
    let more = req.limit > 0 && kvs.len() as i64 > req.limit;
    if more {
        kvs.truncate(req.limit as usize);
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse { revision: header, kvs, more, count }
}

/// etcd `compareKV`.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Value(v) => kv.value.cmp(v),
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// etcd `applyCompare`: every key in the range must satisfy it; no key compares as the zero
/// key-value, except that a value compare on no key fails.
fn compare_holds(state: &BTreeMap<Vec<u8>, KeyValue>, c: &Compare) -> bool {
    let kvs: Vec<&KeyValue> = state.iter().filter(|(k, _)| in_range(&c.range, k)).map(|(_, v)| v).collect();
    if kvs.is_empty() {
        return !matches!(c.target, CompareTarget::Value(_)) && compare_kv(c, &KeyValue::default());
    }
    kvs.into_iter().all(|kv| compare_kv(c, kv))
}

/// etcd `checkTxnRequest` (only the errors the generator can provoke).
fn shape_error(t: &TxnRequest, max_ops: usize) -> Option<MErr> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    if opc > max_ops {
        return Some(MErr::TooManyOps);
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Put(p) if p.ignore_value && !p.value.is_empty() => return Some(MErr::ValueProvided),
            RequestOp::Put(p) if p.ignore_lease && p.lease != 0 => return Some(MErr::LeaseProvided),
            RequestOp::Txn(n) => {
                if let Some(e) = shape_error(n, max_ops - opc) {
                    return Some(e);
                }
            }
            _ => {}
        }
    }
    None
}

/// etcd `checkIntervals`, with the store's documented deliberate difference: a from-key
/// delete overlaps the puts it contains.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<KeyRange>), MErr> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(d.range.clone()),
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    let deleted = |dels: &[KeyRange], k: &[u8]| dels.iter().any(|d| in_range(d, k));
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (then_puts, then_dels) = check_intervals(&t.success)?;
        let (else_puts, else_dels) = check_intervals(&t.failure)?;
        for k in &then_puts {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(MErr::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &else_puts {
            if (puts.contains(k) && !then_puts.contains(k)) || deleted(&dels, k) {
                return Err(MErr::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(MErr::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

impl Model {
    fn new() -> Self {
        Self { hist: BTreeMap::new(), current: 1, compact: -1, leases: BTreeMap::new(), granted: Vec::new(), now: 0 }
    }

    /// The live keys at `rev` (no compaction check).
    fn state_at(&self, rev: i64) -> BTreeMap<Vec<u8>, KeyValue> {
        let mut out = BTreeMap::new();
        for (k, h) in &self.hist {
            let last = h.iter().rev().find(|c| c.rev <= rev);
            if let Some(Change { state: Some(kv), .. }) = last {
                out.insert(k.clone(), kv.clone());
            }
        }
        out
    }

    fn live(&self) -> BTreeMap<Vec<u8>, KeyValue> {
        self.state_at(self.current)
    }

    /// docs/etcd-semantics.md §1.4 steps 1–3, then the read.
    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MErr> {
        if req.revision > self.current {
            return Err(MErr::FutureRev { requested: req.revision, current_rev: self.current });
        }
        let rev = if req.revision <= 0 { self.current } else { req.revision };
        if rev < self.compact {
            return Err(MErr::Compacted { requested: rev, compact_rev: self.compact });
        }
        Ok(read(&self.state_at(rev), req, self.current))
    }

    /// Keys in the key index: live now, or changed at or after the compact revision (a key
    /// whose last change is a tombstone below it has left the index, docs/etcd-semantics.md §2.1).
    fn indexed_keys(&self) -> usize {
        self.hist
            .values()
            .filter(|h| {
                let last = h.last().expect("history is never empty");
                last.state.is_some() || last.rev >= self.compact
            })
            .count()
    }

    /// The history rows the backend must hold with `main >= from` (docs/etcd-semantics.md §1.1: one
    /// row per change keyed by `(main, sub)`, a tombstone's value holds only the key;
    /// docs/etcd-semantics.md §5: compaction at `r` keeps every row at `main >= r`), plus, if
    /// `below` (a physical compaction has finished), the rows below the compact revision that
    /// compaction keeps: each key's newest change `<= r` if the key is live at `r`. In revision
    /// order.
    fn rows(&self, from: i64, below: bool) -> Vec<(Revision, bool, KeyValue, Option<Revision>)> {
        let mut out = Vec::new();
        for (key, h) in &self.hist {
            let row = |c: &Change| {
                let kv = c.state.clone().unwrap_or_else(|| KeyValue { key: key.clone(), ..KeyValue::default() });
                let prev = c.prev.map(|(m, s)| Revision::new(m, s));
                (Revision::new(c.rev, c.sub), c.state.is_none(), kv, prev)
            };
            out.extend(h.iter().filter(|c| c.rev >= from).map(row));
            if below {
                let kept = h.iter().rev().find(|c| c.rev <= self.compact);
                if let Some(c) = kept.filter(|c| c.state.is_some() && c.rev < from) {
                    out.push(row(c));
                }
            }
        }
        out.sort_by_key(|r| r.0);
        out
    }

    fn lease_keys(&self, id: LeaseId) -> Vec<Vec<u8>> {
        self.live().into_iter().filter(|(_, kv)| kv.lease == id).map(|(k, _)| k).collect()
    }

    /// Resolves a lease selector: mostly a live lease, else any lease granted so far (possibly
    /// revoked since), else an id never granted. Leases are picked in grant order, so that the
    /// choice does not depend on the random ids the store picks for `lease_grant(0, ..)`.
    fn lease_sel(&self, which: usize) -> LeaseId {
        let mut live: Vec<LeaseId> = Vec::new();
        for id in &self.granted {
            if self.leases.contains_key(id) && !live.contains(id) {
                live.push(*id);
            }
        }
        if !which.is_multiple_of(4) && !live.is_empty() {
            live[(which / 4) % live.len()]
        } else if self.granted.is_empty() {
            UNKNOWN_LEASE
        } else {
            self.granted[which % self.granted.len()]
        }
    }

    /// Applies the events of one write: one new revision if there is any (docs/etcd-semantics.md
    /// §1.2).
    fn commit(&mut self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        self.current += 1;
        for (sub, e) in events.iter().enumerate() {
            let state = match e.kind {
                EventKind::Put => Some(e.kv.clone()),
                EventKind::Delete => None,
            };
            let h = self.hist.entry(e.kv.key.clone()).or_default();
            let prev = h.last().filter(|c| c.state.is_some()).map(|c| (c.rev, c.sub));
            h.push(Change { rev: self.current, sub: sub as i64, state, prev });
        }
    }

    fn put_refs(&self, p: &PutRequest, pre: &BTreeMap<Vec<u8>, KeyValue>) -> Result<(), MErr> {
        if (p.ignore_value || p.ignore_lease) && !pre.contains_key(&p.key) {
            return Err(MErr::KeyNotFound);
        }
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(MErr::LeaseNotFound);
        }
        Ok(())
    }

    /// etcd `checkRequests` along the executed path: compares are all evaluated against the
    /// state before the txn. Read revisions are checked only when positive (the store's
    /// documented deliberate difference: a txn read at a negative revision reads the current
    /// one, as a plain range does, where etcd answers `ErrCompacted` after any compaction).
    /// With `mvcc`, a read may name `current + 1` (the txn's own revision); whether it may is
    /// known only when it runs (see `Work::range`).
    fn txn_refs(&self, t: &TxnRequest, pre: &BTreeMap<Vec<u8>, KeyValue>, mvcc: bool) -> Result<(), MErr> {
        let ok = t.compare.iter().all(|c| compare_holds(pre, c));
        let newest = self.current + i64::from(mvcc);
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Put(p) => self.put_refs(p, pre)?,
                RequestOp::Range(r) if r.revision > 0 => {
                    if r.revision > newest {
                        return Err(MErr::FutureRev { requested: r.revision, current_rev: self.current });
                    }
                    if r.revision < self.compact {
                        return Err(MErr::Compacted { requested: r.revision, compact_rev: self.compact });
                    }
                }
                RequestOp::Txn(n) => self.txn_refs(n, pre, mvcc)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn put(&mut self, p: &PutRequest) -> Result<(PutResponse, Vec<Event>), MErr> {
        if p.ignore_value && !p.value.is_empty() {
            return Err(MErr::ValueProvided);
        }
        if p.ignore_lease && p.lease != 0 {
            return Err(MErr::LeaseProvided);
        }
        // etcd's apply.go `Put` checks a put's own lease before its key; a txn's put checks the
        // key first (`put_refs`).
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(MErr::LeaseNotFound);
        }
        let pre = self.live();
        self.put_refs(p, &pre)?;
        let mut w = Work::new(self, pre);
        let mut resp = w.put(p);
        let events = w.events;
        self.commit(&events);
        resp.revision = self.current;
        Ok((resp, events))
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> (DeleteRangeResponse, Vec<Event>) {
        let mut w = Work::new(self, self.live());
        let mut resp = w.delete(d);
        let events = w.events;
        self.commit(&events);
        resp.revision = self.current;
        (resp, events)
    }

    /// A txn through `KvStore::txn`, or `KvStore::mvcc_txn` if `mvcc` (etcd's MVCC layer: no
    /// duplicate-key rule, so one txn may change a key several times; a read may name the
    /// txn's own revision once it has changed something). A txn that fails changes nothing.
    fn txn(&mut self, t: &TxnRequest, mvcc: bool) -> Result<(TxnResponse, Vec<Event>), MErr> {
        if let Some(e) = shape_error(t, MAX_TXN_OPS) {
            return Err(e);
        }
        if !mvcc {
            check_intervals(&t.success)?;
            check_intervals(&t.failure)?;
        }
        let pre = self.live();
        self.txn_refs(t, &pre, mvcc)?;
        let mut w = Work::new(self, pre);
        let mut resp = w.txn(t)?;
        let events = w.events;
        self.commit(&events);
        resp.revision = self.current;
        Ok((resp, events))
    }

    /// Revokes a lease: its live keys are deleted in key order in one revision
    /// (docs/etcd-semantics.md §3).
    fn revoke(&mut self, id: LeaseId) -> Result<(i64, Vec<Event>), MErr> {
        if !self.leases.contains_key(&id) {
            return Err(MErr::LeaseNotFound);
        }
        let keys = self.lease_keys(id);
        let mut w = Work::new(self, self.live());
        for k in keys {
            w.delete(&DeleteRangeRequest::new(KeyRange::Single(k)));
        }
        let events = w.events;
        self.commit(&events);
        self.leases.remove(&id);
        Ok((self.current, events))
    }

    /// docs/etcd-semantics.md §5 steps 1–3 (the logical part).
    fn compact(&mut self, rev: i64) -> Result<(), MErr> {
        if rev <= self.compact {
            return Err(MErr::Compacted { requested: rev, compact_rev: self.compact });
        }
        if rev > self.current {
            return Err(MErr::FutureRev { requested: rev, current_rev: self.current });
        }
        self.compact = rev;
        Ok(())
    }
}

/// One write transaction in progress on the model.
struct Work<'m> {
    m: &'m Model,
    /// The state before the write (what compares see).
    pre: BTreeMap<Vec<u8>, KeyValue>,
    /// The state with this write's changes so far.
    live: BTreeMap<Vec<u8>, KeyValue>,
    events: Vec<Event>,
}

impl<'m> Work<'m> {
    fn new(m: &'m Model, pre: BTreeMap<Vec<u8>, KeyValue>) -> Self {
        Self { m, live: pre.clone(), pre, events: Vec::new() }
    }

    fn rev(&self) -> i64 {
        self.m.current + 1
    }

    /// Reads inside a write see its own writes (docs/etcd-semantics.md §1.2).
    fn read_rev(&self) -> i64 {
        self.m.current + i64::from(!self.events.is_empty())
    }

    fn put(&mut self, p: &PutRequest) -> PutResponse {
        let rev = self.rev();
        let prev = self.live.get(&p.key).cloned();
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |v| v.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |v| v.version + 1),
            value: match (&prev, p.ignore_value) {
                (Some(v), true) => v.value.clone(),
                _ => p.value.clone(),
            },
            lease: match (&prev, p.ignore_lease) {
                (Some(v), true) => v.lease,
                _ => p.lease,
            },
        };
        self.live.insert(p.key.clone(), kv.clone());
        self.events.push(Event::new(EventKind::Put, kv, prev.clone()));
        PutResponse { revision: rev, prev_kv: if p.prev_kv { prev } else { None } }
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let rev = self.rev();
        let keys: Vec<Vec<u8>> = self.live.keys().filter(|k| in_range(&d.range, k)).cloned().collect();
        let mut prev_kvs = Vec::new();
        for k in &keys {
            let prev = self.live.remove(k).expect("live key");
            let kv = KeyValue { key: k.clone(), mod_revision: rev, ..KeyValue::default() };
            if d.prev_kv {
                prev_kvs.push(prev.clone());
            }
            self.events.push(Event::new(EventKind::Delete, kv, Some(prev)));
        }
        DeleteRangeResponse { revision: self.read_rev(), deleted: keys.len() as i64, prev_kvs }
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, MErr> {
        // Explicit revisions were checked against the compact revision before the txn ran, and
        // are at most `current + 1`; `current + 1` is readable once the txn has changed
        // something (only `mvcc_txn` lets it through).
        let view = self.read_rev();
        if r.revision > view {
            return Err(MErr::FutureRev { requested: r.revision, current_rev: view });
        }
        Ok(if r.revision <= 0 || r.revision > self.m.current {
            read(&self.live, r, view)
        } else {
            read(&self.m.state_at(r.revision), r, view)
        })
    }

    fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, MErr> {
        let succeeded = t.compare.iter().all(|c| compare_holds(&self.pre, c));
        let mut responses = Vec::new();
        for op in if succeeded { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d)),
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
                RequestOp::Txn(n) => ResponseOp::Txn(self.txn(n)?),
                RequestOp::Empty => unreachable!("never generated"),
            });
        }
        // Nested txn responses carry revision 0; the caller fills the top-level one.
        Ok(TxnResponse { revision: 0, succeeded, responses })
    }
}

// ----- building requests from specs -----

/// How a txn is built and run.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Drop ops that break the duplicate-key rule, cut lists to the op budget, clear a value or
    /// lease that an `ignore_*` flag forbids.
    strict: bool,
    /// Run through `KvStore::mvcc_txn`: no duplicate-key rule.
    mvcc: bool,
}

fn build_put(p: &PutSpec, m: &Model, strict: bool) -> PutRequest {
    let mut req = PutRequest {
        key: KEYS[p.key].to_vec(),
        value: VALUES[p.value].to_vec(),
        lease: p.lease.map_or(0, |w| m.lease_sel(w)),
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    };
    if strict && req.ignore_value {
        req.value.clear();
    }
    if strict && req.ignore_lease {
        req.lease = 0;
    }
    req
}

fn rel_rev(d: Option<i8>, m: &Model) -> i64 {
    d.map_or(0, |d| (m.current + i64::from(d)).max(0))
}

fn build_compare(c: &CompareSpec, m: &Model) -> Compare {
    let result = [CompareResult::Equal, CompareResult::NotEqual, CompareResult::Less, CompareResult::Greater]
        [usize::from(c.result) % 4];
    let target = match &c.target {
        TargetSpec::Value(v) => CompareTarget::Value(VALUES[*v].to_vec()),
        TargetSpec::Version(v) => CompareTarget::Version(*v),
        TargetSpec::Create(d) => CompareTarget::Create(rel_rev(*d, m)),
        TargetSpec::Mod(d) => CompareTarget::Mod(rel_rev(*d, m)),
        TargetSpec::Lease(w) => CompareTarget::Lease(w.map_or(0, |w| m.lease_sel(w))),
    };
    Compare { range: c.range.build(), result, target }
}

fn build_txn(t: &TxnSpec, m: &Model, mode: Mode, budget: usize) -> TxnRequest {
    let cut = |n: usize| if mode.strict { n.min(budget) } else { n };
    let compare: Vec<Compare> = t.compare[..cut(t.compare.len())].iter().map(|c| build_compare(c, m)).collect();
    let (success, failure) = (&t.success[..cut(t.success.len())], &t.failure[..cut(t.failure.len())]);
    let nested_budget = budget.saturating_sub(compare.len().max(success.len()).max(failure.len()));
    let branch = |specs: &[TxnOpSpec]| {
        let mut ops: Vec<RequestOp> = Vec::new();
        for spec in specs {
            let op = match spec {
                TxnOpSpec::Put(p) => RequestOp::Put(build_put(p, m, mode.strict)),
                TxnOpSpec::Delete { range, prev_kv } => {
                    RequestOp::DeleteRange(DeleteRangeRequest { range: range.build(), prev_kv: *prev_kv })
                }
                TxnOpSpec::Range { read, rev } => RequestOp::Range(read.build(rev.resolve(m), m)),
                TxnOpSpec::Txn(n) => RequestOp::Txn(build_txn(n, m, mode, nested_budget)),
            };
            if mode.strict && !mode.mvcc {
                let mut trial = ops.clone();
                trial.push(op.clone());
                if check_intervals(&trial).is_err() {
                    continue;
                }
            }
            ops.push(op);
        }
        ops
    };
    TxnRequest { compare, success: branch(success), failure: branch(failure) }
}

// ----- the runner -----

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

struct Harness {
    _dir: tempfile::TempDir,
    config: StoreConfig,
    base: Instant,
    store: Option<KvStore>,
    m: Model,
}

impl Harness {
    fn new(case: &Case) -> Result<Self, TestCaseError> {
        let dir = tempfile::tempdir().map_err(|e| fail(format!("tempdir: {e}")))?;
        let config = StoreConfig::new(dir.path())
            .with_durability(Durability::Buffered)
            .with_compaction_sleep_interval(Duration::ZERO)
            .with_compaction_batch_limit(case.batch_limit)
            .with_restore_chunk_keys(case.restore_chunk)
            .with_max_txn_ops(MAX_TXN_OPS)
            .with_min_lease_ttl(MIN_TTL)
            .with_cache_size(1 << 20);
        let base = Instant::now();
        let store = KvStore::open_at(config.clone(), base).map_err(|e| fail(format!("open: {e:?}")))?;
        Ok(Self { _dir: dir, config, base, store: Some(store), m: Model::new() })
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_secs(u64::try_from(self.m.now).expect("clock is non-negative"))
    }

    fn store(&mut self) -> &mut KvStore {
        self.store.as_mut().expect("store is open")
    }

    fn restart(&mut self) -> Result<(), TestCaseError> {
        drop(self.store.take());
        let now = self.now();
        let store = KvStore::open_at(self.config.clone(), now).map_err(|e| fail(format!("reopen: {e:?}")))?;
        self.store = Some(store);
        // Restored leases expire `ttl` seconds after the reopen.
        let t = self.m.now;
        for l in self.m.leases.values_mut() {
            l.deadline = t + l.ttl;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op, ctx: &str) -> Result<(), TestCaseError> {
        match op {
            Op::Put(p) => {
                let req = build_put(p, &self.m, false);
                let got = self.store().put(req.clone()).map(|c| (c.response, c.events)).map_err(|e| merr(&e));
                let want = self.m.put(&req);
                prop_assert_eq!(
                    got,
                    want,
                    "{}: put {:?}: response/events differ (left: store, right: model)",
                    ctx,
                    req
                );
            }
            Op::DeleteRange { range, prev_kv } => {
                let req = DeleteRangeRequest { range: range.build(), prev_kv: *prev_kv };
                let got = self.store().delete_range(req.clone()).map(|c| (c.response, c.events)).map_err(|e| merr(&e));
                let want = Ok(self.m.delete(&req));
                prop_assert_eq!(
                    got,
                    want,
                    "{}: delete {:?}: response/events differ (left: store, right: model)",
                    ctx,
                    req
                );
            }
            Op::Txn { spec, strict, mvcc } => {
                let mode = Mode { strict: *strict, mvcc: *mvcc };
                let req = build_txn(spec, &self.m, mode, MAX_TXN_OPS);
                let want = self.m.txn(&req, *mvcc);
                if !*mvcc && !req.writes() {
                    // A txn that only reads is served as a read; in place and from a snapshot,
                    // it answers as the write path does.
                    let store = self.store();
                    let in_place = store.read_txn(&req).map(|r| (r, Vec::new())).map_err(|e| merr(&e));
                    prop_assert_eq!(
                        &in_place,
                        &want,
                        "{}: read-only txn {:#?} in place (left: store, right: model)",
                        ctx,
                        req
                    );
                    let snapshot = store.reader().snapshot();
                    let from_snapshot = store
                        .plan_read_txn(&req)
                        .and_then(|plan| plan.finish_from(&snapshot))
                        .map(|r| (r, Vec::new()))
                        .map_err(|e| merr(&e));
                    prop_assert_eq!(&from_snapshot, &want, "{}: read-only txn {:#?} from a snapshot", ctx, req);
                    for keys in [1, 2] {
                        let in_parts = plan_txn_in_parts(store, &req, keys)
                            .and_then(|plan| store.finish_read_txn(plan))
                            .map(|r| (r, Vec::new()))
                            .map_err(|e| merr(&e));
                        prop_assert_eq!(&in_parts, &want, "{}: read-only txn {:#?} in parts of {}", ctx, req, keys);
                    }
                }
                let got = if *mvcc { self.store().mvcc_txn(req.clone()) } else { self.store().txn(req.clone()) };
                let got = got.map(|c| (c.response, c.events)).map_err(|e| merr(&e));
                prop_assert_eq!(
                    got,
                    want,
                    "{}: txn {:#?}: response/events differ (left: store, right: model)",
                    ctx,
                    req
                );
            }
            Op::Compact { sel, wait } => {
                let rev = sel.resolve(&self.m);
                let got = self.store().compact(rev);
                let want = self.m.compact(rev);
                match got {
                    Ok(ticket) => {
                        prop_assert_eq!(Ok(()), want, "{}: compact({}) succeeded, model expected an error", ctx, rev);
                        prop_assert_eq!(ticket.revision(), rev, "{}: ticket revision", ctx);
                        if *wait {
                            ticket.wait().map_err(|e| fail(format!("{ctx}: physical compaction at {rev}: {e:?}")))?;
                            let ctx = format!("{ctx}: after physical compaction at {rev}");
                            self.check_history(&ctx)?;
                            self.check_rows(true, &ctx)?;
                        }
                    }
                    Err(e) => {
                        prop_assert_eq!(Err(merr(&e)), want, "{}: compact({}) error", ctx, rev)
                    }
                }
            }
            Op::LeaseGrant { id, ttl } => {
                let now = self.now();
                let got = self.store().lease_grant(id.unwrap_or(0), *ttl, now).map_err(|e| merr(&e));
                let granted_ttl = (*ttl).max(MIN_TTL);
                match id {
                    Some(id) if self.m.leases.contains_key(id) => {
                        prop_assert_eq!(got, Err(MErr::LeaseExists), "{}: grant of live lease {}", ctx, id);
                    }
                    _ => {
                        let (got_id, got_ttl) =
                            got.map_err(|e| fail(format!("{ctx}: lease grant failed unexpectedly: {e:?}")))?;
                        prop_assert_eq!(got_ttl, granted_ttl, "{}: granted ttl", ctx);
                        match id {
                            Some(id) => prop_assert_eq!(got_id, *id, "{}: granted id", ctx),
                            None => prop_assert!(
                                got_id > 0 && !self.m.leases.contains_key(&got_id),
                                "{}: server-chosen lease id {} is not fresh",
                                ctx,
                                got_id
                            ),
                        }
                        self.m.leases.insert(got_id, MLease { ttl: granted_ttl, deadline: self.m.now + granted_ttl });
                        self.m.granted.push(got_id);
                    }
                }
            }
            Op::LeaseRevoke { which } => {
                let id = self.m.lease_sel(*which);
                let got = self.store().lease_revoke(id).map(|c| (c.response, c.events)).map_err(|e| merr(&e));
                let want = self.m.revoke(id);
                prop_assert_eq!(
                    got,
                    want,
                    "{}: revoke lease {}: response/events differ (left: store, right: model)",
                    ctx,
                    id
                );
            }
            Op::KeepAlive { which } => {
                let id = self.m.lease_sel(*which);
                let now = self.now();
                let got = self.store().lease_keep_alive(id, now).map_err(|e| merr(&e));
                let t = self.m.now;
                let want = match self.m.leases.get_mut(&id) {
                    Some(l) if l.deadline > t => {
                        l.deadline = t + l.ttl;
                        Ok(l.ttl)
                    }
                    _ => Err(MErr::LeaseNotFound),
                };
                prop_assert_eq!(got, want, "{}: keep-alive of lease {}", ctx, id);
            }
            Op::ExpireLeases { secs } => {
                self.m.now += i64::try_from(*secs).expect("small");
                let now = self.now();
                let got: Vec<ExpiredLease> = self
                    .store()
                    .expire_leases(now)
                    .into_iter()
                    .map(|(id, r)| (id, r.map(|c| (c.response, c.events)).map_err(|e| merr(&e))))
                    .collect();
                let t = self.m.now;
                let mut expired: Vec<(i64, LeaseId)> =
                    self.m.leases.iter().filter(|(_, l)| l.deadline <= t).map(|(id, l)| (l.deadline, *id)).collect();
                expired.sort_unstable();
                let want: Vec<ExpiredLease> = expired.into_iter().map(|(_, id)| (id, self.m.revoke(id))).collect();
                prop_assert_eq!(got, want, "{}: expired leases at t={}s (left: store, right: model)", ctx, t);
            }
            Op::Restart => {
                self.restart()?;
                let ctx = format!("{ctx}: after restart");
                self.check_history(&ctx)?;
                self.check_rows(false, &ctx)?;
            }
            Op::Range { read, rev } => {
                let req = read.build(rev.resolve(&self.m), &self.m);
                self.check_range(&req, ctx)?;
            }
        }
        Ok(())
    }

    fn check_range(&mut self, req: &RangeRequest, ctx: &str) -> Result<(), TestCaseError> {
        let got = self.store().range(req).map_err(|e| merr(&e));
        let want = self.m.range(req);
        prop_assert_eq!(&got, &want, "{}: range {:?} (left: store, right: model)", ctx, req);
        // The same range planned and read from a snapshot, as the store actor reads a large one.
        let store = self.store();
        let from_snapshot =
            store.plan_range(req).and_then(|plan| plan.finish_from(&store.reader().snapshot())).map_err(|e| merr(&e));
        prop_assert_eq!(
            from_snapshot,
            want.clone(),
            "{}: range {:?} from a snapshot (left: store, right: model)",
            ctx,
            req
        );
        // The same range planned in parts of one and of two keys, as the store actor plans one
        // over many keys.
        for keys in [1, 2] {
            let store = self.store();
            let in_parts =
                plan_in_parts(store, req, keys).and_then(|plan| store.finish_range(plan)).map_err(|e| merr(&e));
            prop_assert_eq!(
                in_parts,
                want.clone(),
                "{}: range {:?} planned in parts of {} (left: store, right: model)",
                ctx,
                req,
                keys
            );
        }
        Ok(())
    }

    /// The checks made after every op.
    fn check_state(&mut self, probe: &Probe, ctx: &str) -> Result<(), TestCaseError> {
        let (cur, compact) = (self.m.current, self.m.compact);
        prop_assert_eq!(self.store().current_rev(), cur, "{}: current revision", ctx);
        prop_assert_eq!(self.store().compact_rev(), compact, "{}: compact revision", ctx);
        let probe_rev = pick(compact - 1, cur + 1, probe.rev);
        for rev in [0, cur - 1, compact, probe_rev] {
            self.check_range(&RangeRequest::new(KeyRange::all()).at(rev), ctx)?;
        }
        self.check_range(&probe.read.build(probe_rev, &self.m), ctx)?;
        let stats = self.store().stats();
        prop_assert_eq!(stats.indexed_keys, self.m.indexed_keys(), "{}: keys in the index", ctx);
        let ids: Vec<LeaseId> = self.m.leases.keys().copied().collect();
        let mut by_expiry: Vec<(i64, LeaseId)> = self.m.leases.iter().map(|(id, l)| (l.deadline, *id)).collect();
        by_expiry.sort_unstable();
        let by_expiry: Vec<LeaseId> = by_expiry.into_iter().map(|(_, id)| id).collect();
        prop_assert_eq!(self.store().leases(), by_expiry, "{}: lease ids, soonest to expire first", ctx);
        let now = self.now();
        for id in ids {
            let l = self.m.leases[&id].clone();
            let keys = self.m.lease_keys(id);
            let st = self
                .store()
                .lease_time_to_live(id, now, true)
                .map_err(|e| fail(format!("{ctx}: time_to_live({id}): {e:?}")))?;
            prop_assert_eq!(
                (st.id, st.ttl, st.granted_ttl, st.keys),
                (id, (l.deadline - self.m.now).max(0), l.ttl, keys),
                "{}: lease {} (id, remaining ttl, granted ttl, keys)",
                ctx,
                id
            );
        }
        Ok(())
    }

    /// Reads all keys at every readable revision.
    fn check_history(&mut self, ctx: &str) -> Result<(), TestCaseError> {
        for rev in self.m.compact.max(1)..=self.m.current {
            self.check_range(&RangeRequest::new(KeyRange::all()).at(rev), ctx)?;
        }
        Ok(())
    }

    /// Compares the history rows on disk with the model's (see `Model::rows`): every row from
    /// the compact revision on, and with `below` (no physical compaction running) the rows
    /// compaction kept below it.
    fn check_rows(&mut self, below: bool, ctx: &str) -> Result<(), TestCaseError> {
        let from = if below { 0 } else { self.m.compact.max(0) };
        let snapshot = self.store().reader().snapshot();
        let mut got = Vec::new();
        snapshot
            .scan(from, self.m.current + 1, |key, row| {
                let whole = row.decode()?;
                assert_eq!(row.key(), whole.kv.key.as_slice(), "the key read in place is the decoded one");
                got.push((key.rev, key.tombstone, whole.kv, whole.prev));
                Ok(true)
            })
            .map_err(|e| fail(format!("{ctx}: scan of history rows: {e:?}")))?;
        let want = self.m.rows(self.m.compact.max(0), below);
        prop_assert_eq!(got, want, "{}: history rows from revision {} (left: store, right: model)", ctx, from);
        Ok(())
    }
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let mut h = Harness::new(case)?;
    for (i, (op, probe)) in case.ops.iter().enumerate() {
        let ctx = format!("op #{i} {op:?} (rev {} compact {} t={}s)", h.m.current, h.m.compact, h.m.now);
        h.apply(op, &ctx)?;
        h.check_state(probe, &ctx)?;
    }
    h.check_history("end of case")?;
    h.check_rows(false, "end of case")?;
    h.restart()?;
    let all = ReadSpec { range: RangeSpec::All, limit: 0, opts: None };
    h.check_state(&Probe { read: all, rev: 0 }, "final restart")?;
    h.check_history("after final restart")?;
    h.check_rows(false, "after final restart")
}

fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    ProptestConfig {
        cases,
        rng_seed: match default.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x5eed_cafe_f00d),
            fixed => fixed,
        },
        // Shrunk failures go to tests/regression.rs by hand.
        failure_persistence: None,
        // Bound the shrinking of a failure (each step replays a whole case on a fresh store).
        max_shrink_iters: 4096,
        max_shrink_time: 180_000,
        ..default
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn store_matches_model(case in case()) {
        run_case(&case)?;
    }
}

/// `req` planned by `KvStore::start_read_txn` and `continue_read_txn`, `keys` keys of the index a
/// part.
fn plan_txn_in_parts(store: &KvStore, req: &TxnRequest, keys: usize) -> watchkv::Result<watchkv::TxnPlan> {
    let mut cursor = store.start_read_txn(req.clone())?;
    loop {
        match store.continue_read_txn(cursor, keys)? {
            watchkv::TxnPlanning::Partial(next) => cursor = next,
            watchkv::TxnPlanning::Done(plan) => return Ok(plan),
        }
    }
}

/// `req` planned by walking at most `keys` keys of the index per part.
fn plan_in_parts(store: &KvStore, req: &RangeRequest, keys: usize) -> watchkv::Result<watchkv::RangePlan> {
    let mut cursor = store.start_range(req)?;
    loop {
        match store.continue_range(cursor, keys)? {
            watchkv::Planning::Partial(next) => cursor = next,
            watchkv::Planning::Done(plan) => return Ok(plan),
        }
    }
}
