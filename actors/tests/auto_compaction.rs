//! Automatic compaction in the server binary: with `--auto-compaction-mode periodic
//! --auto-compaction-retention 2s` history older than about two seconds is compacted while
//! writes go on, and reads at the latest revisions keep working; a bad retention is refused at
//! start with etcd-like wording.

mod wire;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
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
        let out = Command::new(env!("CARGO_BIN_EXE_watchkv"))
            .args(["--data-dir"])
            .arg(dir.path().join(mode))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--auto-compaction-mode", mode, "--auto-compaction-retention", retention])
            .output()
            .expect("run watchkv");
        assert!(!out.status.success(), "{mode} {retention} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(text), "{mode} {retention}: {stderr}");
    }
}
