//! etcd's watch tests (`mvcc/watchable_store_test.go`, `mvcc/watcher_test.go`, the v3 watch
//! integration tests) ported as message-driven cases, the parts below the wire, each named
//! after its case. A recorder (`watchkv_actors::testing::RecordedStream`) stands for each client
//! stream. One file past the usual length: each test binary links the whole runtime, and the
//! cases share their fixtures.

mod common;

use std::time::Duration;

use common::{wait_stats, TestSystem};
use watchkv::watch::watcher::Filters;
use watchkv::{DeleteRangeRequest, KeyRange, PutRequest, RequestOp, TxnRequest};
use watchkv_actors::protocol::{
    CancelWatch, CloseStream, GetStreamStats, LeaseTick, ProgressTick, RetryTick, SyncTick,
};
use watchkv_actors::WatchCreate;

fn one(k: &str) -> KeyRange {
    KeyRange::single(k)
}

fn ev(rev: i64, key: &str, value: &str) -> (i64, String, String) {
    (rev, key.to_string(), value.to_string())
}

#[actix_rt::test]
async fn a1_a2_a3_watch_is_synced_and_cancel_removes_it_once() {
    let sys = TestSystem::start(true).await;
    sys.put("foo", "bar").await;
    let s = sys.stream();
    let id = s.watch(one("foo"), 0).await;
    let st = sys.handle.stats().await.expect("stats");
    assert_eq!((st.store.synced, st.syncer.unsynced), (1, 0), "start 0 is synced (A1)");
    s.cancel(id).await;
    let log = s.wait_for("canceled", |r| r.iter().any(|x| x.canceled)).await;
    assert_eq!(log.last().map(|r| (r.watch_id, r.canceled, r.revision)), Some((id, true, 2)));
    wait_stats(&sys.handle, "synced empty (A2)", |s| s.store.synced == 0).await;
    // A3: a second cancel of the same id gets no response and changes nothing.
    s.cancel(id).await;
    let after = s.fence(&sys.handle).await;
    assert_eq!(after.iter().filter(|r| r.canceled).count(), 1);
}

#[actix_rt::test]
async fn a4_a9_x10_compacted_watch_gets_notice_and_its_cancel_is_answered() {
    let sys = TestSystem::start(false).await;
    for _ in 0..5 {
        sys.put("foo", "bar").await; // 2..6
    }
    sys.handle.compact(4, false).await.expect("compact");
    let s = sys.stream();
    let id = s.watch(one("foo"), 2).await;
    let log = s.wait_for("compaction notice", |r| r.iter().any(|x| x.compact_revision != 0)).await;
    let notice = log.iter().find(|x| x.compact_revision != 0).expect("notice");
    assert_eq!(
        (
            notice.watch_id,
            notice.canceled,
            notice.compact_revision,
            notice.revision,
            notice.events.len(),
            notice.cancel_reason.as_str()
        ),
        (id, true, 4, 0, 0, ""),
        "X10 shape: canceled, compact_revision, no header revision, no reason"
    );
    wait_stats(&sys.handle, "no watcher left", |s| {
        s.store.synced == 0 && s.store.promoting == 0 && s.syncer.unsynced == 0
    })
    .await;
    // The watcher is gone but its id stays taken until the client cancels it, as in etcd; unlike
    // etcd, progress requests are still answered meanwhile (docs/etcd-semantics.md §10 quirk 4).
    let other = s.watch(one("other"), 0).await;
    assert_ne!(other, id, "an ended watcher's id is not reused before the client cancels it");
    s.request_progress().await;
    s.wait_for("progress", |r| r.iter().any(|x| x.is_progress_notify() && x.watch_id == -1)).await;
    let cancelled =
        |r: &watchkv::watch::response::WatchResponse| r.watch_id == id && r.canceled && r.compact_revision == 0;
    s.cancel(id).await;
    s.wait_for("the cancel of the compacted watcher answered", |r| r.iter().any(cancelled)).await;
    // Cancelled now: a second cancel is an unknown id and gets nothing.
    s.cancel(id).await;
    let after = s.fence(&sys.handle).await;
    assert_eq!(after.iter().filter(|r| cancelled(r)).count(), 1, "{after:?}");
}

#[actix_rt::test]
async fn a5_a16_cancel_close_race_leaves_nothing() {
    let sys = TestSystem::start(false).await;
    sys.put("foo", "bar").await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let s = sys.stream();
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(s.watch(one("foo"), if i % 2 == 0 { 0 } else { 1 }).await);
        }
        streams.push((s, ids));
    }
    let writer = {
        let h = sys.handle.clone();
        actix_rt::spawn(async move {
            for _ in 0..100 {
                h.put(PutRequest::new("foo", "bar")).await.expect("put");
            }
        })
    };
    for (s, ids) in &streams {
        for id in ids.iter().take(5) {
            s.addr().do_send(CancelWatch(*id));
        }
        s.addr().do_send(CloseStream);
    }
    writer.await.expect("writer");
    wait_stats(&sys.handle, "every group empty", |s| {
        s.store.synced == 0
            && s.store.promoting == 0
            && s.syncer.unsynced == 0
            && s.victims.victims == 0
            && s.store.streams == 0
    })
    .await;
}

#[actix_rt::test]
async fn a6_cancel_unsynced() {
    let sys = TestSystem::start(true).await;
    sys.put("foo", "bar").await;
    let s = sys.stream();
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(s.watch(one("foo"), 1).await);
    }
    wait_stats(&sys.handle, "100 unsynced", |s| s.syncer.unsynced == 100).await;
    for id in ids {
        s.cancel(id).await;
    }
    wait_stats(&sys.handle, "unsynced empty", |s| s.syncer.unsynced == 0).await;
}

#[actix_rt::test]
async fn a7_sync_watchers() {
    let sys = TestSystem::with(true, |c| {
        let watch = c.watch().clone().with_chan_buf_len(256);
        c.with_watch(watch)
    })
    .await;
    sys.put("foo", "bar").await;
    let s = sys.stream();
    for _ in 0..100 {
        s.watch(one("foo"), 1).await;
    }
    let st = wait_stats(&sys.handle, "100 unsynced", |s| s.syncer.unsynced == 100).await;
    assert_eq!(st.store.synced, 0);
    let left = sys.handle.syncer_addr().send(SyncTick).await.expect("tick");
    assert_eq!(left, 0);
    wait_stats(&sys.handle, "100 synced", |s| s.store.synced == 100).await;
    let log = s.wait_len(200).await;
    let events: Vec<_> = log.iter().filter(|r| !r.events.is_empty()).collect();
    assert_eq!(events.len(), 100);
    for r in events {
        assert_eq!(r.events.len(), 1);
        let kv = &r.events[0].kv;
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version),
            (&b"foo"[..], &b"bar"[..], 2, 2, 1)
        );
    }
}

#[actix_rt::test]
async fn a10_no_event_loss_on_compact() {
    let sys = TestSystem::with(true, |c| {
        let watch = c.watch().clone().with_chan_buf_len(1).with_max_watchers_per_sync(4);
        c.with_watch(watch)
    })
    .await;
    for _ in 0..10 {
        sys.put("foo", "bar").await; // 2..11
    }
    sys.handle.compact(5, false).await.expect("compact");
    let s = sys.stream();
    for (id, start) in [(1, 1), (2, 1), (3, 6)] {
        let c = s.create(WatchCreate { watch_id: id, ..WatchCreate::new(&one("foo"), start) }).await;
        assert!(!c.canceled);
    }
    // Passes and retries by hand until every watcher is done.
    let start = std::time::Instant::now();
    loop {
        let left = sys.handle.syncer_addr().send(SyncTick).await.expect("tick");
        sys.handle.victim_addr().send(RetryTick).await.expect("tick");
        let st = sys.handle.stats().await.expect("stats");
        if left == 0 && st.victims.victims == 0 && s.events_of(3).len() == 6 {
            break;
        }
        assert!(start.elapsed() < common::DEADLINE, "not caught up: {:#?}", s.responses());
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    let log = s.responses();
    for id in [1, 2] {
        let notices: Vec<_> = log.iter().filter(|r| r.watch_id == id && r.compact_revision != 0).collect();
        assert_eq!(notices.len(), 1, "watcher {id} gets exactly one compaction notice");
        assert_eq!(notices[0].compact_revision, 5);
    }
    let revs: Vec<i64> = s.events_of(3).into_iter().map(|e| e.0).collect();
    assert_eq!(revs, vec![6, 7, 8, 9, 10, 11]);
}

#[actix_rt::test]
async fn a11_f2_watch_future_rev() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    let id = s.watch(one("foo"), 10).await;
    while sys.put("foo", "bar").await < 10 {}
    let log = s.wait_for("event at 10", |r| r.iter().any(|x| !x.events.is_empty())).await;
    let first = log.iter().find(|x| !x.events.is_empty()).expect("events");
    assert_eq!((first.watch_id, first.revision, first.events.len(), first.events[0].kv.mod_revision), (id, 10, 1, 10));
}

#[actix_rt::test]
async fn a13_watch_batch_unsynced_through_the_runtime() {
    let sys = TestSystem::with(true, |c| {
        let watch = c.watch().clone().with_watch_batch_max_revs(4);
        c.with_watch(watch)
    })
    .await;
    for _ in 0..12 {
        sys.put("foo", "foo").await; // 2..13
    }
    let s = sys.stream();
    let id = s.watch(one("foo"), 1).await;
    for _ in 0..3 {
        sys.handle.syncer_addr().send(SyncTick).await.expect("tick");
    }
    let log = s.wait_for("12 events", |r| r.iter().map(|x| x.events.len()).sum::<usize>() == 12).await;
    let batches: Vec<Vec<i64>> = log
        .iter()
        .filter(|r| r.watch_id == id && !r.events.is_empty())
        .map(|r| r.events.iter().map(|e| e.kv.mod_revision).collect())
        .collect();
    assert_eq!(batches, vec![vec![2, 3, 4, 5], vec![6, 7, 8, 9], vec![10, 11, 12, 13]]);
    let st = wait_stats(&sys.handle, "synced", |s| s.store.synced == 1).await;
    assert_eq!(st.syncer.unsynced, 0);
}

#[actix_rt::test]
async fn a15_watch_victims() {
    let sys = TestSystem::with(false, |c| {
        let watch = c
            .watch()
            .clone()
            .with_chan_buf_len(1)
            .with_max_watchers_per_sync(2)
            .with_victim_retry_period(Duration::from_millis(2))
            .with_watch_resync_period(Duration::from_millis(10));
        c.with_watch(watch)
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..64 {
        let s = sys.stream();
        s.watch(one("foo"), 1).await;
        streams.push(s);
    }
    let mut writers = Vec::new();
    for _ in 0..16 {
        let h = sys.handle.clone();
        writers.push(actix_rt::spawn(async move {
            for _ in 0..4 {
                h.put(PutRequest::new("foo", "bar")).await.expect("put");
            }
        }));
    }
    // Half of the readers are slow for a while.
    for s in streams.iter().step_by(2) {
        s.pause();
    }
    for w in writers {
        w.await.expect("writer");
    }
    for s in &streams {
        s.resume();
    }
    let want: Vec<i64> = (2..=65).collect();
    for s in &streams {
        s.wait_for("64 events", |r| r.iter().map(|x| x.events.len()).sum::<usize>() >= 64).await;
        let revs: Vec<i64> = s.events_of(0).into_iter().map(|e| e.0).collect();
        assert_eq!(revs, want, "every stream gets exactly 2..=65 in order");
    }
}

#[actix_rt::test]
async fn b1_watcher_watch_id() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let id = s.watch(one("foo"), 0).await;
        let rev = sys.put("foo", "bar").await;
        s.wait_for("event", |r| r.iter().any(|x| x.watch_id == id && x.revision == rev && !x.events.is_empty())).await;
        s.cancel(id).await;
        ids.push(id);
    }
    sys.put("foo2", "bar").await;
    for _ in 0..10 {
        let id = s.watch(one("foo2"), 1).await;
        s.wait_for("catch-up event", |r| r.iter().any(|x| x.watch_id == id && !x.events.is_empty())).await;
        s.cancel(id).await;
        ids.push(id);
    }
    assert_eq!(ids, (0..20).collect::<Vec<i64>>());
}

#[actix_rt::test]
async fn b2_x5_custom_ids_and_duplicates() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    let c = s.create(WatchCreate { watch_id: 1, ..WatchCreate::new(&one("foo"), 0) }).await;
    assert_eq!((c.watch_id, c.canceled), (1, false));
    let dup = s.create(WatchCreate { watch_id: 1, ..WatchCreate::new(&one("bar"), 0) }).await;
    assert_eq!(
        (dup.watch_id, dup.created, dup.canceled, dup.cancel_reason.as_str()),
        (-1, true, true, "mvcc: duplicate watch ID provided on the WatchStream")
    );
    assert_eq!(s.watch(one("foo"), 0).await, 0);
    assert_eq!(s.watch(one("foo"), 0).await, 2);
    // Another stream may use id 1 on its own.
    let other = sys.stream();
    let c = other.create(WatchCreate { watch_id: 1, ..WatchCreate::new(&one("foo"), 0) }).await;
    assert_eq!((c.watch_id, c.canceled), (1, false));
    // Negative explicit ids are rejected (docs/etcd-semantics.md §10 quirk 8).
    let neg = s.create(WatchCreate { watch_id: -5, ..WatchCreate::new(&one("foo"), 0) }).await;
    assert!(neg.canceled && neg.watch_id == -1);
}

#[actix_rt::test]
async fn b3_watcher_watch_prefix() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    for _ in 0..3 {
        let id = s.watch(KeyRange::interval("foo", "fop"), 0).await;
        let rev = sys.put("foobar", "bar").await;
        let log = s.wait_for("event", |r| r.iter().any(|x| x.watch_id == id && x.revision == rev)).await;
        let r = log.iter().find(|x| x.watch_id == id && x.revision == rev).expect("resp");
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].kv.key, b"foobar");
        s.cancel(id).await;
    }
    sys.put("foo1bar", "bar").await;
    let id = s.watch(KeyRange::interval("foo1", "foo2"), 1).await;
    s.wait_for("catch-up", |r| r.iter().any(|x| x.watch_id == id && !x.events.is_empty())).await;
    let keys: Vec<String> = s.events_of(id).into_iter().map(|e| e.1).collect();
    assert_eq!(keys, vec!["foo1bar"]);
}

#[actix_rt::test]
async fn b5_f3_watch_wrong_range() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    for (k, e) in [("foa", "foa"), ("fob", "foa")] {
        let c =
            s.create(WatchCreate { key: k.into(), range_end: e.into(), start_revision: 1, ..Default::default() }).await;
        assert_eq!(
            (c.watch_id, c.created, c.canceled, c.cancel_reason.as_str()),
            (-1, true, true, "mvcc: watcher range is empty")
        );
    }
    let c = s
        .create(WatchCreate { key: b"foo".to_vec(), range_end: vec![0], start_revision: 1, ..Default::default() })
        .await;
    assert_eq!((c.watch_id, c.canceled), (0, false), "failed creates consume no id");
}

#[actix_rt::test]
async fn b6_watch_delete_range() {
    let sys = TestSystem::start(false).await;
    for k in ["foo_0", "foo_1", "foo_2"] {
        sys.put(k, "bar").await;
    }
    let s = sys.stream();
    let id = s.watch(KeyRange::interval("foo", "foo_99"), 0).await;
    sys.handle.delete_range(DeleteRangeRequest::new(KeyRange::interval("foo", "foo_99"))).await.expect("delete");
    let log = s.wait_for("deletes", |r| r.iter().any(|x| !x.events.is_empty())).await;
    let r = log.iter().find(|x| !x.events.is_empty()).expect("resp");
    assert_eq!(r.watch_id, id);
    let got: Vec<_> = r
        .events
        .iter()
        .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision, e.kv.version, e.kv.create_revision))
        .collect();
    let want: Vec<_> = ["foo_0", "foo_1", "foo_2"]
        .iter()
        .map(|k| (watchkv::EventKind::Delete, k.as_bytes().to_vec(), 5, 0, 0))
        .collect();
    assert_eq!(got, want);
}

#[actix_rt::test]
async fn b8_x7_progress_on_a_stream_without_watchers_gets_nothing() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    s.request_progress().await;
    s.addr().send(ProgressTick).await.expect("tick");
    let log = s.fence(&sys.handle).await;
    assert!(log.iter().all(|r| r.created), "only the fence's created: {log:?}");
}

#[actix_rt::test]
async fn b9_watcher_request_progress() {
    for (start, before, after) in
        [(0, true, true), (1, false, true), (2, false, true), (3, false, false), (4, false, false)]
    {
        let sys = TestSystem::start(true).await;
        sys.put("foo", "bar").await;
        let s = sys.stream();
        let c = s.create(WatchCreate { progress_notify: true, ..WatchCreate::new(&one("bad"), start) }).await;
        let id = c.watch_id;
        let progress = |s: &common::RecordedStream| {
            s.responses().iter().filter(|r| r.watch_id == id && r.is_progress_notify()).count()
        };
        s.addr().send(ProgressTick).await.expect("tick");
        let got_before = {
            // The store answers in order with everything else: a stats round trip after the
            // tick means the answer, if any, is already in the stream's mailbox.
            sys.handle.stats().await.expect("stats");
            s.addr().send(GetStreamStats).await.expect("stats");
            progress(&s) == 1
        };
        assert_eq!(got_before, before, "start {start}: before sync");
        sys.handle.syncer_addr().send(SyncTick).await.expect("sync");
        s.addr().send(ProgressTick).await.expect("tick");
        sys.handle.stats().await.expect("stats");
        s.addr().send(GetStreamStats).await.expect("stats");
        let total = progress(&s);
        assert_eq!(total > usize::from(got_before), after, "start {start}: after sync");
        for r in s.responses().iter().filter(|r| r.is_progress_notify()) {
            assert_eq!(r.revision, 2);
        }
    }
}

#[actix_rt::test]
async fn b10_f18_progress_all_waits_for_sync() {
    let sys = TestSystem::start(true).await;
    sys.put("foo", "bar").await;
    let s = sys.stream();
    s.watch(one("bad"), 1).await;
    s.request_progress().await;
    sys.handle.stats().await.expect("stats");
    s.addr().send(GetStreamStats).await.expect("stats");
    assert!(!s.responses().iter().any(|r| r.is_progress_notify()), "unsynced: no progress, nothing remembered");
    sys.handle.syncer_addr().send(SyncTick).await.expect("sync");
    wait_stats(&sys.handle, "synced", |s| s.store.synced == 1).await;
    s.request_progress().await;
    let log = s.wait_for("progress", |r| r.iter().any(|x| x.is_progress_notify())).await;
    let p: Vec<_> = log.iter().filter(|r| r.is_progress_notify()).collect();
    assert_eq!((p.len(), p[0].watch_id, p[0].revision), (1, -1, 2));
}

#[actix_rt::test]
async fn f18_progress_never_precedes_catch_up_events() {
    let sys = TestSystem::start(false).await;
    for i in 0..1001 {
        sys.handle.put(PutRequest::new("foo", format!("bar{i}"))).await.expect("put");
    }
    let s = sys.stream();
    let id = s.watch(one("foo"), 1).await;
    s.request_progress().await;
    s.wait_for("1001 events", |r| r.iter().map(|x| x.events.len()).sum::<usize>() == 1001).await;
    let log = s.responses();
    let first_event = log.iter().position(|r| !r.events.is_empty()).expect("events");
    assert!(!log[..first_event].iter().any(|r| r.is_progress_notify()), "no progress before the events");
    for r in log.iter().filter(|r| r.watch_id == id && !r.events.is_empty()) {
        assert_eq!(r.revision, 1002, "catch-up responses carry the pass's current revision");
    }
    wait_stats(&sys.handle, "synced", |s| s.store.synced == 1).await;
    s.request_progress().await;
    let log = s.wait_for("progress", |r| r.iter().any(|x| x.is_progress_notify())).await;
    let p = log.iter().rev().find(|r| r.is_progress_notify()).expect("progress");
    assert_eq!((p.watch_id, p.revision), (-1, 1002));
}

#[actix_rt::test]
async fn f19_progress_after_sync_without_events() {
    let sys = TestSystem::start(false).await;
    sys.put("bar", "1").await;
    let s = sys.stream();
    s.watch(one("foo"), 2).await;
    let start = std::time::Instant::now();
    loop {
        s.request_progress().await;
        if s.responses().iter().any(|r| r.is_progress_notify()) {
            break;
        }
        assert!(start.elapsed() < common::DEADLINE, "no progress notification");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn b11_f14_g7_x16_filters() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    let no_put = s
        .create(WatchCreate { filters: Filters { no_put: true, no_delete: false }, ..WatchCreate::new(&one("foo"), 0) })
        .await
        .watch_id;
    let no_del = s
        .create(WatchCreate { filters: Filters { no_put: false, no_delete: true }, ..WatchCreate::new(&one("foo"), 0) })
        .await
        .watch_id;
    let none = s
        .create(WatchCreate {
            filters: Filters { no_put: true, no_delete: true },
            progress_notify: true,
            ..WatchCreate::new(&one("foo"), 0)
        })
        .await
        .watch_id;
    sys.put("foo", "").await;
    sys.handle.delete_range(DeleteRangeRequest::new(one("foo"))).await.expect("delete");
    let log = s.fence(&sys.handle).await;
    let kinds = |id| -> Vec<watchkv::EventKind> {
        log.iter().filter(|r| r.watch_id == id).flat_map(|r| r.events.iter().map(|e| e.kind)).collect()
    };
    assert_eq!(kinds(no_put), vec![watchkv::EventKind::Delete]);
    assert_eq!(kinds(no_del), vec![watchkv::EventKind::Put]);
    assert!(log.iter().all(|r| r.watch_id != none || r.created), "a fully filtered watcher sends nothing");
    // X16: but still gets progress.
    s.addr().send(ProgressTick).await.expect("tick");
    s.wait_for("progress for the filtered watcher", |r| r.iter().any(|x| x.watch_id == none && x.is_progress_notify()))
        .await;
}

#[actix_rt::test]
async fn f1_watch_from_current_revision() {
    let cases: Vec<(WatchCreate, &str, Option<&str>)> = vec![
        (WatchCreate::new(&one("foo"), 0), "foo", Some("foo")),
        (WatchCreate::new(&one("helloworld"), 0), "foo", None),
        (WatchCreate::new(&KeyRange::interval("foo", "fop"), 0), "fooLong", Some("fooLong")),
        (WatchCreate::new(&KeyRange::interval("helloworld", "helloworle"), 0), "foo", None),
        (WatchCreate { key: Vec::new(), range_end: vec![0], ..Default::default() }, "fooLong", Some("fooLong")),
    ];
    for (req, put, want) in cases {
        let sys = TestSystem::start(false).await;
        let s = sys.stream();
        let c = s.create(req.clone()).await;
        assert_eq!((c.created, c.canceled, c.revision), (true, false, 1));
        sys.put(put, "bar").await;
        // A sentinel put on an unwatched key, then a second sentinel everybody ignores: the
        // synced path delivers per stream in revision order.
        let log = s.fence(&sys.handle).await;
        let got: Vec<_> = log
            .iter()
            .filter(|r| r.watch_id == c.watch_id && !r.events.is_empty())
            .flat_map(|r| {
                r.events
                    .iter()
                    .map(move |e| (r.revision, String::from_utf8_lossy(&e.kv.key).to_string(), e.kv.mod_revision))
            })
            .filter(|(_, k, _)| !k.starts_with('\u{1}'))
            .collect();
        assert_eq!(got, want.map(|k| vec![(2, k.to_string(), 2)]).unwrap_or_default(), "{req:?}");
    }
    // (6) and (7): three puts, three responses, one per revision.
    for range in [one("foo"), KeyRange::interval("foo", "fop")] {
        let sys = TestSystem::start(false).await;
        let s = sys.stream();
        let id = s.watch(range, 0).await;
        for _ in 0..3 {
            sys.put("foo", "bar").await;
        }
        let log = s.wait_for("3 responses", |r| r.iter().filter(|x| !x.events.is_empty()).count() == 3).await;
        let got: Vec<_> = log
            .iter()
            .filter(|r| r.watch_id == id && !r.events.is_empty())
            .map(|r| {
                (
                    r.revision,
                    r.events.len(),
                    r.events[0].kv.create_revision,
                    r.events[0].kv.mod_revision,
                    r.events[0].kv.version,
                )
            })
            .collect();
        assert_eq!(got, vec![(2, 1, 2, 2, 1), (3, 1, 2, 3, 2), (4, 1, 2, 4, 3)]);
    }
}

#[actix_rt::test]
async fn f4_watch_cancel_synced_and_unsynced() {
    for start in [0, 1] {
        let sys = TestSystem::start(false).await;
        let s = sys.stream();
        let id = s.watch(one("foo"), start).await;
        s.cancel(id).await;
        s.wait_for("canceled", |r| r.iter().any(|x| x.watch_id == id && x.canceled)).await;
        sys.put("foo", "bar").await;
        let log = s.fence(&sys.handle).await;
        assert!(log.iter().all(|r| r.watch_id != id || r.events.is_empty()), "no event after cancel");
    }
}

#[actix_rt::test]
async fn f5_x18_created_header_then_gapless_events_under_concurrent_puts() {
    let sys = TestSystem::start(false).await;
    let writer = {
        let h = sys.handle.clone();
        actix_rt::spawn(async move {
            for _ in 0..31 {
                h.put(PutRequest::new("foo", "bar")).await.expect("put");
            }
        })
    };
    let s = sys.stream();
    let mut created = Vec::new();
    loop {
        let c = s.create(WatchCreate::new(&KeyRange::interval("foo", "fop"), 0)).await;
        created.push((c.watch_id, c.revision));
        if c.revision >= 32 {
            break;
        }
    }
    writer.await.expect("writer");
    let log = s.fence(&sys.handle).await;
    for (id, header) in created {
        // created precedes every event of its watcher
        let pos_created = log.iter().position(|r| r.watch_id == id && r.created).expect("created");
        assert!(log.iter().position(|r| r.watch_id == id && !r.events.is_empty()).is_none_or(|p| p > pos_created));
        let revs: Vec<i64> =
            log.iter().filter(|r| r.watch_id == id).flat_map(|r| r.events.iter().map(|e| e.kv.mod_revision)).collect();
        let want: Vec<i64> = (header + 1..=32).collect();
        assert_eq!(revs, want, "watcher {id} created at {header}");
        assert!(log.iter().filter(|r| r.watch_id == id).all(|r| r.created || !r.events.is_empty() || r.canceled));
    }
}

#[actix_rt::test]
async fn f6_f15_x15_empty_value_and_prev_kv() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    let plain = s.watch(one("foo"), 0).await;
    let with_prev = s
        .create(WatchCreate { prev_kv: true, ..WatchCreate::new(&KeyRange::interval("foo", "fop"), 0) })
        .await
        .watch_id;
    sys.put("foo", "").await; // 2
    sys.put("foo", "b").await; // 3
    sys.handle.delete_range(DeleteRangeRequest::new(one("foo"))).await.expect("delete"); // 4
    let log = s.fence(&sys.handle).await;
    let of = |id| -> Vec<&watchkv::watch::response::WatchResponse> {
        log.iter().filter(|r| r.watch_id == id && !r.events.is_empty()).collect()
    };
    let p = of(plain);
    assert_eq!(p.len(), 3);
    assert!(p.iter().all(|r| !r.prev_kv), "prev_kv is not sent to watchers that did not ask");
    assert_eq!(p[0].events[0].kv.value, b"");
    let w = of(with_prev);
    assert!(w.iter().all(|r| r.prev_kv));
    assert_eq!(w[0].events[0].prev_kv, None, "create events carry no prev_kv");
    assert_eq!(
        w[1].events[0].prev_kv.as_ref().map(|kv| (kv.value.clone(), kv.mod_revision, kv.version)),
        Some((b"".to_vec(), 2, 1))
    );
    assert_eq!(
        w[2].events[0].prev_kv.as_ref().map(|kv| (kv.value.clone(), kv.mod_revision, kv.version)),
        Some((b"b".to_vec(), 3, 2))
    );
    // With history compacted at 3, a catch-up from 3 has no prev_kv for revision 3.
    sys.put("foo", "c").await; // 6 (the fence took 5)
    sys.handle.compact(3, true).await.expect("compact");
    let s2 = sys.stream();
    let id = s2.create(WatchCreate { prev_kv: true, ..WatchCreate::new(&one("foo"), 3) }).await.watch_id;
    s2.wait_for("catch-up", |r| r.iter().any(|x| x.watch_id == id && !x.events.is_empty())).await;
    let log = s2.responses();
    let evs: Vec<_> = log.iter().filter(|r| r.watch_id == id).flat_map(|r| r.events.iter()).collect();
    assert_eq!(evs.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(), vec![3, 4, 6]);
    assert!(evs[0].prev_kv.is_none(), "state at 2 is compacted");
    assert_eq!(evs[1].prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b"b".to_vec()));
}

#[actix_rt::test]
async fn f7_f11_multiple_watchers_and_streams() {
    for start in [0, 1] {
        let sys = TestSystem::start(false).await;
        let s = sys.stream();
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(s.watch(one("foo"), start).await);
        }
        let range_id = s.watch(KeyRange::interval("fo", "fp"), start).await;
        let others: Vec<_> = (0..5).map(|_| sys.stream()).collect();
        for o in &others {
            assert_eq!(o.watch(one("foo"), start).await, 0);
        }
        sys.put("foo", "bar").await;
        // As etcd's test: the five `foo` events are read before `fo` is written. An unsynced
        // watcher may otherwise get both revisions from one catch-up pass, in one response.
        s.wait_for("foo events", |r| {
            r.iter().flat_map(|x| x.events.iter()).filter(|e| e.kv.key == b"foo").count() >= 5
        })
        .await;
        sys.put("fo", "bar").await;
        let log = s.fence(&sys.handle).await;
        for id in ids.iter().chain([&range_id]) {
            let foo: Vec<_> = log
                .iter()
                .filter(|r| r.watch_id == *id)
                .flat_map(|r| r.events.iter())
                .filter(|e| e.kv.key == b"foo")
                .collect();
            assert_eq!(foo.len(), 1, "watcher {id}");
        }
        let fo: Vec<_> = log.iter().filter(|r| r.events.iter().any(|e| e.kv.key == b"fo")).collect();
        assert_eq!((fo.len(), fo[0].watch_id, fo[0].events.len()), (1, range_id, 1));
        for o in &others {
            o.wait_for("event", |r| r.iter().any(|x| !x.events.is_empty())).await;
            assert_eq!(o.events_of(0), vec![ev(2, "foo", "bar")]);
        }
    }
}

#[actix_rt::test]
async fn f8_x13_one_txn_one_response() {
    for start in [0, 1] {
        let sys = TestSystem::start(false).await;
        let s = sys.stream();
        let range_id = s.watch(KeyRange::interval("foo", "fop"), start).await;
        let txn = TxnRequest {
            compare: vec![],
            success: ["foo0", "foo1", "foo2", "zzz"]
                .iter()
                .map(|k| RequestOp::Put(PutRequest::new(*k, "bar")))
                .collect(),
            failure: vec![],
        };
        assert_eq!(sys.handle.txn(txn).await.expect("txn").revision, 2);
        let log = s.wait_for("txn events", |r| r.iter().any(|x| !x.events.is_empty())).await;
        let resp: Vec<_> = log.iter().filter(|r| r.watch_id == range_id && !r.events.is_empty()).collect();
        assert_eq!(resp.len(), 1, "one response for the whole txn");
        let keys: Vec<_> = resp[0].events.iter().map(|e| (e.kv.key.clone(), e.kv.mod_revision)).collect();
        assert_eq!(keys, vec![(b"foo0".to_vec(), 2), (b"foo1".to_vec(), 2), (b"foo2".to_vec(), 2)]);
    }
}

#[actix_rt::test]
async fn f9_multiple_events_put_unsynced() {
    let sys = TestSystem::start(false).await;
    sys.put("foo0", "bar").await;
    sys.put("foo1", "bar").await;
    let s = sys.stream();
    let id = s.watch(KeyRange::interval("foo", "fop"), 1).await;
    sys.put("foo0", "bar").await;
    sys.put("foo1", "bar").await;
    s.wait_for("4 events", |r| r.iter().map(|x| x.events.len()).sum::<usize>() >= 4).await;
    let log = s.fence(&sys.handle).await;
    let got: Vec<_> = log
        .iter()
        .filter(|r| r.watch_id == id)
        .flat_map(|r| r.events.iter())
        .map(|e| {
            (String::from_utf8_lossy(&e.kv.key).to_string(), e.kv.create_revision, e.kv.mod_revision, e.kv.version)
        })
        .collect();
    assert_eq!(
        got,
        vec![("foo0".into(), 2, 2, 1), ("foo1".into(), 3, 3, 1), ("foo0".into(), 2, 4, 2), ("foo1".into(), 3, 5, 2)]
    );
}

#[actix_rt::test]
async fn f12_g3_g4_periodic_progress_notify() {
    let sys = TestSystem::with(false, |c| {
        let watch = c.watch().clone().with_progress_notify_interval(Duration::from_millis(200));
        c.with_watch(watch)
    })
    .await;
    let s = sys.stream();
    let pn = s.create(WatchCreate { progress_notify: true, ..WatchCreate::new(&one("foo"), 1) }).await.watch_id;
    let plain = s.watch(one("foo"), 1).await;
    let log = s.wait_for("a progress notification", |r| r.iter().any(|x| x.is_progress_notify())).await;
    let p = log.iter().find(|x| x.is_progress_notify()).expect("progress");
    assert_eq!((p.watch_id, p.revision), (pn, 1));
    assert!(log.iter().filter(|r| r.is_progress_notify()).all(|r| r.watch_id != plain));
    // G3: progress reports the store revision even when the watcher saw nothing.
    sys.put("foox", "bar").await;
    s.wait_for("progress at 2", |r| r.iter().any(|x| x.is_progress_notify() && x.revision == 2)).await;
}

#[actix_rt::test]
async fn x17_periodic_progress_is_elided_after_an_event() {
    let sys = TestSystem::start(true).await;
    let s = sys.stream();
    let id = s.create(WatchCreate { progress_notify: true, ..WatchCreate::new(&one("foo"), 0) }).await.watch_id;
    let rev = sys.put("foo", "bar").await;
    s.wait_for("event", |r| r.iter().any(|x| x.revision == rev && !x.events.is_empty())).await;
    let count = |s: &common::RecordedStream| {
        s.responses().iter().filter(|r| r.watch_id == id && r.is_progress_notify()).count()
    };
    s.addr().send(ProgressTick).await.expect("tick"); // skipped: an event went out since the last tick
    sys.handle.stats().await.expect("stats");
    s.addr().send(GetStreamStats).await.expect("stats");
    assert_eq!(count(&s), 0);
    s.addr().send(ProgressTick).await.expect("tick"); // idle since: notify
    s.wait_for("progress", |r| r.iter().any(|x| x.watch_id == id && x.is_progress_notify())).await;
}

#[actix_rt::test]
async fn g5_request_progress_with_0_1_2_watchers() {
    for k in 0..3 {
        let sys = TestSystem::start(false).await;
        let s = sys.stream();
        for _ in 0..k {
            s.watch(KeyRange::prefix("/"), 0).await;
        }
        sys.put("/a", "1").await;
        sys.put("x", "1").await;
        s.request_progress().await;
        if k == 0 {
            let log = s.fence(&sys.handle).await;
            assert!(!log.iter().any(|r| r.is_progress_notify()));
        } else {
            let log = s.wait_for("progress", |r| r.iter().any(|x| x.is_progress_notify())).await;
            let p = log.iter().find(|x| x.is_progress_notify()).expect("progress");
            assert_eq!((p.watch_id, p.revision), (-1, 3));
            assert_eq!(log.iter().filter(|r| !r.events.is_empty()).count(), k);
        }
    }
}

#[actix_rt::test]
async fn g6_x14_event_types_and_lease_expiry() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    let id = s.watch(KeyRange::prefix("/"), 0).await;
    sys.put("/toDelete", "foo").await;
    sys.put("/toDelete", "bar").await;
    sys.handle.delete_range(DeleteRangeRequest::new(one("/toDelete"))).await.expect("delete");
    let (lease, _, _) = sys.handle.lease_grant(0, 1).await.expect("grant");
    sys.handle.put(PutRequest::new("/toExpire", "foo").lease(lease)).await.expect("put");
    sys.handle.put(PutRequest::new("/toExpire2", "foo").lease(lease)).await.expect("put");
    sys.handle
        .store_addr()
        .send(LeaseTick(Some(std::time::Instant::now() + Duration::from_secs(60))))
        .await
        .expect("tick");
    let log = s.wait_for("7 events", |r| r.iter().map(|x| x.events.len()).sum::<usize>() >= 7).await;
    let evs: Vec<_> = log
        .iter()
        .filter(|r| r.watch_id == id)
        .flat_map(|r| r.events.iter().map(move |e| (r.revision, e.clone())))
        .collect();
    use watchkv::EventKind::{Delete, Put};
    let kinds: Vec<_> = evs.iter().map(|(_, e)| (e.kind, e.is_create())).collect();
    assert_eq!(
        kinds,
        vec![(Put, true), (Put, false), (Delete, false), (Put, true), (Put, true), (Delete, false), (Delete, false)]
    );
    let expiry: Vec<_> = evs.iter().filter(|(r, _)| *r == 7).map(|(_, e)| e.kv.key.clone()).collect();
    assert_eq!(expiry, vec![b"/toExpire".to_vec(), b"/toExpire2".to_vec()], "X14: one revision, key order");
}

#[actix_rt::test]
async fn g9_mixed_prev_kv_on_separate_streams() {
    let sys = TestSystem::start(false).await;
    sys.put("prevkv-race-key", "v0").await;
    let streams: Vec<_> = (0..10).map(|_| sys.stream()).collect();
    for (i, s) in streams.iter().enumerate() {
        s.create(WatchCreate { prev_kv: i < 5, ..WatchCreate::new(&one("prevkv-race-key"), 0) }).await;
    }
    for i in 1..=10 {
        sys.put("prevkv-race-key", &format!("v{i}")).await;
    }
    for (n, s) in streams.iter().enumerate() {
        let log = s.wait_for("10 events", |r| r.iter().map(|x| x.events.len()).sum::<usize>() == 10).await;
        for (i, r) in log.iter().filter(|r| !r.events.is_empty()).enumerate() {
            assert_eq!(r.events.len(), 1);
            assert_eq!(r.events[0].kv.value, format!("v{}", i + 1).into_bytes());
            if n < 5 {
                assert!(r.prev_kv);
                assert_eq!(r.events[0].prev_kv.as_ref().map(|p| p.value.clone()), Some(format!("v{i}").into_bytes()));
            } else {
                assert!(!r.prev_kv, "stream {n} did not ask for prev_kv");
            }
        }
    }
}

/// etcd's case puts ten values in ten revisions and sends the unfragmented catch-up as one
/// response of all ten (10 MiB in its test, which a client with a smaller receive limit
/// refuses). watchkv ends a batch at `max_batch_bytes` (docs/etcd-semantics.md §6.7): one
/// revision of 100 KiB per response, each whole, fragment or not, and no client needs a larger
/// limit than one revision. Fragments are for a single revision above `max_response_bytes`:
/// here a txn of ten such values, which comes whole without `fragment` and in pieces with it.
#[actix_rt::test]
async fn g12_fragment_large_responses() {
    let sys = TestSystem::with(false, |c| {
        let watch = c.watch().clone().with_max_response_bytes(300 << 10);
        c.with_watch(watch)
    })
    .await;
    for i in 0..10 {
        sys.handle.put(PutRequest::new(format!("foo{i}"), vec![b'a'; 100 << 10])).await.expect("put");
    }
    let txn = TxnRequest {
        success: (0..10).map(|i| RequestOp::Put(PutRequest::new(format!("bar{i}"), vec![b'b'; 100 << 10]))).collect(),
        ..TxnRequest::default()
    };
    let txn_rev = sys.handle.txn(txn).await.expect("txn").revision;
    assert_eq!(txn_rev, 12);
    for fragment in [false, true] {
        let s = sys.stream();
        let foo = s.create(WatchCreate { fragment, ..WatchCreate::new(&KeyRange::prefix("foo"), 1) }).await.watch_id;
        let bar = s.create(WatchCreate { fragment, ..WatchCreate::new(&KeyRange::prefix("bar"), 1) }).await.watch_id;
        let log = s.wait_for("20 events", |r| r.iter().map(|x| x.events.len()).sum::<usize>() == 20).await;
        let pieces = |id| log.iter().filter(|r| r.watch_id == id && !r.events.is_empty()).collect::<Vec<_>>();
        let revisions: Vec<Vec<i64>> =
            pieces(foo).iter().map(|p| p.events.iter().map(|e| e.kv.mod_revision).collect()).collect();
        assert_eq!(revisions, (2..=11).map(|rev| vec![rev]).collect::<Vec<_>>(), "one whole revision each");
        assert!(pieces(foo).iter().all(|p| !p.fragment));
        let txn_pieces = pieces(bar);
        assert!(txn_pieces.iter().all(|p| p.events.iter().all(|e| e.kv.mod_revision == txn_rev)));
        if fragment {
            assert!(txn_pieces.len() > 1);
            let (last, rest) = txn_pieces.split_last().expect("pieces");
            assert!(rest.iter().all(|p| p.fragment) && !last.fragment);
            assert!(txn_pieces.iter().all(|p| p.events.len() <= 3), "each piece stays under 300 KiB");
        } else {
            assert_eq!((txn_pieces.len(), txn_pieces[0].events.len(), txn_pieces[0].fragment), (1, 10, false));
        }
    }
}

#[actix_rt::test]
async fn h5_watch_from_revisions() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    let a = s.watch(one("bar"), 3).await;
    for v in ["revision_1", "revision_2", "revision_3"] {
        sys.put("bar", v).await;
    }
    s.wait_for("2 events", |r| r.iter().filter(|x| x.watch_id == a).map(|x| x.events.len()).sum::<usize>() == 2).await;
    assert_eq!(s.events_of(a).into_iter().map(|e| e.2).collect::<Vec<_>>(), vec!["revision_2", "revision_3"]);
    let d = s.watch(KeyRange::interval("key", "key3"), 1).await;
    for (k, v) in [("key1", "val1"), ("key3", "val3"), ("key2", "val2")] {
        sys.put(k, v).await;
    }
    s.wait_for("2 events", |r| r.iter().filter(|x| x.watch_id == d).map(|x| x.events.len()).sum::<usize>() == 2).await;
    assert_eq!(
        s.events_of(d).into_iter().map(|e| (e.1, e.2)).collect::<Vec<_>>(),
        vec![("key1".into(), "val1".into()), ("key2".into(), "val2".into())]
    );
}

#[actix_rt::test]
async fn x1_x2_x3_catch_up_shapes() {
    let sys = TestSystem::start(false).await;
    sys.put("foo", "a").await; // 2
    let s = sys.stream();
    let x1 = s.watch(one("foo"), 2).await;
    sys.put("bar", "b").await; // 3
    s.wait_for("X1 event", |r| r.iter().any(|x| x.watch_id == x1 && !x.events.is_empty())).await;
    let x2 = s.watch(one("foo"), 1).await;
    let log = s.wait_for("X2 event", |r| r.iter().any(|x| x.watch_id == x2 && !x.events.is_empty())).await;
    let r = log.iter().find(|x| x.watch_id == x2 && !x.events.is_empty()).expect("resp");
    assert_eq!((r.revision, r.events[0].kv.mod_revision), (3, 2), "catch-up header is the pass's current revision");
    // X3: no matching history: created, then nothing until a matching put.
    let x3 = s.watch(one("nothing-here"), 1).await;
    wait_stats(&sys.handle, "x3 synced", |s| s.syncer.unsynced == 0).await;
    let rev = sys.put("nothing-here", "x").await;
    let log = s.wait_for("X3 event", |r| r.iter().any(|x| x.watch_id == x3 && !x.events.is_empty())).await;
    let x3_resps: Vec<_> = log.iter().filter(|r| r.watch_id == x3).collect();
    assert_eq!(x3_resps.len(), 2);
    assert_eq!((x3_resps[1].revision, x3_resps[1].events[0].kv.mod_revision), (rev, rev));
}

#[actix_rt::test]
async fn x4_negative_start_revision() {
    let sys = TestSystem::start(false).await;
    sys.put("a", "1").await;
    let s = sys.stream();
    let c = s.create(WatchCreate::new(&one("foo"), -1)).await;
    assert_eq!(
        (c.watch_id, c.created, c.canceled, c.cancel_reason.as_str(), c.revision),
        (-1, true, true, "etcdserver: mvcc: required revision has been compacted", 2)
    );
}

#[actix_rt::test]
async fn x8_progress_is_withheld_while_a_watcher_is_behind() {
    let sys = TestSystem::with(true, |c| {
        let watch = c.watch().clone().with_watch_batch_max_revs(100);
        c.with_watch(watch)
    })
    .await;
    for _ in 0..300 {
        sys.put("foo", "x").await;
    }
    let s = sys.stream();
    s.watch(one("bar"), 0).await;
    s.watch(one("foo"), 1).await;
    s.request_progress().await;
    sys.handle.stats().await.expect("stats");
    s.addr().send(GetStreamStats).await.expect("stats");
    assert!(!s.responses().iter().any(|r| r.is_progress_notify()));
    while sys.handle.syncer_addr().send(SyncTick).await.expect("tick") > 0 {}
    wait_stats(&sys.handle, "synced", |s| s.store.synced == 2).await;
    s.request_progress().await;
    let log = s.wait_for("progress", |r| r.iter().any(|x| x.is_progress_notify())).await;
    assert_eq!(log.iter().find(|x| x.is_progress_notify()).map(|p| (p.watch_id, p.revision)), Some((-1, 301)));
}

#[actix_rt::test]
async fn x9_future_start_suppresses_progress() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    s.create(WatchCreate { progress_notify: true, ..WatchCreate::new(&one("foo"), 10) }).await;
    s.request_progress().await;
    sys.handle.stats().await.expect("stats");
    s.addr().send(GetStreamStats).await.expect("stats");
    assert!(!s.responses().iter().any(|r| r.is_progress_notify()));
    while sys.put("other", "x").await < 10 {}
    s.request_progress().await;
    s.wait_for("progress", |r| r.iter().any(|x| x.is_progress_notify() && x.revision == 10)).await;
}

#[actix_rt::test]
async fn x19_empty_key_and_all_keys() {
    let sys = TestSystem::start(false).await;
    let s = sys.stream();
    let empty = s.create(WatchCreate { key: Vec::new(), ..Default::default() }).await.watch_id;
    let all = s.create(WatchCreate { key: vec![0], range_end: vec![0], ..Default::default() }).await.watch_id;
    sys.put("\0", "zero").await;
    sys.put("z", "zed").await;
    s.wait_for("events", |r| r.iter().filter(|x| x.watch_id == all).map(|x| x.events.len()).sum::<usize>() >= 2).await;
    assert_eq!(s.events_of(empty), vec![ev(2, "\0", "zero")]);
    assert_eq!(s.events_of(all)[..2], [ev(2, "\0", "zero"), ev(3, "z", "zed")]);
}

#[actix_rt::test]
async fn slow_consumer_policy_cancels_a_stuck_watcher_with_a_reason() {
    let sys = TestSystem::with(false, |c| {
        let watch = c.watch().clone().with_chan_buf_len(1).with_victim_retry_period(Duration::from_millis(2));
        c.with_watch(watch).with_slow_consumer(watchkv_actors::SlowConsumerPolicy::CancelAfter {
            lag_revisions: 5,
            parked_for: Duration::from_secs(3600),
        })
    })
    .await;
    let s = sys.stream();
    let id = s.watch(one("foo"), 0).await;
    s.pause();
    // Writes go on until the policy acts. A fixed number of writes is not enough: actix lets
    // each sender put one message past a full mailbox (it parks that sender instead), so a
    // retry can hand a victim over once without the client reading, and the watcher is only a
    // victim again, and judged, at the next write.
    let started = std::time::Instant::now();
    loop {
        sys.put("foo", "x").await;
        let st = sys.handle.stats().await.expect("stats");
        if st.slow_cancels == 1 && st.victims.victims == 0 {
            break;
        }
        assert!(started.elapsed() < common::DEADLINE, "no slow cancel: {st:#?}");
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    s.resume();
    let log = s.wait_for("cancel with reason", |r| r.iter().any(|x| x.watch_id == id && x.canceled)).await;
    let c = log.iter().find(|x| x.watch_id == id && x.canceled).expect("cancel");
    assert!(c.cancel_reason.contains("slow consumer"), "{c:?}");
    let revs: Vec<i64> = s.events_of(id).into_iter().map(|e| e.0).collect();
    assert!(revs.windows(2).all(|w| w[1] == w[0] + 1), "what was delivered has no gap: {revs:?}");
    wait_stats(&sys.handle, "nothing left", |st| {
        st.store.synced == 0 && st.store.promoting == 0 && st.syncer.unsynced == 0 && st.victims.victims == 0
    })
    .await;
}

#[actix_rt::test]
async fn handle_watch_stream_is_a_futures_stream_and_drop_cancels() {
    use futures::StreamExt;
    let sys = TestSystem::start(false).await;
    let mut w = sys.handle.watch(WatchCreate::new(&KeyRange::prefix("k"), 0));
    let created = w.next().await.expect("created");
    assert!(created.created);
    sys.put("k1", "v").await;
    let r = w.next().await.expect("event");
    assert_eq!(r.events[0].kv.key, b"k1");
    wait_stats(&sys.handle, "one synced", |s| s.store.synced == 1).await;
    drop(w);
    wait_stats(&sys.handle, "dropped stream cancels", |s| {
        s.store.synced == 0 && s.store.promoting == 0 && s.store.streams == 0
    })
    .await;
}

#[actix_rt::test]
async fn shutdown_persists_and_reopen_sees_everything() {
    let sys = TestSystem::start(false).await;
    for i in 0..10 {
        sys.put(&format!("k{i}"), "v").await;
    }
    sys.handle.shutdown().await.expect("shutdown");
    assert!(matches!(sys.handle.put(PutRequest::new("late", "x")).await, Err(watchkv::Error::Stopped)));
    let path = sys.dir.path().to_path_buf();
    let h2 = watchkv_actors::start(common::config(&path, false)).await.expect("restart");
    assert_eq!(h2.current_revision(), 11);
    let r = h2.range(watchkv::RangeRequest::new(KeyRange::prefix("k"))).await.expect("range");
    assert_eq!(r.count, 10);
    h2.shutdown().await.expect("shutdown");
}

/// The slow-consumer policy judges the revisions committed while a watcher sat undeliverable,
/// not how far behind its history started: watchers catching up from long ago, parked because
/// their client has not yet taken the batches before, are not cancelled (they were, at once:
/// a watcher 1000 revisions behind counted as 1000 revisions of a client not reading).
#[actix_rt::test]
async fn slow_consumer_policy_spares_watchers_catching_up_from_old_revisions() {
    let sys = TestSystem::with(true, |c| {
        let watch = c.watch().clone().with_chan_buf_len(1).with_max_watchers_per_sync(2);
        c.with_watch(watch).with_slow_consumer(watchkv_actors::SlowConsumerPolicy::CancelAfter {
            lag_revisions: 100,
            parked_for: Duration::from_secs(3600),
        })
    })
    .await;
    for i in 0..300 {
        sys.put("foo", &format!("v{i}")).await; // 2..=301
    }
    let s = sys.stream();
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(s.watch(one("foo"), 1).await);
        }
        ids
    };
    // The client takes nothing for a moment: passes hand the stream more than it holds, and
    // the rest are parked; the retries are refused while it stays paused.
    s.pause();
    let started = std::time::Instant::now();
    while sys.handle.stats().await.expect("stats").victims.victims == 0 {
        sys.handle.syncer_addr().send(SyncTick).await.expect("tick");
        assert!(started.elapsed() < common::DEADLINE, "nothing was parked");
    }
    for _ in 0..3 {
        sys.handle.victim_addr().send(RetryTick).await.expect("tick");
    }
    assert_eq!(sys.handle.stats().await.expect("stats").slow_cancels, 0, "a watcher catching up was cancelled");
    // The client reads again: every watcher catches up, none cancelled.
    s.resume();
    let started = std::time::Instant::now();
    loop {
        let left = sys.handle.syncer_addr().send(SyncTick).await.expect("tick");
        sys.handle.victim_addr().send(RetryTick).await.expect("tick");
        let st = sys.handle.stats().await.expect("stats");
        if left == 0 && st.victims.victims == 0 && ids.iter().all(|&id| s.events_of(id).len() == 300) {
            break;
        }
        assert!(started.elapsed() < common::DEADLINE, "not caught up: {st:#?}");
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(sys.handle.stats().await.expect("stats").slow_cancels, 0);
    for id in ids {
        let revs: Vec<i64> = s.events_of(id).into_iter().map(|e| e.0).collect();
        assert_eq!(revs, (2..=301).collect::<Vec<_>>(), "watcher {id}");
    }
}

/// etcd TestV3WatchCancellation and TestV3WatchCloseCancelRace: with one watcher kept open,
/// 1000 watchers created and cancelled one after the other, then 1000 created and cancelled at
/// once (the cancel sent before the created response came back), leave exactly the kept one
/// in the store's groups; it still gets its events.
#[actix_rt::test]
async fn f16_f17_watchers_created_and_cancelled_leave_only_the_one_kept() {
    use watchkv_actors::protocol::CreateWatch;
    let sys = TestSystem::start(false).await;
    let live = |st: &watchkv_actors::SystemStats| {
        st.store.synced + st.store.promoting + st.syncer.unsynced + st.victims.victims
    };
    let s = sys.stream();
    let kept = s.watch(one("/foo"), 0).await;
    for _ in 0..1000 {
        let id = s.watch(one("/foo"), 0).await;
        s.cancel(id).await;
    }
    wait_stats(&sys.handle, "only the kept watcher", |st| live(st) == 1).await;

    let racing = sys.stream();
    for id in 0..1000 {
        let create = WatchCreate { watch_id: id, ..WatchCreate::new(&one("/foo"), 0) };
        racing.addr().do_send(CreateWatch(create));
        racing.addr().do_send(CancelWatch(id));
    }
    // The last cancel has been handled once its answer is recorded.
    racing.wait_for("the last cancel", |r| r.iter().any(|x| x.watch_id == 999 && x.canceled)).await;
    wait_stats(&sys.handle, "only the kept watcher again", |st| live(st) == 1).await;
    let rev = sys.put("/foo", "after").await;
    s.wait_for("the kept watcher's event", |r| {
        r.iter().any(|x| x.watch_id == kept && x.events.iter().any(|e| e.kv.mod_revision == rev))
    })
    .await;
    racing.with_log(|log| assert!(log.iter().all(|r| r.events.is_empty()), "a cancelled watcher got events"));
}

/// etcd TestV3NoEventsLostOnCompact: a watcher whose client stopped reading falls behind 140
/// revisions, which are then compacted. With the recent-revision ring off it gets, once its
/// client reads again, contiguous events from its start and then exactly one compaction notice,
/// as from etcd. With the ring on (the default), watchkv replays the revisions the ring still
/// holds although they are compacted: every event, no notice (docs/etcd-semantics.md §6.6).
#[actix_rt::test]
async fn f20_no_events_lost_on_compact() {
    for ring in [0, 4096] {
        let sys = TestSystem::with(true, |c| {
            let watch = c.watch().clone().with_chan_buf_len(1);
            c.with_watch(watch).with_ring_revisions(ring)
        })
        .await;
        let s = sys.stream();
        let id = s.watch(one("foo"), 0).await;
        s.pause();
        let mut last = 0;
        for _ in 0..140 {
            last = sys.put("foo", "bar").await; // 2..=141
        }
        sys.handle.compact(last, false).await.expect("compact");
        s.resume();
        let start = std::time::Instant::now();
        let done = |log: &[watchkv::watch::response::WatchResponse]| {
            log.iter().any(|r| {
                r.watch_id == id && (r.compact_revision != 0 || r.events.iter().any(|e| e.kv.mod_revision == last))
            })
        };
        while !s.with_log(done) {
            sys.handle.syncer_addr().send(SyncTick).await.expect("tick");
            sys.handle.victim_addr().send(RetryTick).await.expect("tick");
            assert!(start.elapsed() < common::DEADLINE, "ring {ring}: not done: {:#?}", s.responses());
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
        let revs: Vec<i64> = s.events_of(id).into_iter().map(|e| e.0).collect();
        let first = revs.first().copied().unwrap_or(2);
        assert_eq!(first, 2, "ring {ring}: {revs:?}");
        assert_eq!(revs, (2..2 + revs.len() as i64).collect::<Vec<_>>(), "ring {ring}: contiguous");
        let notices: Vec<i64> = s.with_log(|log| {
            log.iter().filter(|r| r.watch_id == id && r.compact_revision != 0).map(|r| r.compact_revision).collect()
        });
        if ring == 0 {
            assert_eq!(notices, vec![last], "ring off: one notice at the compact revision");
            assert!(revs.len() < 140, "ring off: not every event came before the notice: {revs:?}");
        } else {
            assert_eq!((revs.len(), notices.len()), (140, 0), "ring on: every event, no notice");
        }
    }
}
