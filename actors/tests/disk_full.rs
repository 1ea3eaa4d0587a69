//! A full disk, for real: the server runs on a small tmpfs (mounted here; the test machines run
//! as root) beside a ballast file. Writes until the disk is full: the failing write is refused,
//! so is every write after it, `/health` turns false with the reason and `NOSPACE` is listed,
//! and reads (a range, a read-only txn) go on at the last acknowledged write's revision, never
//! seeing a write that was refused. Then the ballast is deleted and, without a restart, the store recovers: writes pass again,
//! `/health` is true, the alarm is gone, the watcher that watched throughout got every
//! acknowledged write exactly once and in order, and a restart finds every acknowledged write.

mod wire;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wire::defrag::noise;
use wire::{b64, free_port, int, start_watchkv, try_post, wait_for, WatchStream, DEADLINE};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI and the developers' machines run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// What the gateway answers a write refused after a storage failure: HTTP 500 and gRPC code 13
/// (`Internal`, as every storage failure) with the poisoned store's text.
const REFUSED_STATUS: u16 = 500;
const REFUSED_CODE: i64 = 13;
const POISONED: &str = "etcdserver: mvcc: store is poisoned by a storage failure; writes are refused until it recovers";
/// `/health`'s reason meanwhile: the same text without the gateway's `etcdserver: ` prefix.
const HEALTH_REASON: &str = "mvcc: store is poisoned by a storage failure; writes are refused until it recovers";

/// Puts `k/<i>`; the revision, or the refusal as (HTTP status, body). Connection errors panic:
/// the server must answer every write, full disk or not.
fn put(port: u16, i: u64) -> Result<i64, (u16, String)> {
    let body = json!({"key": b64(format!("k/{i:05}")), "value": b64(noise(i, 16 * 1024))});
    let r = try_post(port, "/v3/kv/put", body.to_string().as_bytes()).unwrap_or_else(|e| panic!("put k/{i:05}: {e}"));
    if r.status == 200 {
        Ok(int(&r.json()["header"], "revision"))
    } else {
        Err((r.status, String::from_utf8_lossy(&r.body).into_owned()))
    }
}

/// Asserts that `refusal` is the gateway's answer to a write on a poisoned store, exactly.
fn assert_poisoned(refusal: &(u16, String), what: &str) {
    let (status, body) = refusal;
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"));
    assert_eq!(
        (*status, v["code"].as_i64(), v["message"].as_str()),
        (REFUSED_STATUS, Some(REFUSED_CODE), Some(POISONED)),
        "{what}: {body}"
    );
}

/// Starts a snapshot download over the gateway and stops reading it after its first bytes:
/// the stream's thread then waits with its view of the database open. Keep the socket to keep
/// it waiting.
fn stalled_snapshot(port: u16) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let request = "POST /v3/maintenance/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}";
    stream.write_all(request.as_bytes()).expect("send");
    let mut first = [0u8; 4096];
    let n = stream.read(&mut first).expect("the snapshot's first bytes");
    let head = String::from_utf8_lossy(&first[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "a snapshot starts: {head}");
    stream
}

#[test]
fn a_full_disk_refuses_writes_then_the_store_recovers_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "24m");
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, noise(0, 6 << 20)).expect("ballast");
    let data = mnt.join("data");
    let port = free_port();
    let mut server = start_watchkv(&data, port, &[]);

    let mut watch = WatchStream::open(port, false).expect("watch stream");
    watch.send(&json!({"create_request": {"key": b64("k/"), "range_end": b64("k0")}}));
    let created = watch.recv(DEADLINE).expect("created");
    assert_eq!(created["result"]["created"], json!(true), "{created}");

    // A lease with a key, kept alive until the disk is full.
    let lease = try_post(port, "/v3/lease/grant", br#"{"TTL":"3"}"#).expect("grant").json();
    let lease_id = lease["ID"].as_str().expect("lease id").to_string();
    let leased = json!({"key": b64("k/leased"), "value": b64("v"), "lease": lease_id});
    let r = try_post(port, "/v3/kv/put", leased.to_string().as_bytes()).expect("put with the lease");
    assert_eq!(r.status, 200, "{}", r.json());
    let mut acked = vec![(0, int(&r.json()["header"], "revision"))];
    let keep_alive = || try_post(port, "/v3/lease/keepalive", json!({"ID": lease_id}).to_string().as_bytes());
    // The lease is due at the latest 3 s after the last renewal's answer.
    let mut lease_due = Instant::now() + Duration::from_secs(3);

    // Fill the disk.
    let mut stalled = None;
    let mut i = 0u64;
    let refusal = loop {
        i += 1;
        match put(port, i) {
            Ok(rev) => acked.push((i, rev)),
            Err(e) => break e,
        }
        // Renewed by the clock, not by the number of puts: a slow stretch of puts (or the
        // snapshot's set-up below) must not let the lease expire before the disk fills.
        if lease_due.saturating_duration_since(Instant::now()) < Duration::from_millis(2500) {
            assert_eq!(keep_alive().expect("keep-alive").status, 200);
            lease_due = Instant::now() + Duration::from_secs(3);
        }
        if i == 200 {
            // A snapshot download (3 MB and more) whose client stops reading: it holds a view
            // of the database through the failure; the store must still be able to reopen it
            // (the stream ends then, with an error).
            stalled = Some(stalled_snapshot(port));
            assert_eq!(keep_alive().expect("keep-alive").status, 200);
            lease_due = Instant::now() + Duration::from_secs(3);
        }
        assert!(i < 5000, "24 MiB never filled");
    };
    let refused = i;
    assert!(acked.len() > 10, "the store took writes before the disk filled: {}", acked.len());
    assert_poisoned(&refusal, "the write the full disk failed");
    let down = wait_for("/health false", || {
        let (code, body) = wire::http_get(port, "/health");
        (code == 503).then_some(body)
    });
    let down_json: Value = serde_json::from_str(&down).unwrap_or_else(|e| panic!("/health is not JSON ({e}): {down}"));
    assert_eq!(down_json, json!({"health": "false", "reason": HEALTH_REASON}), "{down}");
    let mut last = String::new();
    let start = Instant::now();
    let alarms = loop {
        let r = try_post(port, "/v3/maintenance/alarm", br#"{"action":"GET"}"#).expect("alarm");
        let v: Value = r.json();
        if v.to_string().contains("NOSPACE") {
            break v;
        }
        last = format!("{v} health {down}");
        assert!(start.elapsed() < DEADLINE, "NOSPACE not listed: {last}\n{}", server.log_tail(3000));
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = last;
    assert_eq!(alarms["alarms"][0]["alarm"], "NOSPACE", "{alarms}");
    i += 1;
    let still = put(port, i).expect_err("still full: still refused");
    assert_poisoned(&still, "a write while the disk is still full");

    // Reads go on, at the last acknowledged revision: the refused writes reached the key index
    // but not the disk, and their writers were told they failed.
    let last_acked = acked.last().map(|a| a.1).expect("acks");
    let range = json!({"key": b64("k/"), "range_end": b64("k0"), "keys_only": true});
    let r = try_post(port, "/v3/kv/range", range.to_string().as_bytes()).expect("range");
    let v = r.json();
    assert_eq!(r.status, 200, "a range on the poisoned store: {v}");
    assert_eq!(int(&v["header"], "revision"), last_acked, "{v}");
    assert_eq!(int(&v, "count"), acked.len() as i64, "only the acknowledged keys: {v}");

    // The lease's deadline passes while its revoke cannot be written: the keep-alive is
    // refused (a client retries it), not answered TTL 0 while its key stays, and no revision
    // is published for the revoke that failed.
    // Waiting for the lease's own deadline, a time, not for another thread.
    wait_for("the lease's deadline", || (Instant::now() > lease_due).then_some(()));
    let refused_keep_alive = String::from_utf8_lossy(&keep_alive().expect("keep-alive").body).into_owned();
    assert!(refused_keep_alive.contains(POISONED), "an error line, not TTL 0: {refused_keep_alive}");
    let r = try_post(port, "/v3/kv/range", range.to_string().as_bytes()).expect("range");
    assert_eq!(int(&r.json()["header"], "revision"), last_acked, "{}", r.json());
    let refused_key = b64(format!("k/{refused:05}"));
    let txn = json!({
        "compare": [{"key": refused_key, "target": "VERSION", "result": "EQUAL", "version": "0"}],
        "success": [{"request_range": {"key": refused_key}}],
    });
    let r = try_post(port, "/v3/kv/txn", txn.to_string().as_bytes()).expect("txn");
    let v = r.json();
    assert_eq!(r.status, 200, "a read-only txn on the poisoned store: {v}");
    assert_eq!(int(&v["header"], "revision"), last_acked, "{v}");
    assert_eq!(v["succeeded"], json!(true), "the refused key does not exist: {v}");

    // A defragment (etcd's usual remedy for NOSPACE) is refused at once: its flush would fail
    // on the full disk, and waiting for that flush held the database, so the store could never
    // reopen once space was freed.
    let r = try_post(port, "/v3/maintenance/defragment", b"{}").expect("defragment");
    assert_poisoned(&(r.status, String::from_utf8_lossy(&r.body).into_owned()), "a defragment on the full disk");

    // Free the space: the store comes back by itself.
    std::fs::remove_file(&ballast).expect("delete the ballast");
    let (first_after, rev_after) = wait_for("a write after recovery", || {
        i += 1;
        put(port, i).ok().map(|rev| (i, rev))
    });
    acked.push((first_after, rev_after));
    for _ in 0..5 {
        i += 1;
        acked.push((i, put(port, i).expect("writes pass again")));
    }
    let (code, body) = wire::http_get(port, "/health");
    assert_eq!(code, 200, "healthy again: {body}");
    assert!(stalled.is_some(), "the disk filled before the snapshot was taken");
    drop(stalled);
    // The reopened store gives the lease its TTL again (as etcd after a restart); then it is
    // revoked and its key deleted, which the watcher sees.
    let time_to_live = json!({"ID": lease_id}).to_string();
    wait_for("the lease revoked after the recovery", || {
        let r = try_post(port, "/v3/lease/timetolive", time_to_live.as_bytes()).expect("timetolive");
        (r.json()["TTL"] == json!("-1")).then_some(())
    });
    let r = try_post(port, "/v3/kv/range", json!({"key": b64("k/leased")}).to_string().as_bytes()).expect("range");
    assert_eq!(r.json().get("kvs"), None, "the leased key is gone: {}", r.json());
    i += 1;
    acked.push((i, put(port, i).expect("a write after the revoke")));
    let r = try_post(port, "/v3/maintenance/alarm", br#"{"action":"GET"}"#).expect("alarms");
    assert!(!r.json().to_string().contains("NOSPACE"), "the alarm cleared itself: {}", r.json());

    // The watcher: every acknowledged write once, in order (a write refused when the disk
    // filled may still have reached the journal and then shows up too, like a timed-out write).
    let last = acked.last().map(|a| a.1).expect("acks");
    let lines = watch.take_until(DEADLINE * 2, |ls| {
        ls.iter().any(|l| {
            l["result"]["events"].as_array().is_some_and(|e| e.iter().any(|e| int(&e["kv"], "mod_revision") == last))
        })
    });
    let mut seen = Vec::new();
    for l in &lines {
        for e in l["result"]["events"].as_array().into_iter().flatten() {
            seen.push(int(&e["kv"], "mod_revision"));
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, no duplicate: {seen:?}");
    for (_, rev) in &acked {
        assert!(seen.contains(rev), "acknowledged revision {rev} delivered: {seen:?}");
    }

    // A restart finds every acknowledged write.
    assert!(
        lines
            .iter()
            .flat_map(|l| l["result"]["events"].as_array().into_iter().flatten())
            .any(|e| { e["type"] == json!("DELETE") && e["kv"]["key"] == json!(b64("k/leased")) }),
        "the lease's revoke delivered: {lines:?}"
    );

    server.kill9();
    let _server = start_watchkv(&data, port, &[]);
    for (n, rev) in acked.iter().filter(|(n, _)| *n > 0) {
        let r = try_post(port, "/v3/kv/range", json!({"key": b64(format!("k/{n:05}"))}).to_string().as_bytes())
            .expect("range");
        let v = r.json();
        assert_eq!(int(&v["kvs"][0], "mod_revision"), *rev, "k/{n:05} after the restart: {v}");
    }
    // A defragment with little room left: its flush and merge may run out of space, which
    // poisons fjall. It answers either way (its wait for the flush used to go on forever, the
    // database held, once the flush had failed): done, or the storage error.
    let r = try_post(port, "/v3/maintenance/defragment", b"{}").expect("the defragment answers");
    assert!(r.status == 200 || r.status == REFUSED_STATUS, "{} {}", r.status, String::from_utf8_lossy(&r.body));
}
