//! Owns the read path: ranges at a revision, as of the store or of a write in progress, with
//! etcd's filters, sort and limit (etcd `mvcc/kvstore_txn.go storeTxnRead.rangeKeys`,
//! `server/etcdserver/txn/txn.go executeRange`).

use std::borrow::Cow;

use super::KvStore;
use crate::backend::RevisionSnapshot;
use crate::codec;
use crate::error::{Error, Result};
use crate::index::{Index, Walked};
use crate::key_index::KeyVersion;
use crate::kv::KeyValue;
use crate::request::{check_range, RangeRequest, RangeResponse, SortOrder, SortTarget};
use crate::revision::Revision;

impl KvStore {
    /// Reads a key range (etcd `Range`, docs/etcd-semantics.md §1.4).
    ///
    /// # Errors
    /// `EmptyKey`, `FutureRev`, `Compacted`, or a storage error.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        self.finish_range(self.plan_range(req)?)
    }

    /// Resolves a key range against the key index at the current revision: which rows answer
    /// it, in order, and the count. Reading the rows is left to [`RangePlan::finish`] or
    /// [`RangePlan::finish_from`], so that a large answer can be read from a snapshot off the
    /// thread that owns the store (etcd 3.4 reads concurrently with writes too:
    /// `mvcc/kvstore_txn.go` `Read` with `ConcurrentReadTx`).
    ///
    /// # Errors
    /// `EmptyKey`, `FutureRev`, `Compacted`.
    pub fn plan_range(&self, req: &RangeRequest) -> Result<RangePlan> {
        self.check_index_whole()?;
        check_range(req)?;
        self.plan_view(req, self.read_rev())
    }

    /// Reads the rows of `plan` from the store: on the thread that owns it, before it writes
    /// again.
    ///
    /// # Errors
    /// A storage error.
    pub fn finish_range(&self, plan: RangePlan) -> Result<RangeResponse> {
        plan.finish(|rev| self.read_kv(rev))
    }

    /// Reads `req` as of a store at `view_rev` (inside a write, the rows of the current group
    /// are read back from the group).
    pub(super) fn range_view(&self, req: &RangeRequest, view_rev: i64) -> Result<RangeResponse> {
        self.plan_view(req, view_rev)?.finish(|rev| self.read_kv(rev))
    }

    /// Plans `req` as of a store at `view_rev`, in one walk of the key index.
    fn plan_view(&self, req: &RangeRequest, view_rev: i64) -> Result<RangePlan> {
        // In one part the cursor can borrow the request: no copy of its keys per range.
        let rev = self.check_read_rev(req.revision, view_rev)?;
        let cursor = RangeCursor::new(Cow::Borrowed(req), rev, view_rev, &self.index);
        match self.continue_range(cursor, usize::MAX)? {
            Planning::Done(plan) => Ok(plan),
            Planning::Partial(_) => Err(Error::Internal("an unbounded range walk stopped early".into())),
        }
    }

    /// Starts planning `req` at the current revision in parts ([`Self::continue_range`]), so
    /// that a range over very many keys need not hold its owner's thread for the whole walk of
    /// the key index. The revision read is fixed now: writes between the parts are not seen.
    ///
    /// # Errors
    /// `EmptyKey`, `FutureRev`, `Compacted`.
    pub fn start_range(&self, req: &RangeRequest) -> Result<RangeCursor<'static>> {
        self.check_index_whole()?;
        check_range(req)?;
        self.range_cursor(req.clone())
    }

    /// A cursor for `req` (already checked) at the read revision, which owns the request.
    pub(super) fn range_cursor(&self, req: RangeRequest) -> Result<RangeCursor<'static>> {
        let view_rev = self.read_rev();
        let rev = self.check_read_rev(req.revision, view_rev)?;
        Ok(RangeCursor::new(Cow::Owned(req), rev, view_rev, &self.index))
    }

    /// Walks at most `keys` more keys of the key index for `cursor`: the plan when the walk is
    /// complete, else the cursor to continue from.
    ///
    /// The revision filters and every sort but by value work on the key index, which holds each
    /// key's create and mod revisions and version, so only the rows returned are read: a
    /// `limit = 1` sort by create revision over N keys (the lock and election recipes' "who was
    /// first") reads one row, not N. etcd reads every key's value first (`rangeKeys` with no
    /// limit when sorting).
    ///
    /// # Errors
    /// `Compacted` if the store was compacted above the cursor's revision since it started (its
    /// answer could no longer be read whole); `Internal` if the key index was rebuilt since (a
    /// reopened or re-imported store).
    pub fn continue_range<'r>(&self, mut cursor: RangeCursor<'r>, keys: usize) -> Result<Planning<'r>> {
        self.walk_range(&mut cursor, keys)?;
        Ok(if cursor.done { Planning::Done(cursor.into_plan()) } else { Planning::Partial(cursor) })
    }

    /// Walks at most `keys` more keys of the key index for `cursor` (setting `done` at the end
    /// of its range); returns how many it walked. [`Self::continue_range`] explains the errors.
    pub(super) fn walk_range(&self, cursor: &mut RangeCursor<'_>, keys: usize) -> Result<usize> {
        self.check_cursor(cursor)?;
        let req = &cursor.req;
        let wanted = |v: &KeyVersion| {
            (req.min_mod_revision == 0 || v.modified.main >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || v.modified.main <= req.max_mod_revision)
                && (req.min_create_revision == 0 || v.created.main >= req.min_create_revision)
                && (req.max_create_revision == 0 || v.created.main <= req.max_create_revision)
        };
        let (keep, early) = (cursor.keep, !req.needs_all());
        let (found, count) = (&mut cursor.found, &mut cursor.count);
        let walked = self.index.walk_at(&req.range, cursor.after.as_deref(), cursor.rev, keys, |(_, v)| {
            // Keys are visited in key order, so a key's ordinal stands in for it in the sort.
            let ordinal = *count;
            *count += 1;
            // With no sort and no filter the index's key order is the answer's: stop keeping
            // rows once `keep` are found (the count still covers the whole range).
            if !req.count_only && (!early || found.len() < keep) && wanted(&v) {
                found.push((ordinal, v));
            }
        });
        match walked {
            Walked::After(key) => {
                cursor.after = Some(key.into());
                Ok(keys.max(1))
            }
            Walked::End(walked) => {
                cursor.done = true;
                Ok(walked)
            }
        }
    }

    /// Fails a cursor whose answer can no longer be made: the store was compacted above its
    /// revision (`Compacted`), or its key index was rebuilt (`Internal`).
    pub(super) fn check_cursor(&self, cursor: &RangeCursor<'_>) -> Result<()> {
        if cursor.index_id != self.index.id() {
            return Err(Error::Internal("a range was continued on a key index rebuilt since it started".into()));
        }
        if cursor.rev < self.compact_rev {
            return Err(Error::Compacted { requested: cursor.rev, compact_rev: self.compact_rev });
        }
        Ok(())
    }

    /// Applies docs/etcd-semantics.md §1.4 steps 1–3: the revision actually read for a requested
    /// `rev`.
    fn check_read_rev(&self, rev: i64, view_rev: i64) -> Result<i64> {
        if rev > view_rev {
            return Err(Error::FutureRev { requested: rev, current_rev: view_rev });
        }
        let rev = if rev <= 0 { view_rev } else { rev };
        if rev < self.compact_rev {
            return Err(Error::Compacted { requested: rev, compact_rev: self.compact_rev });
        }
        Ok(rev)
    }

    /// Reads the key-value stored in the put row at `rev`. A row of the current group that does
    /// not decode, or a row the index names that the backend lacks, is a broken invariant of
    /// this process, not damage on disk: `Internal` (the backend reports `Corrupt` itself for
    /// bytes read from disk that do not decode).
    pub(super) fn read_kv(&self, rev: Revision) -> Result<KeyValue> {
        if let Some(bytes) = self.group.row(rev) {
            return codec::decode_row(bytes)
                .map(|row| row.kv)
                .map_err(|reason| Error::Internal(format!("row {rev} of the write group does not decode: {reason}")));
        }
        match self.backend.get_row(rev.to_key(false))? {
            Some(row) => Ok(row.kv),
            None => Err(Error::Internal(format!("row {rev} named by the key index is missing"))),
        }
    }
}

/// A range being planned in parts ([`KvStore::start_range`]): its revision, how far its walk of
/// the key index got, and the rows found so far.
#[derive(Debug)]
pub struct RangeCursor<'r> {
    /// The request: borrowed when the range is planned in one part.
    req: Cow<'r, RangeRequest>,
    /// The revision read.
    rev: i64,
    /// The store's revision when the range started: the answer's header revision.
    view_rev: i64,
    /// The key index walked ([`Index::id`]).
    index_id: u64,
    /// The last key walked; the next part starts after it.
    after: Option<Box<[u8]>>,
    /// Rows past `limit` only tell `more`, so at most one is kept beyond it.
    keep: usize,
    /// The rows found so far, each with its key's ordinal in the range.
    found: Vec<(usize, KeyVersion)>,
    /// Keys of the range that exist at `rev`, so far.
    count: usize,
    /// Whether the walk reached the end of the range.
    done: bool,
}

impl<'r> RangeCursor<'r> {
    fn new(req: Cow<'r, RangeRequest>, rev: i64, view_rev: i64, index: &Index) -> Self {
        let keep = match usize::try_from(req.limit) {
            Ok(limit) if limit > 0 => limit.saturating_add(1),
            _ => usize::MAX,
        };
        Self { req, rev, view_rev, index_id: index.id(), after: None, keep, found: Vec::new(), count: 0, done: false }
    }

    /// The revision the range reads at.
    #[must_use]
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// Whether the walk reached the end of the range.
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// The plan from a complete walk.
    pub(super) fn into_plan(self) -> RangePlan {
        let Self { req, view_rev, keep, mut found, count, .. } = self;
        let value_order = if req.sort_target == SortTarget::Value {
            Some(req.sort_order)
        } else {
            sort_entries(&mut found, req.sort_order, req.sort_target, keep);
            None
        };
        RangePlan {
            revision: view_rev,
            rows: found.into_iter().map(|(_, v)| v.modified).collect(),
            value_order,
            limit: usize::try_from(req.limit).ok().filter(|&l| l > 0),
            keys_only: req.keys_only,
            count: i64::try_from(count).unwrap_or(i64::MAX),
        }
    }
}

/// Where planning a range in parts stands ([`KvStore::continue_range`]).
#[derive(Debug)]
pub enum Planning<'r> {
    /// More of the key index to walk.
    Partial(RangeCursor<'r>),
    /// The walk is complete.
    Done(RangePlan),
}

/// A range resolved against the key index ([`KvStore::plan_range`]): the rows that answer it,
/// in the answer's order, and what finishes the answer. The rows stay readable for as long as a
/// snapshot taken with the plan is held, whatever the store writes or compacts meanwhile.
#[derive(Debug)]
pub struct RangePlan {
    revision: i64,
    rows: Vec<Revision>,
    /// `Some` when the answer is sorted by value, which only the rows hold.
    value_order: Option<SortOrder>,
    limit: Option<usize>,
    keys_only: bool,
    count: i64,
}

impl RangePlan {
    /// How many rows the answer reads.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Reads the rows through `read` and makes the answer.
    ///
    /// # Errors
    /// What `read` returns.
    pub fn finish(self, read: impl FnMut(Revision) -> Result<KeyValue>) -> Result<RangeResponse> {
        let kvs = self.rows.iter().copied().map(read).collect::<Result<Vec<_>>>()?;
        Ok(self.answer(kvs))
    }

    /// Reads the rows from `snapshot`, which must have been taken (from
    /// [`KvStore::reader`]) with no write group open and before the store wrote or compacted
    /// anything after this plan was made.
    ///
    /// Rows that sit close together in revision order (a prefix written together, as a large
    /// listing usually is) are read by one scan of their stretch of history rather than a
    /// lookup each, when that passes at most four rows per row wanted.
    ///
    /// # Errors
    /// A storage error; `Internal` for a row the plan names that the snapshot lacks.
    pub fn finish_from(self, snapshot: &RevisionSnapshot) -> Result<RangeResponse> {
        let kvs = read_rows(&self.rows, snapshot)?;
        Ok(self.answer(kvs))
    }

    /// The answer from the plan's rows, read in its order.
    fn answer(self, mut kvs: Vec<KeyValue>) -> RangeResponse {
        if let Some(order) = self.value_order {
            sort_by_value(&mut kvs, order);
        }
        let mut more = false;
        if let Some(limit) = self.limit {
            if kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        if self.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        RangeResponse { revision: self.revision, kvs, more, count: self.count }
    }
}

/// Most history rows a snapshot read passes per row it wants before it looks each row up
/// instead ([`RangePlan::finish_from`]). A scan's step costs far less than a lookup, which
/// searches the memtable and every table that may hold the key.
const SCAN_ROWS_PER_ROW: usize = 4;

/// `revs` read from `snapshot`, in their order.
fn read_rows(revs: &[Revision], snapshot: &RevisionSnapshot) -> Result<Vec<KeyValue>> {
    let missing =
        |rev: Revision| Error::Internal(format!("row {rev} named by the key index is missing from the read snapshot"));
    let (Some(lo), Some(hi)) = (revs.iter().map(|r| r.main).min(), revs.iter().map(|r| r.main).max()) else {
        return Ok(Vec::new());
    };
    let span = usize::try_from(hi - lo).unwrap_or(usize::MAX).saturating_add(1);
    if span > revs.len().saturating_mul(SCAN_ROWS_PER_ROW) {
        return revs
            .iter()
            .map(|&rev| snapshot.get_row(rev.to_key(false))?.map(|row| row.kv).ok_or_else(|| missing(rev)))
            .collect();
    }
    // Positions in `revs`, in revision order; a put row's key sorts before its tombstone's.
    let mut order: Vec<usize> = (0..revs.len()).collect();
    order.sort_unstable_by_key(|&i| revs[i]);
    let mut kvs: Vec<Option<KeyValue>> = Vec::new();
    kvs.resize_with(revs.len(), || None);
    let mut next = 0;
    let mut gap = None;
    snapshot.scan(lo, hi + 1, |key, row| {
        let Some(&want) = order.get(next) else { return Ok(false) };
        if revs[want] < key.rev {
            // The scan passed a wanted row without finding it.
            gap = Some(revs[want]);
            return Ok(false);
        }
        if key == revs[want].to_key(false) {
            kvs[want] = Some(row.decode()?.kv);
            next += 1;
        }
        Ok(true)
    })?;
    if let Some(rev) = gap.or_else(|| order.get(next).map(|&i| revs[i])) {
        return Err(missing(rev));
    }
    kvs.into_iter().zip(revs).map(|(kv, &rev)| kv.ok_or_else(|| missing(rev))).collect()
}

/// The order etcd's `txn.go executeRange` sorts by: a non-key target without an order sorts
/// ascending; ascending by key is already the index's order (`None`: nothing to do).
fn effective_order(order: SortOrder, target: SortTarget) -> Option<SortOrder> {
    match (order, target) {
        (SortOrder::None | SortOrder::Ascend, SortTarget::Key) => None,
        (SortOrder::None, _) => Some(SortOrder::Ascend),
        (o, _) => Some(o),
    }
}

/// Keeps the first `keep` index entries (each with its key's ordinal in key order) in the order
/// of any target but the value, which the index lacks. Ties keep key order. With fewer to keep
/// than found (a `limit`), the kept ones are selected before they are sorted: O(n) for the
/// recipes' `limit = 1`.
fn sort_entries(entries: &mut Vec<(usize, KeyVersion)>, order: SortOrder, target: SortTarget, keep: usize) {
    let Some(order) = effective_order(order, target) else {
        entries.truncate(keep);
        return;
    };
    let by = |(key, v): &(usize, KeyVersion), (other_key, other): &(usize, KeyVersion)| {
        let ordering = match target {
            SortTarget::Key | SortTarget::Value => key.cmp(other_key),
            SortTarget::Version => v.version.cmp(&other.version),
            SortTarget::Create => v.created.main.cmp(&other.created.main),
            SortTarget::Mod => v.modified.main.cmp(&other.modified.main),
        };
        let ordering = if order == SortOrder::Descend { ordering.reverse() } else { ordering };
        // Keys are unique: with key order breaking ties, unstable sorts give the stable order.
        ordering.then_with(|| key.cmp(other_key))
    };
    if keep < entries.len() {
        entries.select_nth_unstable_by(keep, by);
        entries.truncate(keep);
    }
    entries.sort_unstable_by(by);
}

/// Sorts key-values (in key order) by value. Stable, so ties keep key order.
fn sort_by_value(kvs: &mut [KeyValue], order: SortOrder) {
    match effective_order(order, SortTarget::Value) {
        Some(SortOrder::Descend) => kvs.sort_by(|a, b| b.value.cmp(&a.value)),
        _ => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
}
