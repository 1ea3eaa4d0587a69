//! Randomized stress of the watch runtime, checked with the watch-guarantee checker
//! (`watchkv_actors::testing::checker`, etcd's `tests/robustness/validate/watch.go`).
//!
//! A system with tiny stream mailboxes and short periods; many streams with several watchers
//! each (single keys, prefixes, from-key, start revisions 0 / historical / compacted / future,
//! prev_kv, filters, fragments, periodic progress); readers that stop reading at random;
//! concurrent writers (puts, deletes, txns) on a small key set; compactions; leases attached
//! and expired; cancels, re-used ids, progress requests and stream closes. The run is bounded
//! by operation counts, not wall time. At the end every reader resumes, everything drains, each
//! live stream is fenced with a stream-wide progress at the final revision, and the checker runs
//! on every stream (closed ones too) against the history a never-slow watcher on all keys
//! recorded. That history is itself checked against what the writers were told and against a
//! final read.
//!
//! The seed is printed; rerun one with `WATCH_STRESS_SEED=<seed>`. One scenario with its
//! drivers, hence one file past the usual length; the checker's own tests are in `checker.rs`.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{RecordedStream, TestSystem, DEADLINE};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};
use watchkv::watch::response::INVALID_WATCH_ID;
use watchkv::watch::watcher::Filters;
use watchkv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, PutRequest, RangeRequest, RequestOp,
    ResponseOp, TxnRequest,
};
use watchkv_actors::protocol::{
    CancelWatch, CloseStream, CreateWatch, GetStreamStats, LeaseTick, RequestStreamProgress,
};
use watchkv_actors::testing::checker::{self, End};
use watchkv_actors::testing::History;
use watchkv_actors::{Handle, SlowConsumerPolicy, WatchCreate};

/// Keys the writers touch.
const KEYS: &[&str] = &["a/0", "a/1", "a/2", "a/3", "b/0", "b/1", "b/2", "c", "d/0", "d/1"];
/// Keys the lease task attaches to leases (besides some of `KEYS`).
const LEASE_KEYS: &[&str] = &["l/0", "l/1", "l/2"];
/// Streams kept open (closed ones are replaced).
const STREAMS: usize = 20;
/// Concurrent writer tasks and the writes each makes.
const WRITERS: usize = 4;
const WRITES_PER_WRITER: u64 = 200;
/// Watch operations (create, cancel, progress, pause, resume, close).
const DRIVER_OPS: u64 = 500;
/// Compactions and lease operations.
const MAINT_OPS: u64 = 50;
/// Most streams closed (and replaced) during a run.
const MAX_CLOSES: usize = 6;
/// How long draining after the run may take.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------------------------------
// The stress run.
// ------------------------------------------------------------------------------------------

/// What a writer was told: revision `rev` put these (key, value) pairs and deleted `deletes`
/// keys.
#[derive(Debug, Clone)]
struct WriteRecord {
    rev: i64,
    puts: BTreeSet<(Vec<u8>, Vec<u8>)>,
    deletes: usize,
    what: String,
}

/// One client stream and what was asked on it.
struct Slot {
    rec: RecordedStream,
    creates: Vec<WatchCreate>,
    closed: bool,
    /// Ids a cancel was sent for.
    cancel_sent: HashSet<i64>,
}

impl Slot {
    fn create(&mut self, req: WatchCreate) {
        self.creates.push(req.clone());
        self.rec.addr().do_send(CreateWatch(req));
    }

    /// Ids whose `created` arrived and that have not ended or been cancelled by us.
    fn live_ids(&self) -> Vec<i64> {
        let live = self.rec.with_log(|log| {
            let mut live = BTreeSet::new();
            for r in log {
                if r.created && !r.canceled {
                    live.insert(r.watch_id);
                } else if r.canceled {
                    live.remove(&r.watch_id);
                }
            }
            live
        });
        live.into_iter().filter(|id| !self.cancel_sent.contains(id)).collect()
    }

    /// Ids that were live once and are not now (candidates for explicit re-use).
    fn ended_ids(&self) -> Vec<i64> {
        self.rec.with_log(|log| {
            let mut ended = BTreeSet::new();
            for r in log {
                if r.created && !r.canceled {
                    ended.remove(&r.watch_id);
                } else if r.canceled && r.watch_id != INVALID_WATCH_ID {
                    ended.insert(r.watch_id);
                }
            }
            ended.into_iter().collect()
        })
    }
}

/// Shared counters of the run (single-threaded: the test's arbiter runs every task).
#[derive(Default)]
struct Progress {
    writes: Cell<u64>,
    max_future_start: Cell<i64>,
}

/// Waits until `writes` reached `target` (the tasks are paced by the writers' progress, so
/// the run is bounded by operation counts, not by time).
async fn wait_writes(p: &Progress, target: u64, writers_done: &Cell<bool>) {
    let start = Instant::now();
    while p.writes.get() < target && !writers_done.get() {
        assert!(start.elapsed() < DEADLINE, "writers stalled at {} writes", p.writes.get());
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
}

fn random_range(rng: &mut StdRng) -> KeyRange {
    match rng.random_range(0..10) {
        0..=3 => {
            let keys: Vec<&str> = KEYS.iter().chain(LEASE_KEYS).copied().collect();
            KeyRange::single(*keys.choose(rng).expect("keys"))
        }
        4 => KeyRange::prefix("a/"),
        5 => KeyRange::prefix(*["b/", "d/", "l/"].choose(rng).expect("prefixes")),
        6 => KeyRange::FromKey(b"b/1".to_vec()),
        7 => KeyRange::FromKey(b"c".to_vec()),
        8 => KeyRange::interval("a/2", "b/1"),
        _ => KeyRange::all(),
    }
}

fn random_create(rng: &mut StdRng, current: i64, compact: i64, p: &Progress) -> WatchCreate {
    let start = match rng.random_range(0..100) {
        0..=34 => 0,
        // Anywhere in history (often below the compact revision), or in the recent past.
        35..=44 => rng.random_range(1..=current.max(1)),
        45..=59 => rng.random_range((current - 100).max(1)..=current.max(1)),
        60..=74 => (current - rng.random_range(0..5)).max(1),
        75..=84 => (compact + rng.random_range(-1..=1)).max(1),
        _ => {
            let s = current + rng.random_range(1..=15);
            p.max_future_start.set(p.max_future_start.get().max(s));
            s
        }
    };
    let mut c = WatchCreate::new(&random_range(rng), start);
    c.prev_kv = rng.random_bool(0.5);
    c.filters = Filters { no_put: rng.random_bool(0.15), no_delete: rng.random_bool(0.15) };
    c.progress_notify = rng.random_bool(0.3);
    c.fragment = rng.random_bool(0.3);
    c
}

fn open_slot(sys: &TestSystem) -> Slot {
    Slot { rec: sys.stream(), creates: Vec::new(), closed: false, cancel_sent: HashSet::new() }
}

/// One writer: puts, deletes and txns on `KEYS`.
async fn writer(handle: Handle, n: usize, seed: u64, p: Rc<Progress>) -> Vec<WriteRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for i in 0..WRITES_PER_WRITER {
        let value = |k: &str| format!("w{n}.{i}.{k}").into_bytes();
        let op = rng.random_range(0..100);
        if op < 45 {
            let key = *KEYS.choose(&mut rng).expect("keys");
            let resp = handle.put(PutRequest::new(key, value(key))).await.expect("put");
            out.push(WriteRecord {
                rev: resp.revision,
                puts: [(key.as_bytes().to_vec(), value(key))].into(),
                deletes: 0,
                what: format!("put {key}"),
            });
        } else if op < 60 {
            let key = *KEYS.choose(&mut rng).expect("keys");
            let resp = handle.delete_range(DeleteRangeRequest::new(KeyRange::single(key))).await.expect("delete");
            if resp.deleted > 0 {
                out.push(WriteRecord {
                    rev: resp.revision,
                    puts: BTreeSet::new(),
                    deletes: 1,
                    what: format!("delete {key}"),
                });
            }
        } else if op < 65 {
            let prefix = *["a/", "b/", "d/"].choose(&mut rng).expect("prefixes");
            let resp = handle.delete_range(DeleteRangeRequest::new(KeyRange::prefix(prefix))).await.expect("delete");
            if resp.deleted > 0 {
                out.push(WriteRecord {
                    rev: resp.revision,
                    puts: BTreeSet::new(),
                    deletes: resp.deleted as usize,
                    what: format!("delete prefix {prefix}"),
                });
            }
        } else if op < 90 {
            // Several puts (and maybe a delete of another key) in one revision.
            let mut keys: Vec<&str> = KEYS.to_vec();
            keys.shuffle(&mut rng);
            let n_keys = rng.random_range(2..=4);
            let delete_one = rng.random_bool(0.4);
            let mut ops = Vec::new();
            let mut puts = BTreeSet::new();
            for (j, key) in keys[..n_keys].iter().enumerate() {
                if delete_one && j == n_keys - 1 {
                    ops.push(RequestOp::DeleteRange(DeleteRangeRequest::new(KeyRange::single(*key))));
                } else {
                    ops.push(RequestOp::Put(PutRequest::new(*key, value(key))));
                    puts.insert((key.as_bytes().to_vec(), value(key)));
                }
            }
            let resp =
                handle.txn(TxnRequest { compare: Vec::new(), success: ops, failure: Vec::new() }).await.expect("txn");
            let deletes = deleted(&resp.responses);
            out.push(WriteRecord { rev: resp.revision, puts, deletes, what: format!("txn {:?}", &keys[..n_keys]) });
        } else {
            // Create the key if absent, else delete it.
            let key = *KEYS.choose(&mut rng).expect("keys");
            let txn = TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::single(key),
                    result: CompareResult::Equal,
                    target: CompareTarget::Version(0),
                }],
                success: vec![RequestOp::Put(PutRequest::new(key, value(key)))],
                failure: vec![RequestOp::DeleteRange(DeleteRangeRequest::new(KeyRange::single(key)))],
            };
            let resp = handle.txn(txn).await.expect("txn");
            if resp.succeeded {
                out.push(WriteRecord {
                    rev: resp.revision,
                    puts: [(key.as_bytes().to_vec(), value(key))].into(),
                    deletes: 0,
                    what: format!("create-or-delete {key}: created"),
                });
            } else {
                out.push(WriteRecord {
                    rev: resp.revision,
                    puts: BTreeSet::new(),
                    deletes: deleted(&resp.responses),
                    what: format!("create-or-delete {key}: deleted"),
                });
            }
        }
        p.writes.set(p.writes.get() + 1);
    }
    out
}

fn deleted(responses: &[ResponseOp]) -> usize {
    responses
        .iter()
        .map(|r| match r {
            ResponseOp::DeleteRange(d) => d.deleted as usize,
            _ => 0,
        })
        .sum()
}

/// Compactions of old revisions (never past what the history watcher has received) and leases
/// granted, attached and expired or revoked.
async fn maintenance(
    handle: Handle,
    seed: u64,
    history_log: RecordedStream,
    p: Rc<Progress>,
    writers_done: Rc<Cell<bool>>,
) -> (Vec<WriteRecord>, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let total = WRITERS as u64 * WRITES_PER_WRITER;
    let mut out = Vec::new();
    let mut leases = Vec::new();
    let mut compactions = 0;
    for i in 0..MAINT_OPS {
        wait_writes(&p, total * i / MAINT_OPS, &writers_done).await;
        match rng.random_range(0..10) {
            0..=3 => {
                // Never compact past what the history watcher already has: it must not be
                // compacted itself.
                let seen = history_log
                    .with_log(|log| log.iter().flat_map(|r| r.events.iter()).map(|e| e.kv.mod_revision).max());
                let target = seen.unwrap_or(0).min(handle.current_revision()) - rng.random_range(0..20);
                if target >= 2
                    && target > handle.compact_revision()
                    && handle.compact(target, rng.random_bool(0.3)).await.is_ok()
                {
                    compactions += 1;
                }
            }
            4..=6 => {
                let (id, _, _) = handle.lease_grant(0, 5).await.expect("lease grant");
                let mut keys: Vec<&str> = LEASE_KEYS.to_vec();
                keys.shuffle(&mut rng);
                keys.truncate(rng.random_range(1..=3));
                if rng.random_bool(0.3) {
                    keys.push(*KEYS.choose(&mut rng).expect("keys"));
                }
                for key in &keys {
                    let value = format!("lease{id}.{i}").into_bytes();
                    let resp =
                        handle.put(PutRequest::new(*key, value.clone()).lease(id)).await.expect("put with lease");
                    out.push(WriteRecord {
                        rev: resp.revision,
                        puts: [(key.as_bytes().to_vec(), value)].into(),
                        deletes: 0,
                        what: format!("put {key} with lease {id}"),
                    });
                }
                leases.push(id);
            }
            7..=8 => {
                // Expire every lease granted so far, as if their TTL had passed.
                handle
                    .store_addr()
                    .send(LeaseTick(Some(Instant::now() + Duration::from_secs(60))))
                    .await
                    .expect("lease tick");
                leases.clear();
            }
            _ => {
                if let Some(id) = leases.pop() {
                    let _ = handle.lease_revoke(id).await;
                }
            }
        }
    }
    (out, compactions)
}

/// The watch side: creates, cancels, progress requests, pauses and closes, paced over the
/// writes. Returns every stream ever opened.
async fn driver(
    sys: Rc<TestSystem>,
    mut slots: Vec<Slot>,
    seed: u64,
    p: Rc<Progress>,
    writers_done: Rc<Cell<bool>>,
) -> Vec<Slot> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total = WRITERS as u64 * WRITES_PER_WRITER;
    let mut closes = 0;
    for i in 0..DRIVER_OPS {
        wait_writes(&p, total * i / DRIVER_OPS, &writers_done).await;
        let current = sys.handle.current_revision();
        let compact = sys.handle.compact_revision();
        let open: Vec<usize> = (0..slots.len()).filter(|&j| !slots[j].closed).collect();
        let j = *open.choose(&mut rng).expect("open streams");
        let paused = open.iter().filter(|&&k| slots[k].rec.is_paused()).count();
        match rng.random_range(0..100) {
            0..=27 => {
                let mut req = random_create(&mut rng, current, compact, &p);
                if rng.random_bool(0.1) {
                    // Re-use the id of an ended watcher: nothing of the old one may follow.
                    if let Some(id) = slots[j].ended_ids().choose(&mut rng) {
                        req.watch_id = *id;
                    }
                } else if rng.random_bool(0.03) {
                    // A live id: the create fails (duplicate watch id).
                    if let Some(id) = slots[j].live_ids().choose(&mut rng) {
                        req.watch_id = *id;
                    }
                }
                slots[j].create(req);
            }
            28..=37 => {
                if let Some(&id) = slots[j].live_ids().choose(&mut rng) {
                    slots[j].cancel_sent.insert(id);
                    slots[j].rec.addr().do_send(CancelWatch(id));
                }
            }
            38..=52 => slots[j].rec.addr().do_send(RequestStreamProgress),
            53..=64 if paused < STREAMS / 2 => {
                slots[j].rec.pause();
            }
            65..=79 => {
                let paused: Vec<usize> = open.iter().copied().filter(|&k| slots[k].rec.is_paused()).collect();
                if let Some(&k) = paused.choose(&mut rng) {
                    slots[k].rec.resume();
                }
            }
            80..=82 if closes < MAX_CLOSES => {
                closes += 1;
                slots[j].closed = true;
                slots[j].rec.addr().do_send(CloseStream);
                let mut slot = open_slot(&sys);
                for _ in 0..rng.random_range(1..=3) {
                    let req = random_create(&mut rng, current, compact, &p);
                    slot.create(req);
                }
                slots.push(slot);
            }
            _ => {}
        }
        if i % 4 == 0 {
            actix_rt::task::yield_now().await;
        }
    }
    slots
}

/// `common::wait_stats` with a longer deadline, for draining after the run: watchers that stopped
/// reading for a long time catch up `watch_batch_max_revs` revisions per pass, and each pass
/// scans from the lowest chosen watcher, which is slow in a debug build on a busy machine.
async fn drain(handle: &Handle, what: &str, cond: impl Fn(&watchkv_actors::SystemStats) -> bool) {
    let start = Instant::now();
    loop {
        let stats = handle.stats().await.expect("stats");
        if cond(&stats) {
            return;
        }
        assert!(start.elapsed() < DRAIN_DEADLINE, "timed out waiting for {what}; stats {stats:#?}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Requests stream-wide progress until one at `rev` arrives (a progress can be dropped when
/// the mailbox is full or a watcher is still being promoted; the client asks again). A stream
/// whose watchers have all ended (compaction, slow consumer) gets no answer and needs none.
async fn fence_at(slot: &Slot, rev: i64) {
    let start = Instant::now();
    loop {
        if slot.rec.addr().send(GetStreamStats).await.expect("stream alive").watchers == 0 {
            return;
        }
        let before = slot.rec.len();
        slot.rec.addr().do_send(RequestStreamProgress);
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_millis(200) {
            let got = slot.rec.with_log(|log| {
                log[before..]
                    .iter()
                    .any(|r| r.watch_id == INVALID_WATCH_ID && r.is_progress_notify() && r.revision >= rev)
            });
            if got {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(start.elapsed() < DEADLINE, "no stream-wide progress at {rev}; stream log tail: {:#?}", {
            let log = slot.rec.responses();
            log[log.len().saturating_sub(10)..].iter().map(checker::show_response).collect::<Vec<_>>()
        });
    }
}

/// Keeps the history watcher (all keys, never paused) alive, as a client would: the
/// slow-consumer policy may cancel it when it falls behind (its mailbox is as small as every
/// other's), and it then resumes after the last event it received. Once `fence` holds a
/// revision, waits for a stream-wide progress at it (all history up to it received) and
/// returns the stream.
async fn history_keeper(mut slot: Slot, fence: Rc<Cell<Option<i64>>>) -> Slot {
    let mut asked: Option<(usize, Instant)> = None;
    let mut fencing_since: Option<Instant> = None;
    loop {
        let (answered, live, last_event, log_len) = slot.rec.with_log(|log| {
            let answered = log.iter().filter(|r| r.created).count();
            let current = log.iter().rev().find(|r| r.created).map(|r| r.watch_id);
            let ended = log.iter().rev().take_while(|r| !r.created).any(|r| r.canceled && Some(r.watch_id) == current);
            let last_event = log.iter().flat_map(|r| r.events.iter()).map(|e| e.kv.mod_revision).max();
            (answered, !ended, last_event, log.len())
        });
        if answered == slot.creates.len() && !live {
            let mut req = WatchCreate::new(&KeyRange::all(), last_event.map_or(1, |r| r + 1));
            req.prev_kv = true;
            slot.create(req);
            asked = None;
        }
        if let Some(rev) = fence.get() {
            let since = *fencing_since.get_or_insert_with(Instant::now);
            assert!(since.elapsed() < DRAIN_DEADLINE, "the history stream never reached {rev}");
            if let Some((from, _)) = asked {
                let reached = slot.rec.with_log(|log| {
                    log[from..]
                        .iter()
                        .any(|r| r.watch_id == INVALID_WATCH_ID && r.is_progress_notify() && r.revision >= rev)
                });
                if reached {
                    return slot;
                }
            }
            let stale = asked.is_none_or(|(_, at)| at.elapsed() > Duration::from_millis(200));
            if answered == slot.creates.len() && live && stale {
                slot.rec.addr().do_send(RequestStreamProgress);
                asked = Some((log_len, Instant::now()));
            }
        }
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn stress(policy: SlowConsumerPolicy, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let chan_buf_len = rng.random_range(1..=4);
    let resync_ms = rng.random_range(5..=20);
    // Catching up costs a scan from the lowest chosen watcher per pass (see `drain`): batches of
    // one revision make that quadratic for watchers hundreds of revisions behind.
    let batch_revs = rng.random_range(2..=8);
    let per_sync = rng.random_range(4..=16);
    let ring = rng.random_range(8..=64);
    let progress_ms = rng.random_range(100..=150);
    let max_bytes = rng.random_range(60..=300);
    let compaction_batch = rng.random_range(2..=20);
    eprintln!(
        "watch_stress seed={seed} policy={policy:?} chan_buf_len={chan_buf_len} resync={resync_ms}ms batch_revs={batch_revs} \
         per_sync={per_sync} ring={ring} progress={progress_ms}ms max_response_bytes={max_bytes} compaction_batch={compaction_batch}"
    );
    let sys = Rc::new(
        TestSystem::with(false, |c| {
            let watch = c
                .watch()
                .clone()
                .with_chan_buf_len(chan_buf_len)
                .with_watch_resync_period(Duration::from_millis(resync_ms))
                .with_victim_retry_period(Duration::from_millis(2))
                .with_watch_batch_max_revs(batch_revs)
                .with_max_watchers_per_sync(per_sync)
                .with_progress_notify_interval(Duration::from_millis(progress_ms))
                .with_max_response_bytes(max_bytes);
            let store = c.store().clone().with_compaction_batch_limit(compaction_batch);
            c.with_watch(watch).with_store(store).with_ring_revisions(ring).with_slow_consumer(policy)
        })
        .await,
    );
    let handle = sys.handle.clone();
    let started = Instant::now();

    // The history: one watcher on all keys from the first revision, never paused (and resumed
    // if the slow-consumer policy cancels it).
    let history_slot = {
        let mut slot = open_slot(&sys);
        let mut req = WatchCreate::new(&KeyRange::all(), 1);
        req.prev_kv = true;
        let created = slot.rec.create(req.clone()).await;
        assert!(!created.canceled, "history watcher: {created:?}");
        slot.creates.push(req);
        slot
    };
    let history_log = history_slot.rec.clone();
    let history_fence = Rc::new(Cell::new(None));
    let keeper = actix_rt::spawn(history_keeper(history_slot, Rc::clone(&history_fence)));

    // Streams with a few watchers each.
    let p = Rc::new(Progress::default());
    let mut slots = Vec::new();
    for _ in 0..STREAMS {
        let mut slot = open_slot(&sys);
        for _ in 0..rng.random_range(2..=4) {
            let req = random_create(&mut rng, handle.current_revision(), handle.compact_revision(), &p);
            slot.create(req);
        }
        slots.push(slot);
    }

    // Run writers, the watch driver and maintenance concurrently.
    let writers_done = Rc::new(Cell::new(false));
    let writers: Vec<_> =
        (0..WRITERS).map(|n| actix_rt::spawn(writer(handle.clone(), n, rng.random(), Rc::clone(&p)))).collect();
    let driver = actix_rt::spawn(driver(Rc::clone(&sys), slots, rng.random(), Rc::clone(&p), Rc::clone(&writers_done)));
    let maint = actix_rt::spawn(maintenance(
        handle.clone(),
        rng.random(),
        history_log.clone(),
        Rc::clone(&p),
        Rc::clone(&writers_done),
    ));
    let mut records = Vec::new();
    for w in writers {
        records.extend(w.await.expect("writer"));
    }
    writers_done.set(true);
    let mut slots = driver.await.expect("driver");
    let (lease_records, compactions) = maint.await.expect("maintenance");
    records.extend(lease_records);

    // Reach every future start revision, so every watcher can be fenced.
    while handle.current_revision() < p.max_future_start.get() {
        let resp = handle.put(PutRequest::new("c", "filler")).await.expect("put");
        records.push(WriteRecord {
            rev: resp.revision,
            puts: [(b"c".to_vec(), b"filler".to_vec())].into(),
            deletes: 0,
            what: "filler".into(),
        });
    }

    // Everyone reads again; everything drains.
    for s in &slots {
        s.rec.resume();
    }
    let final_rev = handle.current_revision();
    drain(&handle, "nothing unsynced or parked", |s| {
        s.store.promoting == 0 && s.syncer.unsynced == 0 && s.victims.victims == 0
    })
    .await;
    history_fence.set(Some(final_rev));
    let history_slot = keeper.await.expect("history keeper");
    for s in slots.iter().filter(|s| !s.closed) {
        fence_at(s, final_rev).await;
    }
    assert_eq!(handle.current_revision(), final_rev, "nothing writes after the run");

    // The history: complete, what the writers were told, and what a read returns.
    let history_log = history_slot.rec.responses();
    let history = History::from_responses(&history_log).unwrap_or_else(|e| panic!("history stream: {e}"));
    let reports = checker::assert_stream_ok(&history, &history_slot.creates, &history_log);
    let first = reports[0].created_revision + 1;
    let resumed = reports.len() - 1;
    history.check_contiguous(first, final_rev).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(history.last_revision(), final_rev);
    check_records(&history, &records);
    let read = handle.range(RangeRequest::new(KeyRange::all())).await.expect("range");
    let state: BTreeMap<Vec<u8>, watchkv::KeyValue> = read.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    assert_eq!(state, history.snapshot_at(final_rev), "final read differs from the replayed history");

    // Every stream against the history.
    let mut ends: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut events, mut progress, mut fragments) = (0, 0, 0);
    for (n, s) in slots.iter().enumerate() {
        let log = s.rec.responses();
        let reports = match checker::check_stream_reports(&history, &s.creates, &log) {
            Ok(r) => r,
            Err(e) => {
                let dump: Vec<String> =
                    log.iter().enumerate().map(|(i, r)| format!("{i}: {}", checker::show_response(r))).collect();
                let creates: Vec<String> = s.creates.iter().enumerate().map(|(i, c)| format!("{i}: {c:?}")).collect();
                let path = std::env::temp_dir().join(format!("watch_stress_{seed}_stream{n}.txt"));
                let _ = std::fs::write(
                    &path,
                    format!("creates:\n{}\nresponses:\n{}\n", creates.join("\n"), dump.join("\n")),
                );
                panic!(
                    "stream {n} (closed: {}): watch guarantee broken: {e}\n(stream dumped to {})",
                    s.closed,
                    path.display()
                )
            }
        };
        assert!(s.closed || reports.len() == s.creates.len(), "stream {n}: every create answered");
        for r in &reports {
            let kind = match &r.end {
                End::Active => "active",
                End::CreateFailed(_) => "create failed",
                End::Canceled => "canceled",
                End::Compacted(_) => "compacted",
                End::ServerCanceled(_) => "server canceled",
            };
            *ends.entry(kind).or_default() += 1;
            events += r.events;
            if !s.closed && r.end == End::Active {
                assert_eq!(r.last_observed(), final_rev, "stream {n} watch {} did not catch up: {r:?}", r.id);
            }
        }
        progress += log.iter().filter(|r| r.is_progress_notify()).count();
        fragments += log.iter().filter(|r| r.fragment).count();
    }
    let stats = handle.stats().await.expect("stats");
    eprintln!(
        "watch_stress: final revision {final_rev}, compact {}, {compactions} compactions, {} streams, watchers {ends:?}, \
         {events} events checked, {progress} progress notifications, {fragments} fragment pieces, \
         {} victim deliveries, {} syncer passes, {} slow cancels, history resumed {resumed} times, {:?} so far",
        handle.compact_revision(),
        slots.len(),
        stats.victims.delivered,
        stats.syncer.passes,
        stats.slow_cancels,
        started.elapsed()
    );
    assert!(stats.victims.delivered + stats.slow_cancels > 0, "the run never parked a victim: not a stress");
    assert!(events > 0);

    // Close everything (the history stream too); nothing may stay behind.
    slots.push(history_slot);
    for s in &mut slots {
        s.rec.addr().do_send(CloseStream);
        s.closed = true;
    }
    drain(&handle, "every stream and watcher gone", |s| {
        s.store.synced == 0
            && s.store.promoting == 0
            && s.syncer.unsynced == 0
            && s.victims.victims == 0
            && s.store.streams == 0
    })
    .await;
    handle.shutdown().await.expect("shutdown");
}

/// Every write a client was told about is in the history at its revision, each revision once;
/// revisions no client wrote are lease expiries or revokes (deletes only).
fn check_records(history: &History, records: &[WriteRecord]) {
    let mut claimed = BTreeMap::new();
    for r in records {
        if let Some(other) = claimed.insert(r.rev, r) {
            panic!("revision {} was reported to two writes: {other:?} and {r:?}", r.rev);
        }
        let events = history.events_at(r.rev);
        let puts: BTreeSet<(Vec<u8>, Vec<u8>)> = events
            .iter()
            .filter(|e| e.kind == watchkv::EventKind::Put)
            .map(|e| (e.kv.key.clone(), e.kv.value.clone()))
            .collect();
        let deletes = events.iter().filter(|e| e.kind == watchkv::EventKind::Delete).count();
        assert_eq!(
            (&puts, deletes),
            (&r.puts, r.deletes),
            "history at revision {} differs from {} ({r:?})",
            r.rev,
            r.what
        );
    }
    for rev in history.revisions().filter(|rev| !claimed.contains_key(rev)) {
        assert!(
            history.events_at(rev).iter().all(|e| e.kind == watchkv::EventKind::Delete),
            "revision {rev} was written by no client and is not a lease expiry: {:?}",
            history.events_at(rev)
        );
    }
}

fn seed() -> u64 {
    std::env::var("WATCH_STRESS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random)
}

#[actix_rt::test]
async fn stress_keep_slow_consumers() {
    stress(SlowConsumerPolicy::Keep, seed()).await;
}

#[actix_rt::test]
async fn stress_cancel_slow_consumers() {
    let seed = seed().wrapping_add(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let policy = SlowConsumerPolicy::CancelAfter {
        lag_revisions: rng.random_range(20..=80),
        parked_for: Duration::from_millis(rng.random_range(100..=400)),
    };
    stress(policy, seed).await;
}
