//! kill -9 of the `watchkv` binary under write load, three times over one data directory with
//! `--durability fsync`:
//!
//! - writer threads put keys over HTTP and record every acknowledged (key, value, revision);
//! - one watcher on all keys reads a `/v3/watch` stream (plain chunked request, no `Expect`);
//! - once every writer has had enough acknowledgements, the server gets SIGKILL mid-load
//!   (`Child::kill`) and is restarted on the same directory (the test polls its port);
//! - every acknowledged put must be readable at its revision (range with `revision`) and be
//!   the latest value of keys written once;
//! - the watcher resumes from its last seen revision + 1: the events it saw before the kill
//!   followed by the resumed ones must be exactly the store's history (a fresh watch from
//!   revision 1): no gap, no duplicate, nothing seen before the kill that the crash then lost.
//!
//! And a kill -9 during a defragment (`kill9_during_a_defragment_loses_nothing_acknowledged`), a
//! server started on a directory another one still holds, which waits for it to exit, and one
//! started on etcd's data directory, which refuses it.

mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use serde_json::{json, Value};
use wire::{
    b64, bytes_field, defrag, int, spawn_watchkv_logging_to, start_watchkv, try_post, wait_until_serving, Proc,
    WatchStream, DEADLINE,
};

const CYCLES: usize = 3;
const WRITERS: usize = 4;
/// Acknowledged puts per writer before the kill (times the cycle number + 1): the kill lands
/// while every writer is busy.
const ACKS_PER_WRITER_BEFORE_KILL: usize = 40;

/// One event as (revision, key, value; `None` for a DELETE).
type Ev = (i64, Vec<u8>, Option<Vec<u8>>);

/// An acknowledged put.
#[derive(Debug, Clone)]
struct Ack {
    key: Vec<u8>,
    value: Vec<u8>,
    revision: i64,
    /// Written once only (its latest value must be this one).
    unique: bool,
}

fn events_of(line: &Value) -> Result<(i64, Vec<Ev>), String> {
    if line.get("error").is_some() {
        return Err(format!("watch stream error: {line}"));
    }
    let r = &line["result"];
    if r.get("canceled").is_some() {
        return Err(format!("watch canceled: {line}"));
    }
    let evs = r["events"].as_array().map_or_else(Vec::new, |evs| {
        evs.iter()
            .map(|e| {
                let kv = &e["kv"];
                let value = if e["type"] == json!("DELETE") { None } else { Some(bytes_field(kv, "value")) };
                (int(kv, "mod_revision"), bytes_field(kv, "key"), value)
            })
            .collect()
    });
    Ok((int(&r["header"], "revision"), evs))
}

/// Opens a watch on every key from `start` and checks the created response.
fn watch_all(port: u16, start: i64) -> WatchStream {
    let mut s = WatchStream::open(port, false).expect("open watch stream");
    s.send(&json!({"create_request": {"key": b64("\0"), "range_end": b64("\0"), "start_revision": start.to_string()}}));
    let created = s.recv(DEADLINE).expect("created response");
    assert_eq!(created["result"]["created"], json!(true), "watch from {start} not created: {created}");
    s
}

/// Reads events from `s` until one at `until` (inclusive) has arrived.
fn read_until(s: &mut WatchStream, until: i64, out: &mut Vec<Ev>) {
    let start = Instant::now();
    while out.last().map_or(0, |e| e.0) < until {
        let left = (DEADLINE * 2).saturating_sub(start.elapsed());
        let line = s.recv(left).unwrap_or_else(|| {
            panic!("watch stalled: last event {:?}, waiting for revision {until}", out.last().map(|e| e.0))
        });
        let (_, evs) = events_of(&line).unwrap_or_else(|e| panic!("{e}"));
        out.extend(evs);
    }
}

fn current_revision(port: u16) -> i64 {
    let r = try_post(port, "/v3/kv/range", br#"{"key":"AA=="}"#).expect("range");
    assert_eq!(r.status, 200, "range: {}", String::from_utf8_lossy(&r.body));
    int(&r.json()["header"], "revision")
}

fn writer(port: u16, id: usize, cycle: usize, stop: Arc<AtomicBool>, acks: mpsc::Sender<Ack>) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // Mostly unique keys; every fourth put overwrites a hot key shared by all writers.
        let (key, unique) =
            if i % 4 == 3 { (format!("hot/{}", i % 5), false) } else { (format!("load/{cycle}/{id}/{i}"), true) };
        let value = format!("c{cycle}-w{id}-{i}");
        let body = json!({"key": b64(&key), "value": b64(&value)}).to_string();
        match try_post(port, "/v3/kv/put", body.as_bytes()) {
            Ok(r) if r.status == 200 => {
                let revision = int(&r.json()["header"], "revision");
                let ack = Ack { key: key.into_bytes(), value: value.into_bytes(), revision, unique };
                if acks.send(ack).is_err() {
                    return;
                }
            }
            // The server was killed (connection reset, EOF, refused) or refused the write:
            // the put is not acknowledged, its outcome unknown.
            Ok(_) | Err(_) => return,
        }
        i += 1;
    }
}

/// Checks every acknowledged put is readable at its revision, and as the latest value when
/// the key was written once.
fn check_acks(port: u16, acks: &[Ack]) {
    let mut latest: HashMap<&[u8], &Ack> = HashMap::new();
    for a in acks {
        if a.unique {
            latest.insert(&a.key, a);
        }
        let body = json!({"key": b64(&a.key), "revision": a.revision}).to_string();
        let r = try_post(port, "/v3/kv/range", body.as_bytes()).expect("range by revision");
        assert_eq!(
            r.status,
            200,
            "range {} at {}: {}",
            String::from_utf8_lossy(&a.key),
            a.revision,
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        let kv = v["kvs"].get(0).unwrap_or_else(|| panic!("acknowledged put lost: {a:?}; range answered {v}"));
        assert_eq!(
            (bytes_field(kv, "value"), int(kv, "mod_revision")),
            (a.value.clone(), a.revision),
            "acknowledged put {a:?} reads back as {kv}"
        );
    }
    // Latest values of keys written once, in one range per cycle prefix.
    let r =
        try_post(port, "/v3/kv/range", json!({"key": b64("load/"), "range_end": b64("load0")}).to_string().as_bytes())
            .expect("range");
    let v = r.json();
    let now: HashMap<Vec<u8>, (Vec<u8>, i64)> = v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter().map(|kv| (bytes_field(kv, "key"), (bytes_field(kv, "value"), int(kv, "mod_revision")))).collect()
        })
        .unwrap_or_default();
    for (k, a) in latest {
        assert_eq!(now.get(k), Some(&(a.value.clone(), a.revision)), "latest value of {}", String::from_utf8_lossy(k));
    }
}

/// The store's whole history, read by a fresh watch from revision 1.
fn history(port: u16) -> Vec<Ev> {
    let cur = current_revision(port);
    let mut s = watch_all(port, 1);
    let mut out = Vec::new();
    read_until(&mut s, cur, &mut out);
    s.close();
    out
}

fn check_watch(seen: &[Ev], history: &[Ev]) {
    // Ordered and unique.
    for w in seen.windows(2) {
        assert!(
            w[0].0 < w[1].0 || (w[0].0 == w[1].0 && w[0].1 != w[1].1),
            "watcher saw events out of order or twice: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    // Exactly the history: no gap, no duplicate, nothing the crash lost.
    let n = seen.len().min(history.len());
    if let Some(i) = (0..n).find(|&i| seen[i] != history[i]) {
        panic!(
            "watcher diverges from the history at event {i}: saw {:?}, history has {:?}",
            seen[i].clone(),
            history[i].clone()
        );
    }
    assert_eq!(
        seen.len(),
        history.len(),
        "watcher saw {} events, history has {} (last seen {:?}, last in history {:?})",
        seen.len(),
        history.len(),
        seen.last().map(|e| e.0),
        history.last().map(|e| e.0)
    );
}

#[test]
fn kill9_under_write_load_loses_no_acknowledged_write_and_no_watch_event() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut server: Proc = start_watchkv(&data, wire::free_port(), &["--durability", "fsync"]);
    let mut acked: Vec<Ack> = Vec::new();
    // The logical watcher: every event it has seen across restarts.
    let mut seen: Vec<Ev> = Vec::new();
    let mut watch = watch_all(server.port, 1);

    for cycle in 0..CYCLES {
        let cycle_start = Instant::now();
        let port = server.port;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Ack>();
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| {
                let (stop, tx) = (Arc::clone(&stop), tx.clone());
                thread::spawn(move || writer(port, id, cycle, stop, tx))
            })
            .collect();
        drop(tx);

        // Wait (on the acknowledgements themselves) until every writer is well into its load.
        let mut per_writer: BTreeMap<String, usize> = BTreeMap::new();
        let mut this_cycle = Vec::new();
        // A different kill point each cycle.
        let wanted = ACKS_PER_WRITER_BEFORE_KILL * (cycle + 1);
        while per_writer.len() < WRITERS || per_writer.values().any(|&n| n < wanted) {
            let a = rx.recv_timeout(DEADLINE * 2).unwrap_or_else(|_| {
                panic!("cycle {cycle}: writers stalled at {per_writer:?}; log:\n{}", server.log_tail(3000))
            });
            let w = String::from_utf8_lossy(&a.value).split('-').nth(1).unwrap_or("").to_string();
            if a.unique {
                *per_writer.entry(w).or_default() += 1;
            }
            this_cycle.push(a);
        }

        // kill -9 mid-load.
        server.kill9();
        let killed_at = Instant::now();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("writer thread");
        }
        this_cycle.extend(rx.try_iter());
        // Everything the watcher received before the connection died.
        let mut before = Vec::new();
        while let Some(line) = watch.recv(DEADLINE) {
            let (_, evs) = events_of(&line).unwrap_or_else(|e| panic!("{e}"));
            before.extend(evs);
        }
        let seen_at_kill = before.len();
        seen.extend(before);
        acked.extend(this_cycle.iter().cloned());

        // Restart on the same directory, on a new port (any will do).
        let restart = Instant::now();
        server = start_watchkv(&data, wire::free_port(), &["--durability", "fsync"]);
        let restart_took = restart.elapsed();
        let cur = current_revision(server.port);
        let max_ack = acked.iter().map(|a| a.revision).max().unwrap_or(0);
        assert!(cur >= max_ack, "cycle {cycle}: restarted at revision {cur} below an acknowledged revision {max_ack}");

        check_acks(server.port, &acked);

        // Resume the watcher from its last seen revision + 1 and catch up to now.
        let last_seen = seen.last().map_or(0, |e| e.0);
        assert!(
            last_seen <= cur,
            "cycle {cycle}: the watcher saw revision {last_seen}, beyond the restarted store's {cur}"
        );
        watch = watch_all(server.port, last_seen + 1);
        read_until(&mut watch, cur, &mut seen);
        let hist = history(server.port);
        check_watch(&seen, &hist);
        let in_history: HashSet<&Ev> = hist.iter().collect();
        for a in &acked {
            assert!(
                in_history.contains(&(a.revision, a.key.clone(), Some(a.value.clone()))),
                "acknowledged put {a:?} is not in the watch history"
            );
        }
        eprintln!(
            "cycle {cycle}: {} acks ({} total, highest revision {max_ack}), killed {:.1?} into the cycle; the watcher got \
             {seen_at_kill} events this cycle up to revision {last_seen}; restart took {restart_took:.1?} at revision {cur}; \
             killed→verified {:.1?}",
            this_cycle.len(),
            acked.len(),
            killed_at.duration_since(cycle_start),
            killed_at.elapsed()
        );
    }
    // The resumed watcher keeps working after the last restart.
    let port = server.port;
    let body = json!({"key": b64("final"), "value": b64("x")}).to_string();
    let r = try_post(port, "/v3/kv/put", body.as_bytes()).expect("final put");
    let rev = int(&r.json()["header"], "revision");
    read_until(&mut watch, rev, &mut seen);
    assert_eq!(seen.last(), Some(&(rev, b"final".to_vec(), Some(b"x".to_vec()))));
    check_watch(&seen, &history(port));
    watch.close();
    eprintln!(
        "kill9: {CYCLES} cycles, {} acknowledged puts, {} events checked in {:.1?}",
        acked.len(),
        seen.len(),
        started.elapsed()
    );
}

/// kill -9 while a defragment runs (fjall's major compaction rewriting the store, deleted data
/// being dropped): the kill follows the first sign on disk that the defragment has started and
/// cuts its request (no answer); after the restart every acknowledged write is there, deleted
/// keys stay deleted, the history stays compacted, and a defragment then completes.
#[test]
fn kill9_during_a_defragment_loses_nothing_acknowledged() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = wire::free_port();
    let mut server = start_watchkv(&data, port, &[]);
    let loaded = defrag::load(port);
    let loaded_in = started.elapsed();

    let before = defrag::store_files(&data);
    let (answered_tx, answered) = mpsc::channel();
    let defragment = thread::spawn(move || {
        let reply = try_post(port, "/v3/maintenance/defragment", b"{}");
        let _ = answered_tx.send(());
        reply
    });
    let new_files = defrag::wait_until_started(&data, &before, || answered.try_recv().is_ok());
    server.kill9();
    let reply = defragment.join().expect("defragment thread");
    assert!(
        reply.is_err(),
        "the defragment answered before the kill ({reply:?}): the kill did not land during it (its first new file: \
         {new_files:?})"
    );

    // Restart on the same directory, on a new port (any will do).
    let restart = Instant::now();
    let server = start_watchkv(&data, wire::free_port(), &[]);
    let restart_took = restart.elapsed();
    defrag::check(server.port, &loaded);
    let r = try_post(server.port, "/v3/maintenance/defragment", b"{}").expect("defragment after the restart");
    assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()), "{}", String::from_utf8_lossy(&r.body));
    drop(server);
    eprintln!(
        "kill9 during a defragment: loaded in {loaded_in:.1?}, killed after {new_files:?} appeared, the defragment's \
         request cut ({}); restart took {restart_took:.1?}; {:.1?} in all",
        reply.err().map_or_else(String::new, |e| e.to_string()),
        started.elapsed()
    );
}

/// As etcd ("another etcd process is using ... waiting for it to exit before starting"): a
/// server started on a data directory a running one holds waits, and serves that directory
/// once the first is gone, as a supervisor's restart right after a kill needs.
#[test]
fn a_second_server_on_a_held_directory_waits_for_the_first_to_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut first = start_watchkv(&data, wire::free_port(), &["--durability", "buffered"]);
    let put = try_post(first.port, "/v3/kv/put", json!({"key": b64("k"), "value": b64("v")}).to_string().as_bytes())
        .expect("put");
    assert_eq!(put.status, 200);

    let second_log = dir.path().join("second.log");
    let mut second =
        spawn_watchkv_logging_to(&data, wire::free_port(), &["--durability", "buffered"], Some(&second_log));
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(&second_log).unwrap_or_default();
        if log.contains("waiting for it to exit") {
            break;
        }
        if let Some(why) = second.exited() {
            panic!("the second server exited instead of waiting: {why}");
        }
        assert!(started.elapsed() < DEADLINE, "no waiting message: {log}");
        // Polling interval for the log, not a synchronisation.
        thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(second.exited().is_none(), "still waiting");

    first.kill9();
    wait_until_serving(second.port, "the second server", || second.exited());
    let got = try_post(second.port, "/v3/kv/range", json!({"key": b64("k")}).to_string().as_bytes()).expect("range");
    assert_eq!(bytes_field(&got.json()["kvs"][0], "value"), b"v");
}

#[test]
fn a_server_started_on_etcds_data_directory_refuses_it_and_writes_nothing_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd_data = dir.path().join("etcd");
    let mut etcd = wire::start_etcd(&etcd_data);
    etcd.kill9();
    let listing = || {
        let mut names: Vec<_> =
            std::fs::read_dir(&etcd_data).expect("list").map(|e| e.expect("entry").file_name()).collect();
        names.sort();
        names
    };
    let before = listing();
    let log = dir.path().join("watchkv.log");
    let mut server = spawn_watchkv_logging_to(&etcd_data, wire::free_port(), &[], Some(&log));
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "watchkv went on serving etcd's directory");
        // Polling interval for the exit, not a synchronisation.
        thread::sleep(std::time::Duration::from_millis(25));
    };
    assert!(!status.success(), "{status}");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("is an etcd data directory") && text.contains("watchkv import"), "{text}");
    assert_eq!(listing(), before, "nothing written into etcd's directory");
}
