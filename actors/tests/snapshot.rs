//! Snapshots end to end, against the `watchkv` binary:
//!
//! - `Maintenance.Snapshot` over gRPC (the `etcd-client` crate) while a writer keeps writing and
//!   a watcher keeps watching: both go on unharmed; the stream counts `remaining_bytes` down to
//!   0 and ends with the 32-byte checksum; `watchkv snapshot restore` gives a store at exactly
//!   the snapshot's revision with the same keys, values, create/mod revisions, versions,
//!   compact revision and leases; `watchkv snapshot status` reports it.
//! - `etcdctl snapshot save` (etcd 3.4.23's) writes a file that `watchkv snapshot status`
//!   accepts and that restores; etcdctl's own `snapshot status` cannot read it (a bbolt reader,
//!   docs/etcd-semantics.md §14); the gateway's `/v3/maintenance/snapshot` streams the same
//!   format.
//! - The backup round trip compared with real etcd 3.4.23: `etcdctl snapshot save` with writes
//!   after it, each server's own `snapshot status` and `snapshot restore`, a server on the
//!   restored directory, and `etcdctl get` there give the same answers, at the snapshot's
//!   revision.
//! - kill -9 of the server with a snapshot stream half sent loses no acknowledged write.

mod wire;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use etcd_client::{
    Client, CompactionOptions, ConnectOptions, EventType, GetOptions, PutOptions, SnapshotStreaming, WatchOptions,
};
use serde_json::Value;
use tokio::sync::mpsc;
use watchkv::{KeyRange, KvStore, RangeRequest, StoreConfig};
use wire::{drop_identity, etcd_binary, etcd_member_command, free_port, start_etcd, start_watchkv, Proc, DEADLINE};

/// `(key, value, create_revision, mod_revision, version, lease)`.
type Row = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

async fn connect(port: u16) -> Client {
    let opts = ConnectOptions::new().with_connect_timeout(DEADLINE).with_timeout(DEADLINE);
    Client::connect([format!("127.0.0.1:{port}")], Some(opts)).await.expect("connect etcd-client")
}

fn watchkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_watchkv")).args(args).output().expect("run watchkv")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `watchkv snapshot status FILE -w json`.
fn status_json(file: &Path) -> Value {
    let out = watchkv(&["snapshot", "status", &file.to_string_lossy(), "-w", "json"]);
    assert!(out.status.success(), "snapshot status: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status JSON: {e}: {}", text(&out)))
}

/// `watchkv snapshot restore FILE --data-dir DIR`.
fn restore(file: &Path, dir: &Path) {
    let out = watchkv(&["snapshot", "restore", &file.to_string_lossy(), "--data-dir", &dir.to_string_lossy()]);
    assert!(out.status.success(), "snapshot restore: {}", text(&out));
}

/// Every key live at `revision` (0 = current) on a server.
async fn rows_at(client: &mut Client, revision: i64) -> Vec<Row> {
    let resp = client.get(vec![0], Some(GetOptions::new().with_from_key().with_revision(revision))).await.expect("get");
    resp.kvs()
        .iter()
        .map(|kv| {
            (kv.key().to_vec(), kv.value().to_vec(), kv.create_revision(), kv.mod_revision(), kv.version(), kv.lease())
        })
        .collect()
}

/// Every key live at `revision` (0 = current) in a store.
fn store_rows(store: &KvStore, revision: i64) -> Vec<Row> {
    let mut req = RangeRequest::new(KeyRange::FromKey(vec![0]));
    req.revision = revision;
    let resp = store.range(&req).expect("range");
    resp.kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease))
        .collect()
}

/// Reads a whole snapshot stream: the body, the checksum message, the header revision. Checks
/// `remaining_bytes` counts the body down to 0 and the checksum comes last, 32 bytes.
async fn read_snapshot(mut stream: SnapshotStreaming) -> (Vec<u8>, i64) {
    let mut body = Vec::new();
    let mut messages = Vec::new();
    while let Some(m) = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("snapshot message in time")
        .expect("snapshot stream")
    {
        let revision = m.header().map(|h| h.revision()).expect("every message has a header");
        messages.push((m.remaining_bytes(), m.blob().to_vec(), revision));
    }
    let (checksum, body_messages) = messages.split_last().expect("at least one message");
    let total: usize = body_messages.iter().map(|(_, b, _)| b.len()).sum();
    for (remaining, blob, _) in body_messages {
        body.extend_from_slice(blob);
        assert_eq!(*remaining as usize, total - body.len(), "remaining_bytes counts down the body");
        assert!(blob.len() <= 32 * 1024, "chunks of etcd's 32 KiB");
    }
    assert_eq!((checksum.0, checksum.1.len()), (0, 32), "the last message is the 32-byte sha256");
    let revision = messages[0].2;
    assert!(messages.iter().all(|m| m.2 == revision), "one revision in every header");
    assert_eq!(body.len() % 512, 0, "the body is 512-byte aligned");
    body.extend_from_slice(&checksum.1);
    (body, revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_snapshot_under_writes_and_watch_restores_at_exactly_its_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let port = wire::free_port();
    let data2 = data.clone();
    let _server = tokio::task::spawn_blocking(move || start_watchkv(&data2, port, &[])).await.expect("start");
    let mut client = connect(port).await;

    // History: versions, a delete, a leased key, a lease with no keys, values of many sizes.
    let lease = client.lease_grant(600, None).await.expect("grant").id();
    let idle_lease = client.lease_grant(900, None).await.expect("grant").id();
    for i in 0..300 {
        let value = format!("v{i}-").repeat(1 + i % 40);
        client.put(format!("k/{:03}", i % 60), value, None).await.expect("put");
    }
    client.put("leased", "L", Some(PutOptions::new().with_lease(lease))).await.expect("leased put");
    client.delete("k/007", None).await.expect("delete");
    let compact_at = client.put("k/001", "after", None).await.expect("put").header().expect("header").revision() - 40;
    client.compact(compact_at, Some(CompactionOptions::new().with_physical())).await.expect("compact");

    // A writer and a watcher that keep going through the snapshot.
    let stop = Arc::new(AtomicBool::new(false));
    let (ack_tx, mut acks) = mpsc::unbounded_channel::<i64>();
    let mut writer_client = client.clone();
    let writer_stop = Arc::clone(&stop);
    let writer = tokio::spawn(async move {
        let mut i = 0u64;
        while !writer_stop.load(Ordering::Relaxed) {
            let r = writer_client.put(format!("live/{i}"), format!("w{i}"), None).await.expect("live put");
            let _ = ack_tx.send(r.header().expect("header").revision());
            i += 1;
        }
    });
    let first_live = acks.recv().await.expect("a first live put");
    let mut watch = client
        .watch("live/", Some(WatchOptions::new().with_prefix().with_start_revision(first_live)))
        .await
        .expect("watch");

    // One more acknowledged write first, so that the snapshot falls among the live writes
    // however quickly it is asked for.
    let second_live = tokio::time::timeout(DEADLINE, acks.recv()).await.expect("writes go on").expect("writer alive");
    let stream = client.snapshot().await.expect("snapshot");
    let (file_bytes, at) = read_snapshot(stream).await;
    assert!(at >= second_live, "the snapshot {at} is at or after the second live write {second_live}");
    assert!(at > first_live, "the snapshot {at} is after the first live write {first_live}");

    // Writes went on during and after the snapshot, and the watcher saw every one, in order.
    let mut acked = vec![first_live, second_live];
    while acked.last().is_none_or(|&r| r < at + 20) {
        acked.push(tokio::time::timeout(DEADLINE, acks.recv()).await.expect("writes go on").expect("writer alive"));
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    acked.extend(std::iter::from_fn(|| acks.try_recv().ok()));
    let last = *acked.last().expect("acks");
    let mut seen = Vec::new();
    while seen.last().is_none_or(|&r| r < last) {
        let resp = tokio::time::timeout(DEADLINE, watch.message())
            .await
            .expect("watch in time")
            .expect("watch")
            .expect("open");
        for e in resp.events() {
            assert_eq!(e.event_type(), EventType::Put);
            seen.push(e.kv().expect("kv").mod_revision());
        }
    }
    assert_eq!(seen, acked, "the watcher saw exactly the acknowledged writes, in order");

    // The file: status, restore, and the restored store is the source at `at`.
    let file = dir.path().join("grpc.snap");
    std::fs::write(&file, &file_bytes).expect("write file");
    let status = status_json(&file);
    assert_eq!(status["revision"], at);
    assert_eq!(status["compactRevision"], compact_at);
    assert_eq!(status["totalSize"], file_bytes.len());
    assert_eq!(status["keyspaces"]["lease"], 2);
    let expected = rows_at(&mut client, at).await;
    let expected_at_compact = rows_at(&mut client, compact_at).await;
    assert!(expected.iter().any(|r| r.0 == b"leased" && r.5 == lease));
    assert!(!expected.iter().any(|r| r.0 == b"k/007"));

    let restored_dir = dir.path().join("restored");
    restore(&file, &restored_dir);
    let restored = KvStore::open(StoreConfig::new(&restored_dir)).expect("open the restored store");
    assert_eq!((restored.current_rev(), restored.compact_rev()), (at, compact_at));
    assert_eq!(store_rows(&restored, 0), expected, "every key at the snapshot revision");
    assert_eq!(store_rows(&restored, compact_at), expected_at_compact, "history back to the compact revision");
    let below = store_rows_err(&restored, compact_at - 1);
    assert!(below.contains("required revision has been compacted"), "{below}");
    assert_eq!(
        {
            let mut ids = restored.leases();
            ids.sort_unstable();
            ids
        },
        {
            let mut ids = vec![lease, idle_lease];
            ids.sort_unstable();
            ids
        }
    );
    let now = std::time::Instant::now();
    let ttl = restored.lease_time_to_live(lease, now, true).expect("lease");
    assert_eq!((ttl.granted_ttl, ttl.keys), (600, vec![b"leased".to_vec()]));
    assert_eq!(restored.lease_time_to_live(idle_lease, now, false).expect("idle lease").granted_ttl, 900);

    // A second restore into the same (now non-empty) directory is refused.
    let out = watchkv(&["snapshot", "restore", &file.to_string_lossy(), "--data-dir", &restored_dir.to_string_lossy()]);
    assert!(!out.status.success() && text(&out).contains("not empty"), "{}", text(&out));
}

fn store_rows_err(store: &KvStore, revision: i64) -> String {
    let mut req = RangeRequest::new(KeyRange::FromKey(vec![0]));
    req.revision = revision;
    store.range(&req).map(|_| String::from("no error")).unwrap_or_else(|e| e.to_string())
}

/// Runs etcd 3.4.23's etcdctl against `port`.
fn etcdctl(port: u16, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{port}"))
        .arg("--command-timeout=20s")
        .arg("--dial-timeout=20s")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running etcdctl (install Debian's etcd-client; scripts/test.sh does): {e}"))
}

#[test]
fn etcdctl_snapshot_save_and_the_gateway_stream_restore_with_watchkv() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = start_watchkv(&data, wire::free_port(), &[]);
    let port = server.port;
    let mut expected = BTreeMap::new();
    for i in 0..50 {
        let (key, value) = (format!("e/{i:02}"), "x".repeat(i * 37));
        let out = etcdctl(port, &["put", &key, &value]);
        assert!(out.status.success(), "put: {}", text(&out));
        expected.insert(key.into_bytes(), value.into_bytes());
    }
    let out = etcdctl(port, &["get", "e/", "--prefix", "-w", "json"]);
    let at = serde_json::from_slice::<Value>(&out.stdout).expect("get JSON")["header"]["revision"]
        .as_i64()
        .expect("revision");

    // etcdctl snapshot save completes and writes the file.
    let file = dir.path().join("etcdctl.db");
    let out = etcdctl(port, &["snapshot", "save", &file.to_string_lossy()]);
    assert!(out.status.success(), "etcdctl snapshot save: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Snapshot saved at"), "{}", text(&out));
    let status = status_json(&file);
    assert_eq!(status["revision"], at);
    assert_eq!(status["compactRevision"], -1);
    assert_eq!(status["keyspaces"]["kv"], 50);
    // etcdctl's own status reads a bbolt file: not ours (docs/etcd-semantics.md §14).
    let theirs = etcdctl(port, &["snapshot", "status", &file.to_string_lossy()]);
    assert!(!theirs.status.success(), "etcdctl read a watchkv snapshot: {}", text(&theirs));

    let restored_dir = dir.path().join("restored");
    restore(&file, &restored_dir);
    let restored = KvStore::open(StoreConfig::new(&restored_dir)).expect("open the restored store");
    assert_eq!(restored.current_rev(), at);
    let got: BTreeMap<Vec<u8>, Vec<u8>> = store_rows(&restored, 0).into_iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(got, expected);

    // The gateway streams the same format: one JSON line per message, the checksum last.
    let reply = wire::try_post(port, "/v3/maintenance/snapshot", b"{}").expect("gateway snapshot");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let lines = reply.json_lines();
    let mut bytes = Vec::new();
    for line in &lines {
        let r = &line["result"];
        assert_eq!(wire::int(&r["header"], "revision"), at, "{line}");
        bytes.extend(wire::unb64(r["blob"].as_str().expect("blob")));
    }
    assert_eq!(lines.last().map(|l| l["result"]["blob"].as_str().map(|b| wire::unb64(b).len())), Some(Some(32)));
    let from_gateway = dir.path().join("gateway.db");
    std::fs::write(&from_gateway, &bytes).expect("write");
    assert_eq!(status_json(&from_gateway)["revision"], at);
    assert_eq!(bytes, std::fs::read(&file).expect("read"), "the same store gives the same bytes");
}

/// What one etcdctl command printed, for comparison: success, stdout (JSON lines without the
/// identity fields), and the last `Error:` line of stderr.
fn printed(out: &Output) -> (bool, String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(mut v) if v.is_object() => {
                drop_identity(&mut v);
                v.to_string()
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr.lines().rev().find(|l| l.starts_with("Error:")).unwrap_or("").to_string();
    (out.status.success(), stdout, error)
}

/// Runs `args` with etcdctl on both ports and asserts they printed the same.
fn same_on_both(ports: (u16, u16), args: &[&str]) -> (bool, String, String) {
    let (e, w) = (printed(&etcdctl(ports.0, args)), printed(&etcdctl(ports.1, args)));
    assert_eq!(w, e, "etcdctl {args:?}: watchkv (left) and etcd (right) differ");
    e
}

/// etcd 3.4 serving `127.0.0.1:<client>` over `data_dir` as it is (a restored member's
/// directory: `start_etcd` would start afresh).
fn start_etcd_on(data_dir: &Path, client: u16, peer: u16) -> Proc {
    let mut cmd = etcd_member_command(
        &etcd_binary(),
        data_dir,
        &format!("http://127.0.0.1:{client}"),
        &format!("http://127.0.0.1:{peer}"),
    );
    let log = data_dir.with_extension("log");
    let out = std::fs::File::create(&log).expect("etcd log");
    let err = out.try_clone().expect("etcd log");
    let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("spawn etcd");
    let mut proc = Proc { child, port: client, log, name: "etcd".into() };
    wire::wait_until_serving(client, "restored etcd", || proc.exited());
    proc
}

/// The backup round trip as etcd's documentation gives it, on etcd 3.4.23 and on watchkv with
/// the same commands: `etcdctl snapshot save`, writes after it, `snapshot status` and `snapshot
/// restore` (etcdctl's on etcd's bbolt file, watchkv's on its own file, which etcdctl cannot
/// read), a server on the restored directory, and `etcdctl get` there: the same keys, values,
/// revisions and compaction on both, exactly at the snapshot's revision.
#[test]
fn etcdctl_snapshot_save_restore_status_get_matches_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let watchkv = start_watchkv(&dir.path().join("watchkv"), free_port(), &[]);
    let ports = (etcd.port, watchkv.port);
    for args in [
        &["put", "k/1", "one"][..],
        &["put", "k/2", "two"],
        &["put", "k/1", "one again"],
        &["del", "k/2"],
        &["put", "k/3", "three"],
        &["compaction", "--physical", "3"],
        &["put", "k/4", "four"],
    ] {
        assert!(same_on_both(ports, args).0, "etcdctl {args:?}");
    }
    // Revisions 2 to 7: the five writes before the compaction and the put after it.
    let at = 7;
    let mut files = Vec::new();
    for (name, port) in [("etcd", ports.0), ("watchkv", ports.1)] {
        let file = dir.path().join(format!("{name}.db"));
        let out = etcdctl(port, &["snapshot", "save", &file.to_string_lossy()]);
        assert!(out.status.success(), "{name}: etcdctl snapshot save: {}", text(&out));
        files.push(file);
    }
    // Writes after the save are not in the snapshot.
    same_on_both(ports, &["put", "k/1", "after the snapshot"]);
    same_on_both(ports, &["del", "k/3"]);
    drop((etcd, watchkv));

    // Status: etcdctl's of etcd's file, watchkv's of watchkv's; etcdctl cannot read ours.
    let out = etcdctl(ports.0, &["snapshot", "status", &files[0].to_string_lossy(), "-w", "json"]);
    assert!(out.status.success(), "etcdctl snapshot status: {}", text(&out));
    let etcd_status: Value = serde_json::from_slice(&out.stdout).expect("etcdctl status JSON");
    assert_eq!((etcd_status["revision"].as_i64(), status_json(&files[1])["revision"].as_i64()), (Some(at), Some(at)));
    let theirs = etcdctl(ports.1, &["snapshot", "status", &files[1].to_string_lossy()]);
    assert!(!theirs.status.success(), "etcdctl read a watchkv snapshot: {}", text(&theirs));

    // Restore: each into a fresh directory, then a server on it.
    let (etcd_dir, watchkv_dir) = (dir.path().join("etcd-restored"), dir.path().join("watchkv-restored"));
    let (client, peer) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{peer}");
    let out = etcdctl(
        ports.0,
        &[
            "snapshot",
            "restore",
            &files[0].to_string_lossy(),
            "--data-dir",
            &etcd_dir.to_string_lossy(),
            "--initial-cluster",
            &format!("default={peer_url}"),
            "--initial-advertise-peer-urls",
            &peer_url,
        ],
    );
    assert!(out.status.success(), "etcdctl snapshot restore: {}", text(&out));
    restore(&files[1], &watchkv_dir);
    let etcd = start_etcd_on(&etcd_dir, client, peer);
    let watchkv = start_watchkv(&watchkv_dir, free_port(), &[]);
    let ports = (etcd.port, watchkv.port);

    // Get: the state at the snapshot's revision, its history back to the compaction, nothing
    // below it.
    let (_, all, _) = same_on_both(ports, &["get", "", "--prefix", "-w", "json"]);
    let all: Value = serde_json::from_str(&all).expect("get JSON");
    assert_eq!(all["header"]["revision"].as_i64(), Some(at), "restored at the snapshot's revision: {all}");
    assert_eq!(all["count"].as_i64(), Some(3), "k/1, k/3 and k/4: {all}");
    same_on_both(ports, &["get", "k/1"]);
    same_on_both(ports, &["get", "k/", "--prefix", "--rev", "3", "-w", "json"]);
    same_on_both(ports, &["get", "k/", "--prefix", "--rev", "5"]);
    let (ok, _, error) = same_on_both(ports, &["get", "k/1", "--rev", "2"]);
    assert!(!ok && error.contains("required revision has been compacted"), "{error}");
    // And both go on from there.
    let (_, put, _) = same_on_both(ports, &["put", "k/5", "five", "-w", "json"]);
    assert!(put.contains(&format!("\"revision\":{}", at + 1)), "{put}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_snapshot_stream_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let port = wire::free_port();
    let data2 = data.clone();
    let mut server = tokio::task::spawn_blocking(move || start_watchkv(&data2, port, &["--durability", "fsync"]))
        .await
        .expect("start");
    let mut client = connect(port).await;
    // 16 MiB of values: far more than the stream's buffers, so it is mid-way while unread.
    let mut acked: Vec<(String, String, i64)> = Vec::new();
    for i in 0..16 {
        let value = format!("{i:x}").repeat(1 << 20);
        let rev =
            client.put(format!("big/{i}"), value.clone(), None).await.expect("big put").header().expect("h").revision();
        acked.push((format!("big/{i}"), value, rev));
    }
    let mut stream = client.snapshot().await.expect("snapshot");
    let first =
        tokio::time::timeout(DEADLINE, stream.message()).await.expect("first message").expect("stream").expect("open");
    assert!(first.remaining_bytes() > 8 << 20, "the stream has barely started: {}", first.remaining_bytes());

    // Writes acknowledged while the stream is open, then a kill -9 with it half sent.
    for i in 0..50 {
        let value = format!("during-{i}");
        let rev =
            client.put(format!("during/{i}"), value.clone(), None).await.expect("put").header().expect("h").revision();
        acked.push((format!("during/{i}"), value, rev));
    }
    server.kill9();
    let rest = async {
        loop {
            match stream.message().await {
                Ok(Some(m)) if m.remaining_bytes() == 0 && m.blob().len() == 32 => return Ok(()),
                Ok(Some(_)) => {}
                Ok(None) => return Err("the stream ended without its checksum".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let ended = tokio::time::timeout(DEADLINE, rest).await.expect("the stream ends once the server is gone");
    assert!(ended.is_err(), "a stream cut by kill -9 must not end like a whole snapshot");
    drop(client);

    let data3 = data.clone();
    let port = wire::free_port();
    let _server = tokio::task::spawn_blocking(move || start_watchkv(&data3, port, &["--durability", "fsync"]))
        .await
        .expect("restart");
    let mut client = connect(port).await;
    for (key, value, rev) in &acked {
        let got = client.get(key.as_str(), Some(GetOptions::new().with_revision(*rev))).await.expect("get");
        let kv = got.kvs().first().unwrap_or_else(|| panic!("acknowledged put of {key} at {rev} lost"));
        assert_eq!((kv.value(), kv.mod_revision()), (value.as_bytes(), *rev), "{key}");
    }
    // And a snapshot of the restarted store is whole.
    let (bytes, at) = read_snapshot(client.snapshot().await.expect("snapshot")).await;
    assert_eq!(at, acked.last().expect("acks").2);
    let file = dir.path().join("after.db");
    std::fs::write(&file, &bytes).expect("write");
    assert_eq!(status_json(&file)["revision"], at);
}
