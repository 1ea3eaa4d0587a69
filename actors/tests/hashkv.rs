//! `HashKV` against real etcd 3.4.23: the same operations (puts, overwrites, deletes, a txn,
//! leased keys, compactions, one of them at a delete's revision) on both servers give the same
//! hash at every revision both can hash, and watchkv's hash is the same after a restart. Also
//! `Hash` (whole store) and the gateway's routes for both.

mod wire;

use std::collections::BTreeMap;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, LeaseGrantOptions, PutOptions, Txn,
    TxnOp,
};
use serde_json::json;
use wire::{free_port, post, start_etcd, start_watchkv, DEADLINE};

async fn connect(port: u16) -> Client {
    let opts = ConnectOptions::new().with_connect_timeout(DEADLINE).with_timeout(DEADLINE);
    Client::connect([format!("127.0.0.1:{port}")], Some(opts)).await.expect("connect etcd-client")
}

/// The same writes on one server; returns the revision each step left the store at.
async fn apply_history(c: &mut Client) -> BTreeMap<&'static str, i64> {
    let mut revs = BTreeMap::new();
    for i in 0..20 {
        let r = c.put(format!("k/{i:02}"), format!("v{i}"), None).await.expect("put");
        revs.insert("puts", r.header().map_or(0, |h| h.revision()));
    }
    for i in 0..5 {
        c.put(format!("k/{i:02}"), format!("again{i}"), None).await.expect("overwrite");
    }
    c.put("empty", "", None).await.expect("empty value");
    c.lease_grant(600, Some(LeaseGrantOptions::new().with_id(0x1234))).await.expect("lease grant");
    let r = c.put("leased", "l", Some(PutOptions::new().with_lease(0x1234))).await.expect("leased put");
    revs.insert("leased", r.header().map_or(0, |h| h.revision()));
    let r = c.delete("k/03", None).await.expect("delete");
    revs.insert("single delete", r.header().map_or(0, |h| h.revision()));
    c.delete("k/1", Some(DeleteOptions::new().with_prefix())).await.expect("prefix delete");
    let txn = Txn::new().when([Compare::value("k/00", CompareOp::Equal, "again0")]).and_then([
        TxnOp::put("t/a", "1", None),
        TxnOp::put("t/b", "2", None),
        TxnOp::delete("k/04", None),
    ]);
    let r = c.txn(txn).await.expect("txn");
    revs.insert("txn", r.header().map_or(0, |h| h.revision()));
    // Compact below a later rewrite of the same keys, so rows below the compact revision are
    // hashed only when a compaction at the hash revision would keep them.
    let r = c.compact(revs["txn"] - 2, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    revs.insert("first compaction", r.header().map_or(0, |h| h.revision()));
    for i in 0..3 {
        c.put(format!("k/{i:02}"), format!("third{i}"), None).await.expect("rewrite");
    }
    let r = c.delete("t/a", None).await.expect("delete t/a");
    revs.insert("delete t/a", r.header().map_or(0, |h| h.revision()));
    let r = c.put("late", "x", None).await.expect("late put");
    revs.insert("late", r.header().map_or(0, |h| h.revision()));
    revs
}

/// `(hash, compact revision)` of `HashKV` at `revision`, or the error's text.
async fn hash_kv(c: &mut Client, revision: i64) -> Result<(u32, i64), String> {
    c.maintenance_client().hash_kv(revision).await.map(|r| (r.hash(), r.compact_version())).map_err(|e| e.to_string())
}

/// The hash `etcdctl endpoint hashkv -w json` reports, with an `http://` endpoint.
fn etcdctl_hashkv(port: u16) -> u64 {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://127.0.0.1:{port}"))
        .args(["endpoint", "hashkv", "-w", "json"])
        .output()
        .expect("run etcdctl");
    assert!(out.status.success(), "etcdctl endpoint hashkv: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v[0]["HashKV"]["hash"].as_u64().unwrap_or_else(|| panic!("no hash in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_matches_etcd_before_and_after_compaction_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (etcd_dir, wk_dir) = (dir.path().join("etcd"), dir.path().join("watchkv"));
    let etcd = tokio::task::spawn_blocking(move || start_etcd(&etcd_dir)).await.expect("start etcd");
    let port = free_port();
    let wk_dir2 = wk_dir.clone();
    let mut watchkv = tokio::task::spawn_blocking(move || start_watchkv(&wk_dir2, port, &[])).await.expect("start");
    let (mut e, mut w) = (connect(etcd.port).await, connect(port).await);

    assert_eq!(hash_kv(&mut e, 0).await, hash_kv(&mut w, 0).await, "an empty store");
    let (e_revs, w_revs) = (apply_history(&mut e).await, apply_history(&mut w).await);
    assert_eq!(e_revs, w_revs, "the same history takes the same revisions");
    let compact = w_revs["txn"] - 2;
    let latest = w_revs["late"];

    // Every revision both servers can hash: etcd 3.4 refuses the compact revision itself
    // (`rev <= compactRev`), which etcd 3.5 and watchkv hash.
    let mut compared = Vec::new();
    for rev in std::iter::once(0).chain(compact + 1..=latest) {
        let (eh, wh) = (hash_kv(&mut e, rev).await, hash_kv(&mut w, rev).await);
        assert!(eh.is_ok(), "etcd hashes revision {rev}: {eh:?}");
        assert_eq!(wh, eh, "HashKV at revision {rev}");
        compared.push((rev, wh));
    }
    // etcdctl's `endpoint hashkv` (which dials with the endpoint as written) agrees.
    let e_port = etcd.port;
    let (e_ctl, w_ctl) =
        tokio::task::spawn_blocking(move || (etcdctl_hashkv(e_port), etcdctl_hashkv(port))).await.expect("etcdctl");
    assert_eq!(w_ctl, e_ctl, "etcdctl endpoint hashkv");
    let at_compact = hash_kv(&mut w, compact).await;
    assert!(matches!(at_compact, Ok((_, c)) if c == compact), "the compact revision is hashed: {at_compact:?}");
    for (server, c) in [("etcd", &mut e), ("watchkv", &mut w)] {
        let below = hash_kv(c, compact - 1).await;
        assert!(matches!(&below, Err(m) if m.contains("required revision has been compacted")), "{server}: {below:?}");
        let future = hash_kv(c, latest + 10).await;
        assert!(
            matches!(&future, Err(m) if m.contains("required revision is a future revision")),
            "{server}: {future:?}"
        );
    }

    // The gateway: etcd 3.4's /v3/maintenance/hash answers Hash (HashKV has the same route and
    // loses); /v3/maintenance/hashkv reaches HashKV here.
    let (e_hash, w_hash) = (
        post(etcd.port, "/v3/maintenance/hash", &json!({})).json(),
        post(port, "/v3/maintenance/hash", &json!({})).json(),
    );
    for v in [&e_hash, &w_hash] {
        assert!(v["hash"].as_u64().is_some_and(|h| h > 0), "Hash answers a number: {v}");
    }
    let kv = post(port, "/v3/maintenance/hashkv", &json!({"revision": latest.to_string()})).json();
    let (want, _) = compared[0].1.clone().expect("hash at 0");
    assert_eq!(kv["hash"].as_u64(), Some(u64::from(want)), "{kv}");
    assert_eq!(kv["hash_revision"], json!(latest.to_string()), "{kv}");
    assert_eq!(kv["compact_revision"], json!(compact.to_string()), "{kv}");

    // Hash: the same store gives the same hash; a write changes it.
    let whole = |c: &mut Client| {
        let mut m = c.maintenance_client();
        async move { m.hash().await.map(|r| r.hash()).expect("Hash") }
    };
    let first = whole(&mut w).await;
    assert_eq!(whole(&mut w).await, first, "Hash of an unchanged store");

    // A restart (SIGKILL: every acknowledged write is on disk) gives the same HashKV.
    watchkv.kill9();
    drop(w);
    let wk_dir2 = wk_dir.clone();
    let _watchkv = tokio::task::spawn_blocking(move || start_watchkv(&wk_dir2, port, &[])).await.expect("restart");
    let mut w = connect(port).await;
    for (rev, before) in &compared {
        assert_eq!(&hash_kv(&mut w, *rev).await, before, "HashKV at {rev} after a restart");
    }
    let after_restart = tokio::task::spawn_blocking(move || etcdctl_hashkv(port)).await.expect("etcdctl");
    assert_eq!(after_restart, w_ctl, "etcdctl endpoint hashkv after the restart");

    // A second compaction, then deletes and a re-creation above it: a row at or below the
    // compact revision counts only if a compaction at the hash revision keeps it, and a
    // tombstone that closes a key's generation is not kept for that (etcd `keyIndex.keep`),
    // so once every key is deleted nothing is filtered at all.
    let mut last = 0;
    for c in [&mut e, &mut w] {
        c.compact(latest, Some(CompactionOptions::new().with_physical())).await.expect("second compaction");
        c.delete("late", None).await.expect("delete late");
        c.delete("", Some(DeleteOptions::new().with_from_key())).await.expect("delete everything");
        let r = c.put("k/00", "back", None).await.expect("re-create");
        last = r.header().map_or(0, |h| h.revision());
    }
    for rev in std::iter::once(0).chain(latest + 1..=last) {
        let (eh, wh) = (hash_kv(&mut e, rev).await, hash_kv(&mut w, rev).await);
        assert!(eh.is_ok(), "etcd hashes revision {rev}: {eh:?}");
        assert_eq!(wh, eh, "HashKV at revision {rev} after deletes above the second compaction");
    }
    w.put("after", "restart", None).await.expect("put");
    assert_ne!(whole(&mut w).await, first, "a write changes Hash");
}
