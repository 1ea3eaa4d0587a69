//! The Rust `etcd-client` crate (tonic, the client most Rust services use) against the
//! `watchkv` binary's gRPC API: KV calls, a watch with `prev_kv` and a filter, a progress
//! request, a cancel, leases, and a resume after a server restart from the last seen revision
//! + 1 with no gap and no duplicate.
//!
//! Each runs on a node of its own and on a mirror (`watchkv --upstream`, docs/etcd-semantics.md
//! §18) of a fresh etcd 3.4.23, which forwards the writes and leases and answers the reads and
//! watches itself, with the same results.

mod wire;

use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchFilterType, WatchOptions, WatchResponse,
    WatchStream,
};
use watchkv::config::DEFAULT_MAX_BATCH_BYTES;
use wire::{start_etcd, start_watchkv, DEADLINE};

async fn connect(port: u16) -> Client {
    let opts = ConnectOptions::new().with_connect_timeout(DEADLINE).with_timeout(DEADLINE);
    Client::connect([format!("127.0.0.1:{port}")], Some(opts)).await.expect("connect etcd-client")
}

/// The next response on `stream`, failing after the deadline.
async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a watch response within the deadline")
        .expect("watch stream error")
        .expect("watch stream ended")
}

/// `(type, key, value, prev value)` of every event in `resp`.
fn events(resp: &WatchResponse) -> Vec<(EventType, String, String, Option<String>)> {
    resp.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("event kv");
            (
                e.event_type(),
                kv.key_str().unwrap_or("?").to_string(),
                kv.value_str().unwrap_or("?").to_string(),
                e.prev_kv().map(|p| p.value_str().unwrap_or("?").to_string()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_crate_kv_watch_progress_cancel_and_resume_after_restart() {
    scenario(false).await;
}

/// The same against a mirror of a fresh etcd (the mirror is what restarts; its upstream stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_crate_on_a_mirror_kv_watch_progress_cancel_and_resume_after_restart() {
    scenario(true).await;
}

async fn scenario(mirror: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let port = wire::free_port();
    let upstream_dir = dir.path().join("upstream");
    let upstream = if mirror {
        Some(tokio::task::spawn_blocking(move || start_etcd(&upstream_dir)).await.expect("start etcd"))
    } else {
        None
    };
    // With the default fsync durability; a mirror bootstraps from its empty upstream first.
    let mut args: Vec<String> =
        upstream.iter().flat_map(|u| ["--upstream".to_string(), format!("http://127.0.0.1:{}", u.port)]).collect();
    args.extend(["--progress-notify-interval-ms".to_string(), "500".to_string()]);
    let (data2, args2) = (data.clone(), args.clone());
    let mut server = tokio::task::spawn_blocking(move || {
        start_watchkv(&data2, port, &args2.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("start");
    let mut client = connect(port).await;

    // KV through the crate's typed API.
    let put = client.put("a", "1", None).await.expect("put");
    let first_rev = put.header().expect("header").revision();
    assert_eq!(first_rev, 2, "the first write of an empty store is revision 2");
    let prev = client.put("a", "2", Some(PutOptions::new().with_prev_key())).await.expect("put prev");
    assert_eq!(prev.prev_key().map(|kv| kv.value().to_vec()), Some(b"1".to_vec()));
    let got = client.get("a", Some(GetOptions::new().with_revision(first_rev))).await.expect("get at rev");
    assert_eq!(got.kvs()[0].value(), b"1");
    let err = client.get("a", Some(GetOptions::new().with_revision(1000))).await.expect_err("future revision");
    assert!(err.to_string().contains("required revision is a future revision"), "{err}");

    // A watch with prev_kv that drops deletes.
    let opts = WatchOptions::new().with_prefix().with_prev_key().with_filters([WatchFilterType::NoDelete]);
    let mut stream = client.watch("w/", Some(opts)).await.expect("watch");
    let created = next(&mut stream).await;
    assert!(created.created(), "first response is the create: {created:?}");
    let watch_id = created.watch_id();
    client.put("w/1", "x", None).await.expect("put");
    client.put("w/1", "y", None).await.expect("put");
    client.delete("w/1", None).await.expect("delete");
    let last = client.put("w/2", "z", None).await.expect("put").header().expect("header").revision();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let resp = next(&mut stream).await;
        assert_eq!(resp.watch_id(), watch_id);
        seen.extend(events(&resp));
    }
    assert_eq!(
        seen,
        vec![
            (EventType::Put, "w/1".into(), "x".into(), None),
            (EventType::Put, "w/1".into(), "y".into(), Some("x".into())),
            (EventType::Put, "w/2".into(), "z".into(), None),
        ],
        "the DELETE is filtered out and prev_kv is present where there was one"
    );

    // A progress request on a synced stream answers with the current revision, no events.
    stream.request_progress().await.expect("progress request");
    let progress = next(&mut stream).await;
    assert!(progress.events().is_empty() && !progress.created() && !progress.canceled(), "{progress:?}");
    assert_eq!(progress.header().map(|h| h.revision()), Some(last));

    // Cancel: answered with `canceled`, and nothing more arrives for that id.
    stream.cancel(watch_id).await.expect("cancel");
    let canceled = next(&mut stream).await;
    assert!(canceled.canceled() && canceled.watch_id() == watch_id, "{canceled:?}");
    client.put("w/3", "after cancel", None).await.expect("put");
    stream.request_progress().await.expect("progress request");
    // A stream with no watchers has nothing to report: the only way to prove silence is a
    // bounded wait, which is what the assertion states (no event may arrive).
    if let Ok(Ok(Some(resp))) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        assert!(resp.events().is_empty(), "an event arrived after the cancel: {resp:?}");
    }

    // Leases.
    let lease = client.lease_grant(60, None).await.expect("grant");
    client.put("leased", "v", Some(PutOptions::new().with_lease(lease.id()))).await.expect("put with lease");
    let ttl = client.lease_time_to_live(lease.id(), None).await.expect("ttl");
    assert!(ttl.ttl() > 50 && ttl.granted_ttl() == 60, "{ttl:?}");
    client.lease_revoke(lease.id()).await.expect("revoke");
    assert!(client.get("leased", None).await.expect("get").kvs().is_empty(), "revoking deletes the key");
    let err = client.lease_revoke(lease.id()).await.expect_err("revoke twice");
    assert!(err.to_string().contains("requested lease not found"), "{err}");

    // Resume after a restart: read up to r/3, write r/4 and r/5 without reading them, kill the
    // server (every acknowledged write is on disk with the default fsync durability), restart
    // it, and resume from the last seen revision + 1.
    let mut stream = client.watch("r/", Some(WatchOptions::new().with_prefix())).await.expect("watch r/");
    assert!(next(&mut stream).await.created());
    for i in 1..=3 {
        client.put(format!("r/{i}"), format!("v{i}"), None).await.expect("put");
    }
    let mut last_seen = 0;
    let mut got = Vec::new();
    while got.len() < 3 {
        let resp = next(&mut stream).await;
        for e in resp.events() {
            let kv = e.kv().expect("kv");
            got.push(kv.key_str().unwrap_or("?").to_string());
            last_seen = kv.mod_revision();
        }
    }
    assert_eq!(got, ["r/1", "r/2", "r/3"]);
    for i in 4..=5 {
        client.put(format!("r/{i}"), format!("v{i}"), None).await.expect("put");
    }
    drop(stream);
    server.kill9();
    let data2 = data.clone();
    let _server = tokio::task::spawn_blocking(move || {
        start_watchkv(&data2, port, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("restart");
    let mut client = connect(port).await;
    let opts = WatchOptions::new().with_prefix().with_start_revision(last_seen + 1);
    let mut stream = client.watch("r/", Some(opts)).await.expect("resume watch");
    assert!(next(&mut stream).await.created());
    client.put("r/6", "v6", None).await.expect("put after restart");
    let mut resumed = Vec::new();
    while resumed.len() < 3 {
        let resp = next(&mut stream).await;
        for e in resp.events() {
            let kv = e.kv().expect("kv");
            resumed.push((kv.key_str().unwrap_or("?").to_string(), kv.mod_revision()));
        }
    }
    let revs: Vec<i64> = resumed.iter().map(|(_, r)| *r).collect();
    assert_eq!(revs, [last_seen + 1, last_seen + 2, last_seen + 3], "no gap, no duplicate: {resumed:?}");
    let keys: Vec<&str> = resumed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["r/4", "r/5", "r/6"]);

    // etcd TestV3WatchProgressOnMemberRestart: after the restart, a resumed watch that asked for
    // progress notifications gets its events, then a notification at least at the last one.
    let opts = WatchOptions::new().with_prefix().with_start_revision(last_seen + 1).with_progress_notify();
    let mut notified = client.watch("r/", Some(opts)).await.expect("watch with progress notify");
    assert!(next(&mut notified).await.created());
    let mut revisions = Vec::new();
    let progress = loop {
        let resp = next(&mut notified).await;
        if resp.events().is_empty() {
            break resp;
        }
        revisions.extend(resp.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()));
    };
    assert_eq!(revisions, [last_seen + 1, last_seen + 2, last_seen + 3], "{progress:?}");
    assert!(progress.header().is_some_and(|h| h.revision() >= last_seen + 3), "{progress:?}");

    if !mirror {
        // etcd TestWatchResumeCompacted: resumed from a revision compacted after the restart, a
        // watch gets the compaction notice and no event; from the compact revision, every event
        // from it on, in order. (A mirror's compaction is upstream's, not its own history's.)
        let compact_at = last_seen + 2;
        client.compact(compact_at, None).await.expect("compact");
        let opts = WatchOptions::new().with_prefix().with_start_revision(last_seen + 1);
        let mut compacted = client.watch("r/", Some(opts)).await.expect("watch from a compacted revision");
        let notice = loop {
            let resp = next(&mut compacted).await;
            assert!(resp.events().is_empty(), "an event from a compacted revision: {resp:?}");
            if resp.canceled() {
                break resp;
            }
        };
        assert_eq!(notice.compact_revision(), compact_at, "{notice:?}");
        let opts = WatchOptions::new().with_prefix().with_start_revision(compact_at);
        let mut from_compact = client.watch("r/", Some(opts)).await.expect("watch from the compact revision");
        assert!(next(&mut from_compact).await.created());
        let mut revisions = Vec::new();
        while revisions.len() < 2 {
            let resp = next(&mut from_compact).await;
            revisions.extend(resp.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()));
        }
        assert_eq!(revisions, [compact_at, compact_at + 1]);
    }
}

/// A watch from history over revisions whose events together exceed 4 MiB, tonic's default
/// limit for one decoded message (the `etcd-client` crate keeps it): the catch-up arrives in
/// responses of at most `max_batch_bytes` of events, every revision once and in order, none
/// split. etcd 3.4.23 sends those 600 revisions as one response of 4.9 MB, which this client
/// refuses (`OutOfRange`: "decoded message length too large").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_larger_than_the_clients_message_limit_arrives_whole() {
    const PUTS: usize = 600;
    const VALUE: usize = 8 * 1024;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let port = wire::free_port();
    let mut server = tokio::task::spawn_blocking(move || start_watchkv(&data, port, &["--durability", "buffered"]))
        .await
        .expect("start");
    let mut client = connect(port).await;
    let mut first = 0;
    for i in 0..PUTS {
        let value = vec![b'a' + (i % 26) as u8; VALUE];
        let rev =
            client.put(format!("big/{i:04}"), value, None).await.expect("put").header().expect("header").revision();
        if i == 0 {
            first = rev;
        }
    }
    let opts = WatchOptions::new().with_prefix().with_start_revision(first);
    let mut stream = client.watch("big/", Some(opts)).await.expect("watch");
    assert!(next(&mut stream).await.created(), "the first response is the create");
    let mut revisions = Vec::new();
    let mut responses = 0;
    while revisions.len() < PUTS {
        let resp = next(&mut stream).await;
        responses += 1;
        let mut bytes = 0;
        for e in resp.events() {
            let kv = e.kv().expect("event kv");
            assert_eq!(kv.value().len(), VALUE);
            bytes += kv.key().len() + kv.value().len();
            revisions.push(kv.mod_revision());
        }
        assert!(bytes <= DEFAULT_MAX_BATCH_BYTES, "a response of {bytes} bytes of keys and values");
    }
    let want: Vec<i64> = (first..first + PUTS as i64).collect();
    assert_eq!(revisions, want, "every revision once, in order");
    assert!(responses >= PUTS * VALUE / DEFAULT_MAX_BATCH_BYTES, "{responses} responses");
    server.kill9();
}
