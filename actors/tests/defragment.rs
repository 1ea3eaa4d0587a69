//! A defragment blocks only its own request (docs/etcd-semantics.md §5.3), shown on the
//! `watchkv` binary over the gateway: on a store that takes a while to defragment, once the
//! defragment has demonstrably started (a new table on disk), puts are acknowledged, a watcher
//! receives their events and reads answer, all before the defragment's answer arrives; then the
//! defragment completes, `Status` reports a smaller db size, and the store holds exactly what
//! was acknowledged.

mod wire;

use std::sync::mpsc::{self, TryRecvError};
use std::thread;
use std::time::Instant;

use serde_json::{json, Value};
use wire::{b64, bytes_field, defrag, int, start_watchkv, try_post, WatchStream, DEADLINE};

/// Puts `key` = `value` and returns its revision.
fn put(port: u16, key: &str, value: &str) -> i64 {
    let r = try_post(port, "/v3/kv/put", json!({"key": b64(key), "value": b64(value)}).to_string().as_bytes())
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    assert_eq!(r.status, 200, "put {key}: {}", String::from_utf8_lossy(&r.body));
    int(&r.json()["header"], "revision")
}

/// Reads `key`: its value and mod revision (`None` when absent).
fn get(port: u16, key: &str) -> Option<(Vec<u8>, i64)> {
    let r = try_post(port, "/v3/kv/range", json!({"key": b64(key)}).to_string().as_bytes())
        .unwrap_or_else(|e| panic!("range {key}: {e}"));
    assert_eq!(r.status, 200, "range {key}: {}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    v["kvs"].get(0).map(|kv| (bytes_field(kv, "value"), int(kv, "mod_revision")))
}

/// Events from `watch` up to and including the one at `revision`, as (revision, key, value).
fn events_until(watch: &mut WatchStream, revision: i64) -> Vec<(i64, String, String)> {
    let start = Instant::now();
    let mut out: Vec<(i64, String, String)> = Vec::new();
    while out.last().map_or(0, |e| e.0) < revision {
        let line: Value = watch
            .recv(DEADLINE.saturating_sub(start.elapsed()))
            .unwrap_or_else(|| panic!("no watch event at revision {revision} within {DEADLINE:?}; got {out:?}"));
        assert!(line.get("error").is_none() && line["result"].get("canceled").is_none(), "watch ended: {line}");
        for e in line["result"]["events"].as_array().into_iter().flatten() {
            let kv = &e["kv"];
            out.push((
                int(kv, "mod_revision"),
                String::from_utf8_lossy(&bytes_field(kv, "key")).into_owned(),
                String::from_utf8_lossy(&bytes_field(kv, "value")).into_owned(),
            ));
        }
    }
    out
}

#[test]
fn reads_writes_and_a_watcher_go_on_while_a_defragment_runs() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start_watchkv(&data, wire::free_port(), &[]);
    let port = server.port;
    let loaded = defrag::load(port);
    let loaded_in = started.elapsed();

    let mut watch = WatchStream::open(port, false).expect("watch stream");
    watch.send(&json!({"create_request": {"key": b64("live/"), "range_end": b64("live0")}}));
    let created = watch.recv(DEADLINE).expect("created response");
    assert_eq!(created["result"]["created"], json!(true), "{created}");
    let size_before = defrag::db_size(port);

    let before = defrag::store_files(&data);
    let (answer_tx, answer) = mpsc::channel();
    let defragment = thread::spawn(move || {
        let reply = try_post(port, "/v3/maintenance/defragment", b"{}");
        let _ = answer_tx.send(reply);
    });
    let new_files = defrag::wait_until_started(&data, &before, || answer.try_recv().is_ok());
    let defragment_started = Instant::now();

    // Rounds of a put, its watch event and two reads (the put key, and a loaded key whose
    // tables the defragment is rewriting), until the defragment answers. A round counts as
    // having run during the defragment if it completed before the answer arrived.
    let (sample, (sample_value, sample_rev)) = loaded
        .values
        .iter()
        .enumerate()
        .find_map(|(i, v)| v.clone().map(|v| (defrag::key(u32::try_from(i).expect("key index")), v)))
        .expect("a loaded key that was not deleted");
    let mut acked = Vec::new();
    let mut seen = Vec::new();
    let mut rounds_before_answer = 0usize;
    let reply = loop {
        let key = format!("live/{:04}", acked.len());
        let value = format!("during-{}", acked.len());
        let rev = put(port, &key, &value);
        acked.push((rev, key.clone(), value.clone()));
        seen.extend(events_until(&mut watch, rev));
        assert_eq!(get(port, &key), Some((value.into_bytes(), rev)), "{key} reads back");
        assert!(
            get(port, &sample).is_some_and(|(v, r)| v == sample_value && r == sample_rev),
            "{sample} reads back as loaded"
        );
        match answer.try_recv() {
            Ok(reply) => break reply,
            Err(TryRecvError::Empty) => rounds_before_answer += 1,
            Err(TryRecvError::Disconnected) => panic!("the defragment thread ended without an answer"),
        }
        assert!(
            defragment_started.elapsed() < DEADLINE * 2,
            "the defragment did not answer within {:?} ({} rounds)",
            DEADLINE * 2,
            acked.len()
        );
    };
    let defragment_took = defragment_started.elapsed();
    defragment.join().expect("defragment thread");
    let reply = reply.expect("the defragment's answer");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, b"{}".as_slice()),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        rounds_before_answer >= 1,
        "no put, watch event and read completed between the defragment's start ({new_files:?} appeared) and its \
         answer: it held them up"
    );

    // The watcher saw each acknowledged put once, in order, and goes on after the defragment.
    let after = put(port, "live/after", "after");
    acked.push((after, "live/after".into(), "after".into()));
    seen.extend(events_until(&mut watch, after));
    assert_eq!(seen, acked, "the watcher's events are the acknowledged puts");
    watch.close();

    // The space the deletions and the compaction left is given back.
    let size_after = defrag::db_size(port);
    assert!(size_after < size_before, "db size {size_before} before the defragment, {size_after} after");
    defrag::check(port, &loaded);
    eprintln!(
        "defragment: loaded in {loaded_in:.1?}; {rounds_before_answer} rounds of put, watch event and two reads \
         completed while the defragment ran ({defragment_took:.1?} from its first new file to its answer); db size \
         {size_before} -> {size_after}; {:.1?} in all",
        started.elapsed()
    );
}
