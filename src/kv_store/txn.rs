//! Owns transactions: the public `txn` / `mvcc_txn`, their checks against the state before the
//! write, the compare path and the execution of the chosen branches (etcd
//! `server/etcdserver/txn/txn.go`: `checkRequests`, `compareToPath`, `applyCompare`,
//! `compareKV`, `executeTxn`), and a txn that only reads, planned like a range ([`TxnPlan`]).

use super::quota::Gate;
use super::read::{RangeCursor, RangePlan};
use super::write::WriteTxn;
use super::{Committed, KvStore};
use crate::backend::RevisionSnapshot;
use crate::error::{Error, Result};
use crate::kv::KeyValue;
use crate::request::{
    check_txn, check_txn_shape, Compare, CompareResult, CompareTarget, RangeResponse, RequestOp, ResponseOp,
    TxnRequest, TxnResponse,
};
use crate::revision::Revision;

impl KvStore {
    /// Runs a transaction (etcd `Txn`).
    ///
    /// # Errors
    /// The validation errors of [`check_txn`], `LeaseNotFound`, `KeyNotFound`, `FutureRev` /
    /// `Compacted` for a read inside it, or a storage error. A txn that fails changes nothing.
    pub fn txn(&mut self, req: TxnRequest) -> Result<Committed<TxnResponse>> {
        self.write(req)
    }

    /// Runs a transaction with only the MVCC layer's rules: the API-level duplicate-key rule is
    /// skipped, so one txn may put the same key several times (each change gets the next `sub`
    /// and version, etcd case A13). Transports use [`Self::txn`].
    ///
    /// # Errors
    /// As [`Self::txn`], except `DuplicateKey`.
    pub fn mvcc_txn(&mut self, req: TxnRequest) -> Result<Committed<TxnResponse>> {
        let result = self.apply_txn(req, false);
        self.persist()?;
        result
    }

    /// Resolves a txn that only reads (`!req.writes()`) at the read revision: its compares
    /// and which rows answer each range of the chosen branches. Reading the rows is left to
    /// [`TxnPlan::finish`] or [`TxnPlan::finish_from`], as for a range, so that such a txn is
    /// served beside the writes rather than inside their group commit, and its rows can be read
    /// from a snapshot elsewhere (etcd `v3_server.go` `Txn` serves a read-only txn as a read,
    /// outside raft and the appliers: under `NOSPACE` or `CORRUPT` too). The ranges are walked
    /// in one go; [`Self::start_read_txn`] walks them in parts.
    ///
    /// # Errors
    /// As [`Self::txn`] for a txn without writes; `Internal` for a txn that writes.
    pub fn plan_read_txn(&self, req: &TxnRequest) -> Result<TxnPlan> {
        match self.continue_read_txn(self.start_read_txn(req.clone())?, usize::MAX)? {
            TxnPlanning::Done(plan) => Ok(plan),
            TxnPlanning::Partial(_) => Err(Error::Internal("an unbounded txn walk stopped early".into())),
        }
    }

    /// Starts planning a txn that only reads in parts ([`Self::continue_read_txn`]), as
    /// [`Self::start_range`] does a range: its checks and compares run now, at the read
    /// revision, which is fixed for its ranges too; their walks of the key index are left to
    /// the parts.
    ///
    /// # Errors
    /// As [`Self::plan_read_txn`].
    pub fn start_read_txn(&self, req: TxnRequest) -> Result<TxnCursor> {
        self.check_index_whole()?;
        if req.writes() {
            return Err(Error::Internal("a txn that writes was planned as a read".into()));
        }
        check_txn(&req, self.config.max_txn_ops())?;
        let path = self.compare_path(&req)?;
        self.check_txn_refs(&req, &path, &mut 0, true)?;
        let (root, _) = self.cursor_branch(req, &path)?;
        Ok(TxnCursor { revision: self.read_rev(), root })
    }

    /// Walks at most `keys` more keys of the key index for the ranges of `cursor`, in the order
    /// the txn runs them: the plan when every walk is complete, else the cursor to continue
    /// from.
    ///
    /// # Errors
    /// As [`Self::continue_range`].
    pub fn continue_read_txn(&self, mut cursor: TxnCursor, keys: usize) -> Result<TxnPlanning> {
        // Every part makes progress, as a range's does.
        let mut budget = keys.max(1);
        if self.walk_txn(&mut cursor.root, &mut budget)? {
            Ok(TxnPlanning::Done(TxnPlan { revision: cursor.revision, root: cursor.root.into_plan() }))
        } else {
            Ok(TxnPlanning::Partial(cursor))
        }
    }

    /// Runs a txn that only reads, in place ([`Self::plan_read_txn`], then its rows).
    ///
    /// # Errors
    /// As [`Self::plan_read_txn`], or a storage error.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse> {
        self.finish_read_txn(self.plan_read_txn(req)?)
    }

    /// Reads the rows of `plan` from the store: on the thread that owns it, before it writes
    /// again.
    ///
    /// # Errors
    /// A storage error.
    pub fn finish_read_txn(&self, plan: TxnPlan) -> Result<TxnResponse> {
        plan.finish(|rev| self.read_kv(rev))
    }

    /// A cursor for the branch of `t` that `path` selected; returns it and how many path
    /// entries it used (the read-only counterpart of [`Self::exec_txn`]).
    fn cursor_branch(&self, t: TxnRequest, path: &[bool]) -> Result<(CursorTxn, usize)> {
        let succeeded = path.first().copied().unwrap_or(false);
        let mut used = 1;
        let mut ops = Vec::new();
        for op in if succeeded { t.success } else { t.failure } {
            ops.push(match op {
                RequestOp::Range(r) => CursorOp::Range(self.range_cursor(r)?),
                RequestOp::Txn(nested) => {
                    let (cursor, n) = self.cursor_branch(nested, path.get(used..).unwrap_or(&[]))?;
                    used += n;
                    CursorOp::Txn(cursor)
                }
                RequestOp::Empty => return Err(Error::KeyNotFound),
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => {
                    return Err(Error::Internal("a txn that writes was planned as a read".into()))
                }
            });
        }
        Ok((CursorTxn { succeeded, ops }, used))
    }

    /// Walks the ranges of `t` not walked to their end yet, in order, while `budget` (keys of
    /// the index) lasts; returns whether every one is complete.
    fn walk_txn(&self, t: &mut CursorTxn, budget: &mut usize) -> Result<bool> {
        for op in &mut t.ops {
            match op {
                CursorOp::Txn(nested) => {
                    if !self.walk_txn(nested, budget)? {
                        return Ok(false);
                    }
                }
                CursorOp::Range(cursor) if !cursor.is_done() => {
                    if *budget == 0 {
                        return Ok(false);
                    }
                    *budget = budget.saturating_sub(self.walk_range(cursor, *budget)?);
                    if !cursor.is_done() {
                        return Ok(false);
                    }
                }
                // A range walked already is still checked: its rows must stay readable too.
                CursorOp::Range(cursor) => self.check_cursor(cursor)?,
            }
        }
        Ok(true)
    }

    /// `api_checks` applies the API layer's duplicate-key rule.
    pub(super) fn apply_txn(&mut self, t: TxnRequest, api_checks: bool) -> Result<Committed<TxnResponse>> {
        if t.writes() {
            // A txn that only reads is a read, which no alarm refuses (etcd `v3_server.go`
            // `Txn` serves it outside the capped and corrupt appliers).
            self.admit(Gate::Txn(&t))?;
        }
        self.apply_write(
            t,
            |store, t| {
                if api_checks {
                    check_txn(t, store.config.max_txn_ops())?;
                } else {
                    check_txn_shape(t, store.config.max_txn_ops())?;
                }
                let path = store.compare_path(t)?;
                store.check_txn_refs(t, &path, &mut 0, api_checks)?;
                Ok(path)
            },
            |store, w, t, path| store.exec_txn(w, t, path).map(|(resp, _)| resp),
            |r, rev| r.revision = rev,
        )
    }

    /// Checks the ops of the branches `path` selects, before any of them runs (etcd
    /// `checkRequests` with `checkRequestPut` and, at the API level, `checkRequestRange`).
    ///
    /// Deliberate difference: etcd's `checkRequestRange` compares a negative read revision with
    /// the compact revision (so `revision: -1` in a txn fails after any compaction) although a
    /// plain range treats every `revision <= 0` as "current"; we treat it as current in both.
    fn check_txn_refs(&self, t: &TxnRequest, path: &[bool], at: &mut usize, api_checks: bool) -> Result<()> {
        let succeeded = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        for op in if succeeded { &t.success } else { &t.failure } {
            match op {
                RequestOp::Put(p) => self.check_put_refs(p)?,
                RequestOp::Range(r) if r.revision > 0 => {
                    // The MVCC layer lets a read name the txn's own revision, readable once the
                    // txn has changed something (known only when it runs, see `apply`).
                    // `read_rev` is the current revision but on a poisoned store, which refuses
                    // writes before they get here.
                    let current_rev = self.read_rev();
                    let newest = if api_checks { current_rev } else { current_rev + 1 };
                    if r.revision > newest {
                        return Err(Error::FutureRev { requested: r.revision, current_rev });
                    }
                    if r.revision < self.compact_rev {
                        return Err(Error::Compacted { requested: r.revision, compact_rev: self.compact_rev });
                    }
                }
                RequestOp::Txn(nested) => self.check_txn_refs(nested, path, at, api_checks)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Evaluates every compare of a txn and of the nested txns it will run, against the state
    /// before the txn, in execution order (etcd `compareToPath`).
    fn compare_path(&self, t: &TxnRequest) -> Result<Vec<bool>> {
        let mut path = Vec::new();
        self.compare_path_into(t, &mut path)?;
        Ok(path)
    }

    fn compare_path_into(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare_holds(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(nested) = op {
                self.compare_path_into(nested, path)?;
            }
        }
        Ok(())
    }

    /// etcd `applyCompare`: every key of the range must satisfy the compare; a missing key
    /// compares as a zero key-value, except that a value compare on no key always fails.
    fn compare_holds(&self, c: &Compare) -> Result<bool> {
        let mut found = Vec::new();
        self.index.range_at(&c.range, self.read_rev(), |(_, v)| {
            found.push(v);
            true
        });
        if found.is_empty() {
            return Ok(!matches!(c.target, CompareTarget::Value(_)) && compare_kv(c, &KeyValue::default()));
        }
        for v in found {
            let kv = if matches!(c.target, CompareTarget::Value(_) | CompareTarget::Lease(_)) {
                self.read_kv(v.modified)?
            } else {
                KeyValue {
                    create_revision: v.created.main,
                    mod_revision: v.modified.main,
                    version: v.version,
                    ..KeyValue::default()
                }
            };
            if !compare_kv(c, &kv) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs the branch of `t` that `path` selected; returns its response and how many path
    /// entries it used (etcd `executeTxn`).
    fn exec_txn(&mut self, w: &mut WriteTxn, t: TxnRequest, path: &[bool]) -> Result<(TxnResponse, usize)> {
        let succeeded = path.first().copied().unwrap_or(false);
        let mut used = 1;
        let mut responses = Vec::new();
        for op in if succeeded { t.success } else { t.failure } {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range_view(&r, w.read_rev())?),
                RequestOp::Put(p) => ResponseOp::Put(self.exec_put(w, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.exec_delete(w, &d)?),
                RequestOp::Txn(nested) => {
                    let (resp, n) = self.exec_txn(w, nested, path.get(used..).unwrap_or(&[]))?;
                    used += n;
                    ResponseOp::Txn(resp)
                }
                RequestOp::Empty => return Err(Error::KeyNotFound),
            });
        }
        // etcd fills only the top-level header; nested txn responses carry revision 0.
        Ok((TxnResponse { revision: 0, succeeded, responses }, used))
    }
}

/// A txn that only reads being planned in parts ([`KvStore::start_read_txn`]): its revision,
/// its compares' outcomes, and a cursor for each range of the chosen branches.
#[derive(Debug)]
pub struct TxnCursor {
    revision: i64,
    root: CursorTxn,
}

impl TxnCursor {
    /// The revision the txn reads at (its header revision).
    #[must_use]
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

/// Where planning a read-only txn in parts stands ([`KvStore::continue_read_txn`]).
#[derive(Debug)]
pub enum TxnPlanning {
    /// More of the key index to walk.
    Partial(TxnCursor),
    /// Every walk is complete.
    Done(TxnPlan),
}

/// One txn of a [`TxnCursor`], nested ones included.
#[derive(Debug)]
struct CursorTxn {
    succeeded: bool,
    ops: Vec<CursorOp>,
}

/// One op of a chosen branch of a [`TxnCursor`].
#[derive(Debug)]
enum CursorOp {
    Range(RangeCursor<'static>),
    Txn(CursorTxn),
}

impl CursorTxn {
    /// The plan once every range's walk is complete.
    fn into_plan(self) -> PlannedTxn {
        let ops = self
            .ops
            .into_iter()
            .map(|op| match op {
                CursorOp::Range(cursor) => PlannedOp::Range(cursor.into_plan()),
                CursorOp::Txn(nested) => PlannedOp::Txn(nested.into_plan()),
            })
            .collect();
        PlannedTxn { succeeded: self.succeeded, ops }
    }
}

/// A txn that only reads, resolved against the key index ([`KvStore::plan_read_txn`]): its
/// compares' outcomes and the plan of each range of the chosen branches. As with a
/// [`RangePlan`], the rows stay readable for as long as a snapshot taken with the plan is held.
#[derive(Debug)]
pub struct TxnPlan {
    /// The store's revision when planned: the answer's header revision.
    revision: i64,
    root: PlannedTxn,
}

/// One txn of a [`TxnPlan`], nested ones included.
#[derive(Debug)]
struct PlannedTxn {
    succeeded: bool,
    ops: Vec<PlannedOp>,
}

/// One op of a chosen branch of a [`TxnPlan`].
#[derive(Debug)]
enum PlannedOp {
    Range(RangePlan),
    Txn(PlannedTxn),
}

impl TxnPlan {
    /// How many rows the answer reads, over every range of the txn.
    #[must_use]
    pub fn rows(&self) -> usize {
        fn rows_of(t: &PlannedTxn) -> usize {
            t.ops
                .iter()
                .map(|op| match op {
                    PlannedOp::Range(plan) => plan.rows(),
                    PlannedOp::Txn(nested) => rows_of(nested),
                })
                .sum()
        }
        rows_of(&self.root)
    }

    /// Reads the rows through `read` and makes the answer.
    ///
    /// # Errors
    /// What `read` returns.
    pub fn finish(self, mut read: impl FnMut(Revision) -> Result<KeyValue>) -> Result<TxnResponse> {
        self.answer(&mut |plan| plan.finish(&mut read))
    }

    /// Reads the rows from `snapshot`, on the terms of [`RangePlan::finish_from`].
    ///
    /// # Errors
    /// A storage error; `Internal` for a row the plan names that the snapshot lacks.
    pub fn finish_from(self, snapshot: &RevisionSnapshot) -> Result<TxnResponse> {
        self.answer(&mut |plan| plan.finish_from(snapshot))
    }

    fn answer(self, read: &mut dyn FnMut(RangePlan) -> Result<RangeResponse>) -> Result<TxnResponse> {
        // etcd fills only the top-level header; nested txn responses carry revision 0.
        answer_planned(self.root, self.revision, read)
    }
}

/// The response of one planned txn, its ranges' rows read through `read`.
fn answer_planned(
    t: PlannedTxn,
    revision: i64,
    read: &mut dyn FnMut(RangePlan) -> Result<RangeResponse>,
) -> Result<TxnResponse> {
    let responses = t
        .ops
        .into_iter()
        .map(|op| match op {
            PlannedOp::Range(plan) => read(plan).map(ResponseOp::Range),
            PlannedOp::Txn(nested) => answer_planned(nested, 0, read).map(ResponseOp::Txn),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TxnResponse { revision, succeeded: t.succeeded, responses })
}

/// etcd `compareKV`.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}
