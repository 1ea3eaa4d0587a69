//! Owns how the store answers a `Range` and a txn that only reads: the key index is walked on
//! the store's thread (a range's walk a few thousand keys per turn, with writes and the thread's
//! other tasks between the turns), and the rows of a large answer are read from a snapshot on a
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
    Error, KvStore, Planning, RangeCursor, RangePlan, RangeRequest, RangeResponse, Result, TxnPlan, TxnResponse,
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

/// Keys of the index a range walks per turn of the store: about 0.2 ms at 40 ns a key (a count
/// of 200,000 keys takes 8 ms, `load --scenario grpc-range --range-count-only`), so a write
/// waits at most that long behind a range however many keys it covers.
pub(super) const PLAN_KEYS_PER_TURN: usize = 4096;

/// Ranges whose walk goes on over several turns at once. A range beyond them is walked whole
/// in its turn, as before, which holds the store's mailbox and so its senders back: clients
/// cannot park ever more half-walked ranges (each holding the rows it found) at the store.
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

/// A range whose walk of the key index goes on over several turns of the store.
pub(super) struct RangeInPlanning {
    cursor: RangeCursor<'static>,
    /// Taken when the range started, so it holds every row at the cursor's revision.
    snapshot: RevisionSnapshot,
    answer: oneshot::Sender<Result<RangeResponse>>,
}

impl Handler<Range> for StoreActor {
    type Result = ReadAnswer<RangeResponse>;

    fn handle(&mut self, msg: Range, ctx: &mut Self::Context) -> Self::Result {
        self.range(&msg.0, ctx)
    }
}

impl Handler<ReadTxn> for StoreActor {
    type Result = ReadAnswer<TxnResponse>;

    /// Plans the txn at the current revision in one go (a txn's ranges are not walked in
    /// parts), then reads its rows as a range's are ([`Self::read_rows`]). Writes queued for the
    /// group commit are not in it, and it does not wait for their persist: none of them has
    /// been answered yet.
    fn handle(&mut self, msg: ReadTxn, _: &mut Self::Context) -> Self::Result {
        match self.store().and_then(|store| store.plan_read_txn(&msg.0)) {
            Ok(plan) => {
                self.read_txns += 1;
                self.read_rows(plan, None)
            }
            Err(e) => ReadAnswer::Now(Err(e)),
        }
    }
}

impl StoreActor {
    /// Walks the first [`PLAN_KEYS_PER_TURN`] keys of `req` on the key index (all of them if
    /// [`RANGES_IN_PLANNING`] ranges are in planning already). If that is the
    /// whole range, reads its rows here if they are few or every reader is busy, else from a
    /// snapshot taken now (before any later write or compaction) on a reader thread. Otherwise
    /// the walk goes on in later turns ([`Self::schedule_planning`]), after the messages queued
    /// meanwhile.
    fn range(&mut self, req: &RangeRequest, ctx: &mut Context<Self>) -> ReadAnswer<RangeResponse> {
        let keys = if self.planning.len() < RANGES_IN_PLANNING { PLAN_KEYS_PER_TURN } else { usize::MAX };
        let store = match self.store() {
            Ok(store) => store,
            Err(e) => return ReadAnswer::Now(Err(e)),
        };
        let first = store.start_range(req).and_then(|cursor| store.continue_range(cursor, keys));
        match first {
            Err(e) => ReadAnswer::Now(Err(e)),
            Ok(Planning::Done(plan)) => self.read_rows(plan, None),
            Ok(Planning::Partial(cursor)) => {
                let snapshot = store.reader().snapshot();
                let (answer, answered) = oneshot::channel();
                self.planning.push_back(RangeInPlanning { cursor, snapshot, answer });
                self.ranges_planned_in_parts += 1;
                self.schedule_planning(ctx);
                ReadAnswer::Later(Box::pin(async move { answered.await.unwrap_or(Err(Error::Stopped)) }))
            }
        }
    }

    /// Walks up to `keys` more keys for `range`; answers it when its walk is done, else puts
    /// it back at the end of the line. A range whose caller went away is dropped.
    fn plan_part(&mut self, range: RangeInPlanning, keys: usize) {
        let RangeInPlanning { cursor, snapshot, answer } = range;
        if answer.is_closed() {
            return;
        }
        match self.store().and_then(|store| store.continue_range(cursor, keys)) {
            Ok(Planning::Partial(cursor)) => self.planning.push_back(RangeInPlanning { cursor, snapshot, answer }),
            Ok(Planning::Done(plan)) => match self.read_rows(plan, Some(snapshot)) {
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

    /// While ranges are in planning, walks the next part of the oldest once the store's thread
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
            if let Some(range) = act.planning.pop_front() {
                act.plan_part(range, PLAN_KEYS_PER_TURN);
            }
            act.schedule_planning(ctx);
        }));
    }

    /// Walks every range in planning to its end now. Called before the store compacts or its
    /// key index is rebuilt (a re-import, a reopen, shutdown), which a walk must not span.
    pub(super) fn finish_planning(&mut self) {
        while let Some(range) = self.planning.pop_front() {
            self.plan_part(range, usize::MAX);
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
