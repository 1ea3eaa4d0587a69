//! Owns the writes a client-port thread submits in one turn of its runtime: gathered in the
//! thread's outbox and sent to the store as one [`SubmitWrites`], so that a burst of requests
//! read from a connection joins one group commit.
//!
//! Why: a connection's requests arrive in bursts (a client answers a burst of responses, then
//! writes the next burst of requests), and the client-port thread runs the burst's handlers one
//! after the other. Sent one by one, the first write woke the store, which committed it alone
//! and blocked in its `fdatasync` while the handlers queued the rest: every burst cost two
//! syncs in a row where one would do (`perf record -e syscalls:...` over the 64-client put
//! load: a commit of 1 put, then one of 63). The outbox is sent by a task spawned behind the
//! handlers already queued on the thread, so it leaves once they have all run.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};

use actix::dev::SendError;
use actix::Addr;
use tokio::runtime::Id as RuntimeId;

use crate::protocol::SubmitWrites;
use crate::reply_route::this_threads_runtime;
use crate::store::{PendingWrite, StoreActor};

/// Writes queued on this thread for one store, not yet sent. Each has a writer waiting for its
/// answer, so the outbox holds at most one write per waiting task of this thread.
struct Outbox {
    runtime: RuntimeId,
    store: Addr<StoreActor>,
    queued: Arc<Mutex<Queued>>,
}

/// An outbox's writes, shared with its sender task. The task normally runs on the thread that
/// queued them; on a thread that only entered the runtime (a `spawn_blocking` thread, one that
/// called `Handle::enter`) it runs on the runtime's own thread, and the writes still reach it.
#[derive(Default)]
struct Queued {
    writes: Vec<Box<dyn PendingWrite>>,
    /// The sender task has found the outbox empty and ended: the next write needs a new one.
    closed: bool,
}

thread_local! {
    /// This thread's outboxes, one per runtime and store with writes on their way (a thread
    /// may run several runtimes one after the other, and a process several stores).
    static OUTBOXES: RefCell<Vec<Outbox>> = const { RefCell::new(Vec::new()) };
}

/// Queues `write` in this thread's outbox for `store` and returns `None`, when this thread is
/// in a single-threaded tokio runtime (an actix arbiter is one); otherwise hands `write` back
/// for the caller to send itself.
pub(crate) fn queue(store: &Addr<StoreActor>, write: Box<dyn PendingWrite>) -> Option<Box<dyn PendingWrite>> {
    let Some(runtime) = this_threads_runtime() else {
        return Some(write);
    };
    let id = runtime.id();
    OUTBOXES.with(|outboxes| {
        let mut outboxes = outboxes.borrow_mut();
        let mut write = Some(write);
        if let Some(outbox) = outboxes.iter().find(|o| o.runtime == id && o.store == *store) {
            let mut queued = outbox.queued.lock().unwrap_or_else(PoisonError::into_inner);
            if !queued.closed {
                queued.writes.extend(write.take());
            }
        }
        let Some(write) = write else { return };
        // No outbox, or its sender has ended: a new one, with a new sender.
        outboxes.retain(|o| !(o.runtime == id && o.store == *store));
        let queued = Arc::new(Mutex::new(Queued { writes: vec![write], closed: false }));
        outboxes.push(Outbox { runtime: id, store: store.clone(), queued: Arc::clone(&queued) });
        // Spawned now, it runs after every task already queued on the runtime: the rest of the
        // burst's handlers add their writes first.
        runtime.spawn(send(queued, store.clone()));
    });
    None
}

/// Sends `queued` until it stays empty, then closes it. One such task per outbox, so batches
/// reach the store in the order they were queued; a full mailbox parks it briefly while later
/// writes gather behind (actix 0.13 lets the next send through a fresh address clone, so the
/// writers waiting for their answers, not the mailbox, bound what is queued).
async fn send(queued: Arc<Mutex<Queued>>, store: Addr<StoreActor>) {
    loop {
        let writes = {
            let mut inner = queued.lock().unwrap_or_else(PoisonError::into_inner);
            if inner.writes.is_empty() {
                inner.closed = true;
                drop(inner);
                // On the thread that queued the writes (the usual case), the outbox goes with
                // its store's address; elsewhere the next write there replaces it.
                OUTBOXES.with(|outboxes| outboxes.borrow_mut().retain(|o| !Arc::ptr_eq(&o.queued, &queued)));
                return;
            }
            std::mem::take(&mut inner.writes)
        };
        match store.try_send(SubmitWrites(writes)) {
            Ok(()) => {}
            // Refused writes are dropped with the message: their writers hear `Stopped`.
            Err(SendError::Full(batch)) => {
                let _ = store.send(batch).await;
            }
            Err(SendError::Closed(_)) => {}
        }
    }
}
