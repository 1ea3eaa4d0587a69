//! Automatic compaction in the server binary: with `--auto-compaction-mode periodic
//! --auto-compaction-retention 2s` history older than about two seconds is compacted while
//! writes go on, and reads at the latest revisions keep working; a bad retention is refused at
//! start with etcd-like wording. The `revision` mode runs through the actor system, its
//! five-minute check shortened with `ActorsConfig::with_revision_compaction_interval` (etcd has
//! no flag for it): it keeps exactly the last `retention` revisions, again after more writes,
//! and watchers see its compactions as a client's.

mod common;
mod exit;
mod wire;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestSystem;
use serde_json::json;
use watchkv::auto_compaction::AutoCompaction;
use watchkv::{Error, KeyRange, RangeRequest};
use watchkv_actors::WatchCreate;
use wire::{b64, free_port, int, post, start_watchkv, DEADLINE};

#[test]
fn periodic_auto_compaction_compacts_old_history_while_writes_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let args = ["--durability", "buffered", "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"];
    let _server = start_watchkv(&dir.path().join("data"), port, &args);
    let first =
        int(&post(port, "/v3/kv/put", &json!({"key": b64("k"), "value": b64("v0")})).json()["header"], "revision");
    let start = Instant::now();
    let mut compacted = None;
    let mut i = 0;
    while start.elapsed() < DEADLINE * 2 {
        i += 1;
        let put = post(port, "/v3/kv/put", &json!({"key": b64("k"), "value": b64(format!("v{i}"))}));
        assert_eq!(put.status, 200, "writes go on: {}", put.json());
        let old = post(port, "/v3/kv/range", &json!({"key": b64("k"), "revision": first.to_string()}));
        if old.status != 200 {
            compacted = Some((start.elapsed(), old.json()));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (after, answer) = compacted.expect("history two seconds old is compacted");
    assert!(after >= Duration::from_secs(1), "not before the retention has passed: {after:?}");
    assert_eq!(answer["message"], "etcdserver: mvcc: required revision has been compacted", "{answer}");
    let latest = post(port, "/v3/kv/range", &json!({"key": b64("k")})).json();
    assert_eq!(latest["kvs"][0]["value"], json!(b64(format!("v{i}"))), "the latest revision reads: {latest}");
}

#[test]
fn a_bad_retention_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (mode, retention, text) in
        [("revision", "1h", "invalid auto-compaction retention"), ("weekly", "1", "\"periodic\" or \"revision\"")]
    {
        let out = exit::run_to_exit(
            Command::new(env!("CARGO_BIN_EXE_watchkv"))
                .args(["--data-dir"])
                .arg(dir.path().join(mode))
                .args(["--listen", &format!("127.0.0.1:{}", free_port())])
                .args(["--auto-compaction-mode", mode, "--auto-compaction-retention", retention]),
            DEADLINE,
        );
        assert!(!out.status.success(), "{mode} {retention} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(text), "{mode} {retention}: {stderr}");
    }
}

/// Waits until the store's compact revision is `expected`; at every look, the policy must not
/// have compacted into the last `retention` revisions.
async fn wait_for_compaction(s: &TestSystem, retention: i64, expected: i64) {
    let start = Instant::now();
    loop {
        let (compact, current) = (s.handle.compact_revision(), s.handle.current_revision());
        assert!(compact <= current - retention, "compacted at {compact} with the current revision at {current}");
        if compact == expected {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "compact revision {compact}, waiting for {expected}");
        // Polling interval, not a synchronisation.
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn revision_auto_compaction_keeps_the_last_retention_revisions() {
    const RETENTION: i64 = 5;
    let s = TestSystem::with(false, |c| {
        c.with_auto_compaction(Some(AutoCompaction::Revision(RETENTION)))
            .with_revision_compaction_interval(Duration::from_millis(20))
    })
    .await;
    // A watcher on everything from the start, synced throughout.
    let live = s.stream();
    let live_id = live.watch(KeyRange::all(), 1).await;

    for i in 0..20 {
        s.put(&format!("k{}", i % 4), &format!("v{i}")).await;
    }
    assert_eq!(s.handle.current_revision(), 21);
    wait_for_compaction(&s, RETENTION, 21 - RETENTION).await;

    // Reads below the compact revision are refused as etcd refuses them; at it, they pass.
    let at = |revision| RangeRequest { revision, ..RangeRequest::new(KeyRange::single("k0")) };
    let below = s.handle.range(at(15)).await;
    assert!(matches!(below, Err(Error::Compacted { .. })), "revision 15 is compacted: {below:?}");
    let kept = s.handle.range(at(16)).await.expect("revision 16 is kept");
    assert_eq!(kept.kvs[0].value, b"v12", "k0 as of revision 16");
    // A watch from below it is cancelled with the compact revision, as after a client's compaction.
    let late = s.stream();
    let created = late.create(WatchCreate::new(&KeyRange::all(), 10)).await;
    let notice = if created.canceled {
        created
    } else {
        let log = late.wait_for("the compaction notice", |r| r.iter().any(|x| x.canceled)).await;
        log.into_iter().find(|x| x.canceled).expect("a canceled response")
    };
    assert_eq!(notice.compact_revision, 16, "{notice:?}");
    // The synced watcher lost nothing.
    let log = live.wait_for("every event", |r| r.iter().map(|x| x.events.len()).sum::<usize>() >= 20).await;
    assert!(log.iter().all(|r| !r.canceled), "the live watcher is not cancelled: {log:?}");
    let revisions: Vec<i64> = live.events_of(live_id).iter().map(|e| e.0).collect();
    assert_eq!(revisions, (2..=21).collect::<Vec<_>>());

    // More writes move it on: again exactly `RETENTION` revisions are kept.
    for i in 20..23 {
        s.put(&format!("k{}", i % 4), &format!("v{i}")).await;
    }
    wait_for_compaction(&s, RETENTION, 24 - RETENTION).await;
    s.handle.shutdown().await.expect("shutdown");
}
