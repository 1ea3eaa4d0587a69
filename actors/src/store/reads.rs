//! Owns how the store answers a `Range`: the key index is read on the store's thread, and the
//! rows of a large answer are read from a snapshot on a reader thread, so that writes go on
//! meanwhile (etcd 3.4 reads concurrently with writes too: `mvcc/kvstore_txn.go` `Read` with
//! `ConcurrentReadTx`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use tokio::sync::Semaphore;
use watchkv::{Error, RangeRequest, RangeResponse, Result};

use super::StoreActor;
use crate::protocol::Range;

/// Rows from which a range's rows are read off the store's thread. Below it reading them in
/// place (under 0.4 ms: `cargo bench --bench store -- range_10k` reads 10k in about 7 ms) costs
/// less than the hand-off; above it every row would hold up every write behind it.
pub(super) const OFF_THREAD_ROWS: usize = 512;

/// Ranges whose rows are read off the store's thread at once. A range beyond them is read on
/// the store's thread as before, which holds the store's mailbox and so its senders back:
/// readers cannot pile up answers in memory faster than the machine reads them.
pub(super) const RANGE_READERS: u32 = 4;

/// The store's slots for reading ranges off its thread ([`RANGE_READERS`]).
pub(super) fn range_readers() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(RANGE_READERS as usize))
}

/// A range's answer: made on the store's thread, or coming from a reader thread.
pub enum RangeAnswer {
    /// Answered in place.
    Now(Result<RangeResponse>),
    /// Read from a snapshot on a reader thread.
    Later(Pin<Box<dyn Future<Output = Result<RangeResponse>>>>),
}

impl MessageResponse<StoreActor, Range> for RangeAnswer {
    fn handle(self, _: &mut Context<StoreActor>, tx: Option<OneshotSender<Result<RangeResponse>>>) {
        match self {
            Self::Now(answer) => {
                if let Some(tx) = tx {
                    let _ = tx.send(answer);
                }
            }
            Self::Later(answer) => {
                actix_rt::spawn(async move {
                    let answer = answer.await;
                    if let Some(tx) = tx {
                        let _ = tx.send(answer);
                    }
                });
            }
        }
    }
}

impl Handler<Range> for StoreActor {
    type Result = RangeAnswer;

    fn handle(&mut self, msg: Range, _: &mut Self::Context) -> Self::Result {
        self.range(&msg.0)
    }
}

impl StoreActor {
    /// Plans `req` on the key index; reads its rows here if they are few or every reader is
    /// busy, else from a snapshot taken now (before any later write or compaction) on a reader
    /// thread.
    fn range(&mut self, req: &RangeRequest) -> RangeAnswer {
        let plan = match self.store().and_then(|store| store.plan_range(req)) {
            Ok(plan) => plan,
            Err(e) => return RangeAnswer::Now(Err(e)),
        };
        let reader =
            if plan.rows() < OFF_THREAD_ROWS { None } else { Arc::clone(&self.range_readers).try_acquire_owned().ok() };
        let store = match self.store() {
            Ok(store) => store,
            Err(e) => return RangeAnswer::Now(Err(e)),
        };
        let Some(reader) = reader else {
            return RangeAnswer::Now(store.finish_range(plan));
        };
        let snapshot = store.reader().snapshot();
        self.ranges_read_off_thread += 1;
        RangeAnswer::Later(Box::pin(async move {
            let read = actix_rt::task::spawn_blocking(move || {
                let answer = plan.finish_from(&snapshot);
                drop(reader);
                answer
            });
            read.await.map_err(|e| Error::Internal(format!("a range reader thread failed: {e}")))?
        }))
    }
}
