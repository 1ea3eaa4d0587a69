//! Scenario grpc-lock: many clients queued on one lock, as a job queue or a leader hand-off
//! has them. Over gRPC with `etcd-client` (`--grpc-connections` connections, the waiters dealt
//! over them round robin): a holder takes the lock `/lockload`; then `--lock-waiters` waiters,
//! each with a lease of its own (a client's session), call `Lock` at once and queue behind it
//! (QUEUE, until every waiter's key exists); then the holder unlocks and each waiter, once it
//! holds the lock, unlocks at once (HAND-OFF, until the last one unlocked). The server runs the
//! waiting in both (etcd's v3lock service over client/v3/concurrency `mutex.go`).
//!
//! Checked: every waiter acquires once, in the order their keys were created (the queue's
//! order, read back by create revision before the hand-off), and never two at a time: in that
//! order each `Lock` answer's revision is at least the revision of the `Unlock` before it (a
//! lock is answered at or after the deletion it waited for, so an acquisition before the
//! previous holder's unlock is counted as an overlap).

use std::cell::{Cell as StdCell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, LockOptions, SortOrder, SortTarget};

use crate::args::Args;
use crate::grpc_fanout::connect_clients;
use crate::sampling::{Cpu, CpuSpan, Perf};
use crate::server::Server;

/// The lock's name; its waiters' keys are `NAME/<lease in hex>`.
const NAME: &str = "/lockload";

/// The lease TTL of the holder and the waiters: longer than any run, so that no key expires.
const LEASE_TTL: i64 = 600;

/// grpc-lock's results.
#[derive(Debug, Default, Clone)]
pub struct LockRun {
    pub waiters: usize,
    /// From the first waiter's `Lock` until every waiter's key exists.
    pub queue_secs: f64,
    /// From the holder's `Unlock` until the last waiter unlocked.
    pub handoff_secs: f64,
    /// Waiters that acquired (and then unlocked).
    pub acquired: u64,
    /// Acquisitions answered at a revision before the previous holder's unlock.
    pub overlaps: u64,
    /// Whether the waiters acquired in the order their keys were created.
    pub in_order: bool,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The server's CPU during QUEUE and during HAND-OFF.
    pub cpu_queue: Cpu,
    pub cpu_handoff: Cpu,
    pub peak_rss_kb: Option<u64>,
}

impl LockRun {
    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{what}: {e}"));
    }
}

/// One waiter's turn: its key and the header revisions of its `Lock` and `Unlock` answers.
struct Turn {
    key: Vec<u8>,
    locked: i64,
    unlocked: i64,
}

/// What the waiters' tasks share (they all run on this thread).
#[derive(Default)]
struct Queue {
    turns: RefCell<Vec<Turn>>,
    unlocked: StdCell<usize>,
    errors: StdCell<u64>,
    first_error: RefCell<Option<String>>,
}

impl Queue {
    fn fail(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.set(self.errors.get() + 1);
        self.first_error.borrow_mut().get_or_insert_with(|| format!("{what}: {e}"));
    }
}

/// Grants one lease per waiter (and one for the holder) on the first connection.
async fn grant_leases(client: &Client, n: usize) -> Result<Vec<i64>, String> {
    let mut lease = client.lease_client();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(lease.grant(LEASE_TTL, None).await.map_err(|e| format!("lease grant: {e}"))?.id());
    }
    Ok(ids)
}

/// The keys under the lock's prefix, by create revision.
async fn queued_keys(client: &Client) -> Result<Vec<Vec<u8>>, String> {
    let opts = GetOptions::new().with_prefix().with_keys_only().with_sort(SortTarget::Create, SortOrder::Ascend);
    let resp = client.kv_client().get(format!("{NAME}/"), Some(opts)).await.map_err(|e| format!("range: {e}"))?;
    Ok(resp.kvs().iter().map(|kv| kv.key().to_vec()).collect())
}

/// Waits until `done` holds, polling every 2 ms, until `deadline`.
async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

pub async fn scenario_lock(args: &Args, server: &Server, tck: f64) -> LockRun {
    let n = args.lock_waiters;
    let mut out = LockRun { waiters: n, ..LockRun::default() };
    let clients = match connect_clients(&server.base, args.grpc_connections.max(1)).await {
        Ok(c) => c,
        Err(e) => {
            out.fail("connect", e);
            return out;
        }
    };
    let leases = match grant_leases(&clients[0], n + 1).await {
        Ok(l) => l,
        Err(e) => {
            out.fail("setup", e);
            return out;
        }
    };
    let holder = match clients[0].lock_client().lock(NAME, Some(LockOptions::new().with_lease(leases[0]))).await {
        Ok(resp) => resp.key().to_vec(),
        Err(e) => {
            out.fail("holder's lock", e);
            return out;
        }
    };

    let perf = Perf::start(args, server, "grpc-lock");
    let queue = Rc::new(Queue::default());
    let span = CpuSpan::start(server.pid);
    let t0 = Instant::now();
    for (i, &lease) in leases[1..].iter().enumerate() {
        let mut lock = clients[i % clients.len()].lock_client();
        let queue = queue.clone();
        actix_rt::spawn(async move {
            let (key, locked) = match lock.lock(NAME, Some(LockOptions::new().with_lease(lease))).await {
                Ok(resp) => (resp.key().to_vec(), resp.header().map_or(0, |h| h.revision())),
                Err(e) => return queue.fail("lock", e),
            };
            match lock.unlock(key.clone()).await {
                Ok(resp) => {
                    let unlocked = resp.header().map_or(0, |h| h.revision());
                    queue.turns.borrow_mut().push(Turn { key, locked, unlocked });
                    queue.unlocked.set(queue.unlocked.get() + 1);
                }
                Err(e) => queue.fail("unlock", e),
            }
        });
    }
    let deadline = t0 + Duration::from_secs(args.drain_timeout_secs);
    let mut queued = Vec::new();
    loop {
        match queued_keys(&clients[0]).await {
            Ok(keys) if keys.len() > n => {
                queued = keys;
                break;
            }
            Ok(_) if queue.errors.get() == 0 && Instant::now() < deadline => {}
            Ok(keys) => {
                out.fail("queue", format!("{} of {} waiters queued", keys.len().saturating_sub(1), n));
                break;
            }
            Err(e) => {
                out.fail("queue", e);
                break;
            }
        }
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    out.queue_secs = t0.elapsed().as_secs_f64();
    out.cpu_queue = span.end(tck);

    if out.errors == 0 {
        let span = CpuSpan::start(server.pid);
        let t1 = Instant::now();
        match clients[0].lock_client().unlock(holder).await {
            Ok(_) => {
                let deadline = t1 + Duration::from_secs(args.drain_timeout_secs);
                if !wait_until(deadline, || queue.unlocked.get() + queue.errors.get() as usize >= n).await {
                    out.fail("hand-off", format!("{} of {} waiters done at the time limit", queue.unlocked.get(), n));
                }
            }
            Err(e) => out.fail("holder's unlock", e),
        }
        out.handoff_secs = t1.elapsed().as_secs_f64();
        out.cpu_handoff = span.end(tck);
    }
    drop(perf);

    // In the order the waiters acquired (their answers may reach this thread in another).
    let mut turns = queue.turns.take();
    turns.sort_by_key(|t| t.locked);
    out.acquired = turns.len() as u64;
    out.overlaps = turns.windows(2).filter(|pair| pair[1].locked < pair[0].unlocked).count() as u64;
    // The queue's order: the waiters' keys by create revision, after the holder's.
    out.in_order = queued.len() == n + 1 && turns.iter().map(|t| &t.key).eq(queued[1..].iter());
    out.errors += queue.errors.get();
    if out.first_error.is_none() {
        out.first_error = queue.first_error.borrow().clone();
    }
    out
}
