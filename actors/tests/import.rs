//! `watchkv import --from URL` against a real etcd 3.4.23: a history of overwrites, deletes, a
//! re-created key, a txn of several puts (one revision, several subs), a leased key and a
//! compaction, read back through several pages at one revision R, gives a data directory that
//! `watchkv` serves with exactly etcd's key-values at R (create and mod revisions, versions,
//! values, lease ids), R as header and compact revision (R - 1 is compacted), and R + 1 for the
//! next write. `--prefix` imports only that subtree; a non-empty directory is refused; with
//! auth on upstream, `--user` authenticates and its absence fails cleanly.
//!
//! HashKV is not compared: etcd's hash at R covers history before R that an import does not
//! have (docs/etcd-semantics.md "Importing from etcd").

mod wire;

use std::path::Path;
use std::process::{Command, Output};

use etcd_client::{
    Client, CompactionOptions, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
    WatchResponse, WatchStream,
};
use watchkv::{KeyRange, KvStore, RangeRequest, StoreConfig};
use wire::{free_port, start_etcd, start_watchkv, DEADLINE};

/// `(key, value, create_revision, mod_revision, version, lease)`.
type Row = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

async fn connect(port: u16) -> Client {
    let opts = ConnectOptions::new().with_connect_timeout(DEADLINE).with_timeout(DEADLINE);
    Client::connect([format!("127.0.0.1:{port}")], Some(opts)).await.expect("connect etcd-client")
}

fn watchkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_watchkv")).args(args).env("RUST_LOG", "warn").output().expect("run watchkv")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `watchkv import --from http://127.0.0.1:PORT --data-dir DIR` with `extra` flags.
fn import(port: u16, dir: &Path, extra: &[&str]) -> Output {
    let from = format!("http://127.0.0.1:{port}");
    let mut args = vec!["import", "--from", &from, "--data-dir"];
    let dir = dir.to_string_lossy();
    args.push(&dir);
    args.extend_from_slice(extra);
    watchkv(&args)
}

/// The key-values under `prefix` (everything for `None`) at `revision` (0 = current) on a
/// server, and the response's header revision.
async fn rows_at(client: &mut Client, prefix: Option<&str>, revision: i64) -> (Vec<Row>, i64) {
    let (key, opts) = match prefix {
        Some(p) => (p.as_bytes().to_vec(), GetOptions::new().with_prefix()),
        None => (vec![0], GetOptions::new().with_from_key()),
    };
    let resp = client.get(key, Some(opts.with_revision(revision))).await.expect("get");
    let rows = resp
        .kvs()
        .iter()
        .map(|kv| {
            (kv.key().to_vec(), kv.value().to_vec(), kv.create_revision(), kv.mod_revision(), kv.version(), kv.lease())
        })
        .collect();
    (rows, resp.header().expect("header").revision())
}

/// Every key of `range` at `revision` (0 = current) in a store directory.
fn store_rows(store: &KvStore, range: KeyRange, revision: i64) -> Vec<Row> {
    let mut req = RangeRequest::new(range);
    req.revision = revision;
    let resp = store.range(&req).expect("range");
    resp.kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease))
        .collect()
}

/// The first watch response that `wanted` accepts, within the deadline.
async fn first_message(stream: &mut WatchStream, wanted: impl Fn(&WatchResponse) -> bool) -> WatchResponse {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let message = stream.message().await.expect("watch stream").expect("the stream ended");
            if wanted(&message) {
                return message;
            }
        }
    })
    .await
    .expect("no such watch response within the deadline")
}

/// Writes a history with every kind of change, compacts part of it, and returns R.
async fn write_history(etcd: &mut Client) -> i64 {
    for (k, v) in [("a", "1"), ("b", "1"), ("a", "2"), ("c", "1"), ("p/1", "one"), ("d", "gone")] {
        etcd.put(k, v, None).await.expect("put");
    }
    etcd.delete("c", None).await.expect("delete c");
    etcd.put("c", "reborn", None).await.expect("re-create c");
    etcd.delete("d", None).await.expect("delete d");
    let txn = Txn::new().and_then([
        TxnOp::put("t/1", "x", None),
        TxnOp::put("t/2", "y", None),
        TxnOp::put("p/2", "two", None),
        TxnOp::put("b", "2", None),
    ]);
    etcd.txn(txn).await.expect("txn");
    let lease = etcd.lease_grant(600, None).await.expect("lease grant").id();
    etcd.put("leased", "x", Some(PutOptions::new().with_lease(lease))).await.expect("leased put");
    let compact_at = etcd.put("a", "3", None).await.expect("put").header().expect("header").revision();
    etcd.put("p/1", "uno", None).await.expect("put");
    etcd.compact(compact_at, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    etcd.put("e", "last", None).await.expect("put").header().expect("header").revision()
}

#[tokio::test]
async fn an_import_serves_etcds_key_values_at_r_with_r_as_compact_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd_proc = start_etcd(&dir.path().join("etcd"));
    let mut etcd = connect(etcd_proc.port).await;
    let r = write_history(&mut etcd).await;
    let (upstream, header) = rows_at(&mut etcd, None, r).await;
    assert_eq!(header, r);
    assert!(upstream.iter().any(|row| row.5 != 0), "the history has a leased key");
    let txn_rows = upstream.iter().filter(|row| row.3 == upstream.iter().find(|r| r.0 == b"t/1").expect("t/1").3);
    assert_eq!(txn_rows.count(), 4, "the txn's keys share one mod revision");

    // Pages of two keys: the read goes through several pages at revision R.
    let data = dir.path().join("imported");
    let out = import(etcd_proc.port, &data, &["--page-size", "2"]);
    assert!(out.status.success(), "import: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("imported {} keys", upstream.len())) && stdout.contains(&format!("revision {r},")),
        "{stdout}"
    );

    // A non-empty directory is refused and left alone.
    let again = import(etcd_proc.port, &data, &[]);
    assert!(!again.status.success(), "a second import into the same directory: {}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{}", text(&again));

    let port = free_port();
    let server = start_watchkv(&data, port, &[]);
    let mut local = connect(server.port).await;
    assert_eq!(rows_at(&mut local, None, r).await, (upstream.clone(), r), "key-values at R");
    assert_eq!(rows_at(&mut local, None, 0).await, (upstream.clone(), r), "the current revision is R");
    let below = local.get("a", Some(GetOptions::new().with_revision(r - 1))).await.expect_err("below R");
    assert!(below.to_string().contains("required revision has been compacted"), "{below}");
    // A watch from below R is cancelled with R as compact revision; one from R sees R's put.
    let mut below_stream =
        local.watch("a", Some(WatchOptions::new().with_start_revision(r - 1))).await.expect("watch below R");
    let compacted = first_message(&mut below_stream, |m| m.compact_revision() != 0).await;
    assert_eq!((compacted.compact_revision(), compacted.canceled()), (r, true));
    let mut at_stream = local.watch("e", Some(WatchOptions::new().with_start_revision(r))).await.expect("watch at R");
    let at = first_message(&mut at_stream, |m| !m.events().is_empty()).await;
    let event = &at.events()[0];
    let kv = event.kv().expect("kv");
    assert_eq!((event.event_type(), kv.key(), kv.mod_revision()), (EventType::Put, &b"e"[..], r));
    let status = local.status().await.expect("status");
    assert_eq!(status.header().expect("header").revision(), r);
    // The next local write continues the key's life at R + 1.
    let put = local.put("a", "4", None).await.expect("put");
    assert_eq!(put.header().expect("header").revision(), r + 1);
    let (after, _) = rows_at(&mut local, Some("a"), 0).await;
    let a_upstream = upstream.iter().find(|row| row.0 == b"a").expect("a upstream");
    assert_eq!(after[0], (b"a".to_vec(), b"4".to_vec(), a_upstream.2, r + 1, a_upstream.4 + 1, 0));
    drop(server);

    // `--prefix`: only that subtree, at the same kind of revision.
    let prefixed = dir.path().join("prefixed");
    let out = import(etcd_proc.port, &prefixed, &["--prefix", "p/"]);
    assert!(out.status.success(), "import --prefix: {}", text(&out));
    let (p_upstream, p_header) = rows_at(&mut etcd, Some("p/"), 0).await;
    assert_eq!(p_upstream.len(), 2);
    let store = KvStore::open(StoreConfig::new(&prefixed)).expect("open the prefix import");
    assert_eq!((store.current_rev(), store.compact_rev()), (p_header, p_header));
    assert_eq!(store_rows(&store, KeyRange::FromKey(vec![0]), p_header), p_upstream);
}

#[tokio::test]
async fn an_import_authenticates_with_user_and_fails_cleanly_without() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd_proc = start_etcd(&dir.path().join("etcd"));
    let mut etcd = connect(etcd_proc.port).await;
    etcd.put("secret", "s", None).await.expect("put");
    etcd.user_add("root", "rootpw", None).await.expect("root");
    etcd.user_grant_role("root", "root").await.expect("root role");
    etcd.auth_enable().await.expect("enable auth");

    let denied = dir.path().join("denied");
    let out = import(etcd_proc.port, &denied, &[]);
    assert!(!out.status.success(), "an import without credentials: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user name is empty"), "{}", text(&out));
    assert!(!denied.exists(), "a failed import leaves no directory behind");

    let data = dir.path().join("imported");
    let out = import(etcd_proc.port, &data, &["--user", "root:rootpw"]);
    assert!(out.status.success(), "import --user: {}", text(&out));
    let store = KvStore::open(StoreConfig::new(&data)).expect("open");
    let rows = store_rows(&store, KeyRange::FromKey(vec![0]), 0);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, b"s".to_vec());
}
