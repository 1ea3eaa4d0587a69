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
    writes: Vec<Box<dyn PendingWrite>>,
}

thread_local! {
    /// This thread's outboxes, one per runtime and store with writes on their way (a thread
    /// may run several runtimes one after the other, and a process several stores). An outbox
    /// exists exactly while its sender task is scheduled.
    static OUTBOXES: RefCell<Vec<Outbox>> = const { RefCell::new(Vec::new()) };
}

/// Queues `write` in this thread's outbox for `store` and returns `None`, when this thread runs
/// a single-threaded tokio runtime (an actix arbiter is one); otherwise hands `write` back for
/// the caller to send itself.
pub(crate) fn queue(store: &Addr<StoreActor>, write: Box<dyn PendingWrite>) -> Option<Box<dyn PendingWrite>> {
    let Some(runtime) = this_threads_runtime() else {
        return Some(write);
    };
    let id = runtime.id();
    OUTBOXES.with(|outboxes| {
        let mut outboxes = outboxes.borrow_mut();
        if let Some(outbox) = outboxes.iter_mut().find(|o| o.runtime == id && o.store == *store) {
            outbox.writes.push(write);
            return;
        }
        outboxes.push(Outbox { runtime: id, store: store.clone(), writes: vec![write] });
        // Spawned now, it runs after every task already queued on this thread: the rest of
        // the burst's handlers add their writes first.
        runtime.spawn(send(id, store.clone()));
    });
    None
}

/// Sends the outbox of (`runtime`, `store`) until it stays empty, then removes it. One such
/// task per outbox, so batches reach the store in the order they were queued; a full mailbox
/// makes it wait for room while later writes gather behind.
async fn send(runtime: RuntimeId, store: Addr<StoreActor>) {
    loop {
        let writes = OUTBOXES.with(|outboxes| {
            let mut outboxes = outboxes.borrow_mut();
            let at = outboxes.iter().position(|o| o.runtime == runtime && o.store == store)?;
            if outboxes[at].writes.is_empty() {
                outboxes.swap_remove(at);
                return None;
            }
            Some(std::mem::take(&mut outboxes[at].writes))
        });
        let Some(writes) = writes else {
            return;
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
