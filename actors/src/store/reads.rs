//! Owns how the store answers a `Range` and a txn that only reads: the key index is walked on
//! the store's thread, a few thousand keys per turn, with writes and the thread's other tasks
//! between the turns, and the rows of a large answer are read from a snapshot on a
//! reader thread, so that writes go on meanwhile (etcd 3.4 reads concurrently with writes too:
//! `mvcc/kvstore_txn.go` `Read` with `ConcurrentReadTx`; its `treeIndex` walk holds the index's
//! lock for the whole range). Neither waits for the group commit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use tokio::sync::{oneshot, Semaphore};
use watchkv::backend::RevisionSnapshot;
use watchkv::{
    Error, KvStore, Planning, RangeCursor, RangePlan, RangeResponse, Result, TxnCursor, TxnPlan, TxnPlanning,
    TxnResponse,
};

use super::StoreActor;
use crate::protocol::{Range, ReadTxn};

/// Rows from which a range's rows are read off the store's thread. Below it reading them in
/// place (under 0.4 ms: `cargo bench --bench store -- range_10k` reads 10k in about 7 ms) costs
/// less than the hand-off; above it every row would hold up every write behind it.
pub(super) const OFF_THREAD_ROWS: usize = 512;

/// Ranges whose rows are read off the store's thread at once. A range beyond them is read on
/// the store's thread as before, which holds the store's mailbox and so its senders back:
/// readers cannot pile up answers in memory faster than the machine reads them.
pub(super) const RANGE_READERS: u32 = 4;

/// Keys of the index a read (a range, or all the ranges of a read-only txn) walks per turn of
/// the store: about 0.2 ms at 40 ns a key (a count of 200,000 keys takes 8 ms, `load
/// --scenario grpc-range --range-count-only`), so a write waits at most that long behind a
/// read however many keys it covers (a read-only txn's compares excepted: they run whole when
/// it arrives).
pub(super) const PLAN_KEYS_PER_TURN: usize = 4096;

/// Reads whose walk goes on over several turns at once. A read beyond them is walked whole in
/// its turn, as before, which holds the store's mailbox and so its senders back: clients
/// cannot park ever more half-walked reads (each holding the rows it found) at the store.
pub(super) const RANGES_IN_PLANNING: usize = 4;

/// The store's slots for reading ranges off its thread ([`RANGE_READERS`]).
pub(super) fn range_readers() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(RANGE_READERS as usize))
}

/// A read resolved against the key index whose rows are still to be read.
pub(super) trait ReadPlan: Send + 'static {
    /// The answer once the rows are read.
    type Answer: Send + 'static;
    /// Rows to read.
    fn rows(&self) -> usize;
    /// Reads the rows from the store, on its thread.
    fn finish_in(self, store: &KvStore) -> Result<Self::Answer>;
    /// Reads the rows from a snapshot taken with the plan.
    fn finish_from(self, snapshot: &RevisionSnapshot) -> Result<Self::Answer>;
}

impl ReadPlan for RangePlan {
    type Answer = RangeResponse;

    fn rows(&self) -> usize {
        RangePlan::rows(self)
    }

    fn finish_in(self, store: &KvStore) -> Result<RangeResponse> {
        store.finish_range(self)
    }

    fn finish_from(self, snapshot: &RevisionSnapshot) -> Result<RangeResponse> {
        RangePlan::finish_from(self, snapshot)
    }
}

impl ReadPlan for TxnPlan {
    type Answer = TxnResponse;

    fn rows(&self) -> usize {
        TxnPlan::rows(self)
    }

    fn finish_in(self, store: &KvStore) -> Result<TxnResponse> {
        store.finish_read_txn(self)
    }

    fn finish_from(self, snapshot: &RevisionSnapshot) -> Result<TxnResponse> {
        TxnPlan::finish_from(self, snapshot)
    }
}

/// A read's answer: made on the store's thread, or coming later (from a reader thread, or
/// once a range's walk of the key index is done).
pub enum ReadAnswer<T> {
    /// Answered in place.
    Now(Result<T>),
    /// Answered later.
    Later(Pin<Box<dyn Future<Output = Result<T>>>>),
}

impl<T, M> MessageResponse<StoreActor, M> for ReadAnswer<T>
where
    T: Send + 'static,
    M: Message<Result = Result<T>> + 'static,
{
    fn handle(self, _: &mut Context<StoreActor>, tx: Option<OneshotSender<Result<T>>>) {
        match self {
            Self::Now(answer) => {
                if let Some(tx) = tx {
                    let _ = tx.send(answer);
                }
            }
            Self::Later(answer) => {
                let Some(mut tx) = tx else { return };
                actix_rt::spawn(async move {
                    // A caller that goes away drops the answer's future: a range still walking
                    // the index sees its channel closed and stops (`plan_part`).
                    tokio::select! {
                        answer = answer => {
                            let _ = tx.send(answer);
                        }
                        () = tx.closed() => {}
                    }
                });
            }
        }
    }
}

/// A read planned over several turns of the store: a range's cursor or a read-only txn's.
pub(super) trait PlanCursor: Sized + Send + 'static {
    /// The plan once the walk is complete.
    type Plan: ReadPlan;
    /// Walks at most `keys` more keys of the key index.
    fn walk(self, store: &KvStore, keys: usize) -> Result<Walk<Self, Self::Plan>>;
}

/// Where a [`PlanCursor`]'s walk stands.
pub(super) enum Walk<C, P> {
    /// More of the key index to walk.
    Partial(C),
    /// The walk is complete.
    Done(P),
}

impl PlanCursor for RangeCursor<'static> {
    type Plan = RangePlan;

    fn walk(self, store: &KvStore, keys: usize) -> Result<Walk<Self, RangePlan>> {
        Ok(match store.continue_range(self, keys)? {
            Planning::Partial(cursor) => Walk::Partial(cursor),
            Planning::Done(plan) => Walk::Done(plan),
        })
    }
}

impl PlanCursor for TxnCursor {
    type Plan = TxnPlan;

    fn walk(self, store: &KvStore, keys: usize) -> Result<Walk<Self, TxnPlan>> {
        Ok(match store.continue_read_txn(self, keys)? {
            TxnPlanning::Partial(cursor) => Walk::Partial(cursor),
            TxnPlanning::Done(plan) => Walk::Done(plan),
        })
    }
}

/// A read in planning, whatever its kind: the store walks its next part.
pub(super) trait InPlanning {
    /// Walks up to `keys` more keys; answers the read when its walk is done, else puts it
    /// back at the end of the line. A read whose caller went away is dropped.
    fn plan_part(self: Box<Self>, store: &mut StoreActor, keys: usize);
}

/// A read whose walk of the key index goes on over several turns of the store.
struct ReadInPlanning<C: PlanCursor> {
    cursor: C,
    /// Taken when the read started, so it holds every row at the cursor's revision.
    snapshot: RevisionSnapshot,
    answer: oneshot::Sender<Result<<C::Plan as ReadPlan>::Answer>>,
}

impl<C: PlanCursor> InPlanning for ReadInPlanning<C> {
    fn plan_part(self: Box<Self>, act: &mut StoreActor, keys: usize) {
        let Self { cursor, snapshot, answer } = *self;
        if answer.is_closed() {
            return;
        }
        match act.store().and_then(|store| cursor.walk(store, keys)) {
            Ok(Walk::Partial(cursor)) => act.planning.push_back(Box::new(Self { cursor, snapshot, answer })),
            Ok(Walk::Done(plan)) => match act.read_rows(plan, Some(snapshot)) {
                ReadAnswer::Now(result) => {
                    let _ = answer.send(result);
                }
                ReadAnswer::Later(result) => {
                    actix_rt::spawn(async move {
                        let _ = answer.send(result.await);
                    });
                }
            },
            Err(e) => {
                let _ = answer.send(Err(e));
            }
        }
    }
}

impl Handler<Range> for StoreActor {
    type Result = ReadAnswer<RangeResponse>;

    fn handle(&mut self, msg: Range, ctx: &mut Self::Context) -> Self::Result {
        let req = msg.0;
        self.read_in_parts(ctx, |store| store.start_range(&req))
    }
}

impl Handler<ReadTxn> for StoreActor {
    type Result = ReadAnswer<TxnResponse>;

    /// Plans the txn at the read revision, its ranges' walks in parts as a range's, then reads
    /// its rows as a range's are. Writes queued for the group commit are not in it, and it
    /// does not wait for their persist: none of them has been answered yet.
    fn handle(&mut self, msg: ReadTxn, ctx: &mut Self::Context) -> Self::Result {
        self.read_txns += 1;
        self.read_in_parts(ctx, |store| store.start_read_txn(msg.0))
    }
}

impl StoreActor {
    /// Starts a read (`start`) and walks the first [`PLAN_KEYS_PER_TURN`] keys of the key index
    /// for it (all of them if [`RANGES_IN_PLANNING`] reads are in planning already). If that
    /// is the whole walk, reads its rows here if they are few or every reader is busy, else
    /// from a snapshot taken now (before any later write or compaction) on a reader thread.
    /// Otherwise the walk goes on in later turns ([`Self::schedule_planning`]), after the
    /// messages queued meanwhile.
    fn read_in_parts<C: PlanCursor>(
        &mut self,
        ctx: &mut Context<Self>,
        start: impl FnOnce(&KvStore) -> Result<C>,
    ) -> ReadAnswer<<C::Plan as ReadPlan>::Answer> {
        let keys = if self.planning.len() < RANGES_IN_PLANNING { PLAN_KEYS_PER_TURN } else { usize::MAX };
        let store = match self.store() {
            Ok(store) => store,
            Err(e) => return ReadAnswer::Now(Err(e)),
        };
        match start(store).and_then(|cursor| cursor.walk(store, keys)) {
            Err(e) => ReadAnswer::Now(Err(e)),
            Ok(Walk::Done(plan)) => self.read_rows(plan, None),
            Ok(Walk::Partial(cursor)) => {
                let snapshot = store.reader().snapshot();
                let (answer, answered) = oneshot::channel();
                self.planning.push_back(Box::new(ReadInPlanning { cursor, snapshot, answer }));
                self.ranges_planned_in_parts += 1;
                self.schedule_planning(ctx);
                ReadAnswer::Later(Box::pin(async move { answered.await.unwrap_or(Err(Error::Stopped)) }))
            }
        }
    }

    /// While reads are in planning, walks the next part of the oldest once the store's thread
    /// has run everything else that is ready: the messages queued meanwhile (writes commit
    /// between the parts), and the thread's other tasks and timers (answers read off the
    /// thread, lease ticks). A part sent to self with `notify` would let the mailbox through
    /// but keep the actor's task from yielding, so those would wait for every walk to end.
    fn schedule_planning(&mut self, ctx: &mut Context<Self>) {
        if self.plan_scheduled || self.planning.is_empty() {
            return;
        }
        self.plan_scheduled = true;
        ctx.spawn(actix::fut::wrap_future::<_, Self>(tokio::task::yield_now()).map(|(), act, ctx| {
            act.plan_scheduled = false;
            if let Some(read) = act.planning.pop_front() {
                read.plan_part(act, PLAN_KEYS_PER_TURN);
            }
            act.schedule_planning(ctx);
        }));
    }

    /// Walks every read in planning to its end now. Called before the store compacts or its
    /// key index is rebuilt (a re-import, a reopen, shutdown), which a walk must not span.
    pub(super) fn finish_planning(&mut self) {
        while let Some(read) = self.planning.pop_front() {
            read.plan_part(self, usize::MAX);
        }
    }

    /// Reads the rows of `plan`: here if they are few or every reader is busy, else on a reader
    /// thread, from `snapshot` (or one taken now, before any later write or compaction).
    fn read_rows<P: ReadPlan>(&mut self, plan: P, snapshot: Option<RevisionSnapshot>) -> ReadAnswer<P::Answer> {
        let reader =
            if plan.rows() < OFF_THREAD_ROWS { None } else { Arc::clone(&self.range_readers).try_acquire_owned().ok() };
        let store = match self.store() {
            Ok(store) => store,
            Err(e) => return ReadAnswer::Now(Err(e)),
        };
        let Some(reader) = reader else {
            return ReadAnswer::Now(match &snapshot {
                Some(snapshot) => plan.finish_from(snapshot),
                None => plan.finish_in(store),
            });
        };
        let snapshot = snapshot.unwrap_or_else(|| store.reader().snapshot());
        self.ranges_read_off_thread += 1;
        ReadAnswer::Later(Box::pin(async move {
            let read = actix_rt::task::spawn_blocking(move || {
                let answer = plan.finish_from(&snapshot);
                // The snapshot holds database handles: let it go before the slot, which a
                // recovery waits for before it reopens the database.
                drop(snapshot);
                drop(reader);
                answer
            });
            read.await.map_err(|e| Error::Internal(format!("a range reader thread failed: {e}")))?
        }))
    }
}
