//! What a client sees when the store cannot read its watchers' history: the syncer reads
//! through a seam (`HistoryReader`), and these tests make its reads fail
//! (`watchkv_actors::testing::FailingReads`). A read that fails a few times and then succeeds
//! delivers everything, exactly once, in order; one that keeps failing cancels the watcher with
//! a reason naming the error, and the stream goes on serving its other watchers. One watcher's
//! unreadable history cancels only that watcher, and watchers a full stream keeps waiting never
//! hold back another stream's.

use std::time::{Duration, Instant};

use watchkv::{KeyRange, PutRequest};
use watchkv_actors::protocol::{GetStreamStats, SyncTick};
use watchkv_actors::syncer_actor::READ_RETRY_DELAYS;
use watchkv_actors::testing::checker::{self, End};
use watchkv_actors::testing::{self, wait_stats, FailingReads, History, RecordedStream};
use watchkv_actors::{Handle, WatchCreate};

/// Starts a runtime in `dir` whose catch-up reads go through `failing`.
async fn start(dir: &std::path::Path, manual_ticks: bool, chan_buf_len: usize, failing: &FailingReads) -> Handle {
    let config = testing::config(dir, manual_ticks);
    let watch = config.watch().clone().with_chan_buf_len(chan_buf_len);
    let failing = failing.clone();
    testing::start_with_history_reader(config.with_watch(watch), move |reader| failing.wrap(reader))
        .await
        .expect("start")
}

async fn put(handle: &Handle, key: &str, value: &str) -> i64 {
    handle.put(PutRequest::new(key, value)).await.expect("put").revision
}

/// A watcher on every key from now: the history the checker needs (it is synced at once, so
/// it never reads history itself).
async fn history_watcher(handle: &Handle) -> RecordedStream {
    let everything = RecordedStream::open(handle);
    everything.watch(KeyRange::all(), 0).await;
    everything
}

#[actix_rt::test]
async fn a_read_that_fails_twice_then_succeeds_delivers_everything_once_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let failing = FailingReads::first(2);
    let handle = start(dir.path(), true, 128, &failing).await;
    let everything = history_watcher(&handle).await;
    for i in 0..5 {
        put(&handle, "foo", &format!("v{i}")).await; // 2..=6
    }
    let s = RecordedStream::open(&handle);
    let create = WatchCreate::new(&KeyRange::single("foo"), 2);
    let id = s.create(create.clone()).await.watch_id;

    // Two passes fail: the watcher stays the syncer's, nothing reaches the client.
    for failures in 1..=2 {
        let unsynced = handle.syncer_addr().send(SyncTick).await.expect("tick");
        assert_eq!(unsynced, 1, "after {failures} failed reads the watcher is still unsynced");
        assert_eq!(failing.failed(), failures);
        assert!(s.events_of(id).is_empty(), "nothing is delivered from a failed read");
    }
    assert_eq!(handle.stats().await.expect("stats").syncer.failed_reads, 2);
    // The third read succeeds.
    let unsynced = handle.syncer_addr().send(SyncTick).await.expect("tick");
    assert_eq!(unsynced, 0);
    assert_eq!(failing.reads(), 3);
    s.wait_for("the history", |r| r.iter().flat_map(|x| x.events.iter()).count() >= 5).await;
    let values: Vec<(i64, String)> = s.events_of(id).into_iter().map(|(rev, _, v)| (rev, v)).collect();
    assert_eq!(values, (0..5).map(|i| (i + 2, format!("v{i}"))).collect::<Vec<_>>());

    // Live again: a later write arrives once, after the history.
    put(&handle, "foo", "live").await; // 7
    let log = s.fence(&handle).await;
    let revs: Vec<i64> = s.events_of(id).into_iter().map(|(rev, _, _)| rev).collect();
    assert_eq!(revs, vec![2, 3, 4, 5, 6, 7], "every event exactly once, in order");
    let history = History::from_responses(&everything.fence(&handle).await).expect("history");
    let reports = checker::assert_stream_ok(&history, &[create], &log);
    assert_eq!(reports[0].end, End::Active);
    handle.shutdown().await.expect("shutdown");
}

/// While the store reopens its database after a storage failure (`ReleaseStorage` ..
/// `UseStorage`), a watcher catching up waits: however many passes come meanwhile, it is
/// neither read nor cancelled, and it catches up once the reader is back.
#[actix_rt::test]
async fn a_watcher_catching_up_waits_out_a_reopen_of_the_storage() {
    use std::sync::{Arc, Mutex};
    use watchkv_actors::protocol::{ReleaseStorage, UseStorage};

    let dir = tempfile::tempdir().expect("temp dir");
    let kept = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&kept);
    let config = testing::config(dir.path(), true);
    let handle = testing::start_with_history_reader(config, move |reader| {
        *keep.lock().expect("not poisoned") = Some(reader.clone());
        Box::new(reader)
    })
    .await
    .expect("start");
    for i in 0..5 {
        put(&handle, "foo", &format!("v{i}")).await; // 2..=6
    }
    handle.syncer_addr().send(ReleaseStorage).await.expect("release");
    let s = RecordedStream::open(&handle);
    let id = s.watch(KeyRange::single("foo"), 2).await;
    for pass in 1..=2 * READ_RETRY_DELAYS.len() + 2 {
        let unsynced = handle.syncer_addr().send(SyncTick).await.expect("tick");
        assert_eq!(unsynced, 1, "pass {pass} while the storage is released");
    }
    let stats = handle.stats().await.expect("stats");
    assert_eq!(stats.syncer.failed_reads, 0, "nothing read, so nothing failed");
    let log = s.responses();
    assert!(log.iter().all(|r| r.watch_id != id || (r.events.is_empty() && !r.canceled)), "{log:?}");

    let reader = kept.lock().expect("not poisoned").take().expect("the reader");
    handle.syncer_addr().send(UseStorage(reader)).await.expect("use");
    let unsynced = handle.syncer_addr().send(SyncTick).await.expect("tick");
    assert_eq!(unsynced, 0);
    s.wait_for("the history", |r| r.iter().flat_map(|x| x.events.iter()).count() >= 5).await;
    let revs: Vec<i64> = s.events_of(id).into_iter().map(|(rev, _, _)| rev).collect();
    assert_eq!(revs, vec![2, 3, 4, 5, 6]);
    handle.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn failed_reads_are_retried_after_their_backoff() {
    let dir = tempfile::tempdir().expect("temp dir");
    let failing = FailingReads::first(2);
    let handle = start(dir.path(), false, 128, &failing).await;
    for i in 0..3 {
        put(&handle, "foo", &format!("v{i}")).await; // 2..=4
    }
    let s = RecordedStream::open(&handle);
    let started = Instant::now();
    let id = s.watch(KeyRange::single("foo"), 2).await;
    s.wait_for("the history", |r| r.iter().flat_map(|x| x.events.iter()).count() >= 3).await;
    // The first retry waits 10 ms, the second 50 ms.
    assert!(started.elapsed() >= Duration::from_millis(60), "retried before the backoff: {:?}", started.elapsed());
    assert_eq!((failing.failed(), failing.reads()), (2, 3));
    let revs: Vec<i64> = s.events_of(id).into_iter().map(|(rev, _, _)| rev).collect();
    assert_eq!(revs, vec![2, 3, 4]);
    handle.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_read_that_keeps_failing_cancels_the_watcher_with_the_reason_past_a_full_mailbox() {
    let dir = tempfile::tempdir().expect("temp dir");
    let failing = FailingReads::always();
    // A one-message mailbox, so that a paused client fills it at once.
    let handle = start(dir.path(), false, 1, &failing).await;
    let everything = history_watcher(&handle).await;
    put(&handle, "foo", "old").await; // 2
    let s = RecordedStream::open(&handle);
    let live_create = WatchCreate::new(&KeyRange::single("foo"), 0);
    let live = s.create(live_create.clone()).await.watch_id;
    let history_create = WatchCreate::new(&KeyRange::single("foo"), 2);
    let from_history = s.create(history_create.clone()).await.watch_id;

    // The client stops reading and its mailbox fills: writes turn the live watcher into a
    // victim, which shows a delivery was refused. From then on the stream's mailbox stays full
    // until the client reads again: the stream waits on its client and takes nothing out.
    s.pause();
    let started = Instant::now();
    while handle.stats().await.expect("stats").victims.victims == 0 {
        put(&handle, "foo", "new").await;
        assert!(started.elapsed() < testing::DEADLINE, "the mailbox never filled");
    }
    // Every read fails (the first and three retries), and the cancel is sent into the full
    // mailbox.
    let started = Instant::now();
    while failing.failed() < 4 {
        assert!(started.elapsed() < testing::DEADLINE, "the reads were not retried: {}", failing.failed());
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    wait_stats(&handle, "the watcher cancelled", |st| st.syncer.unsynced == 0).await;
    assert_eq!(failing.reads(), 4, "no read after the last retry");
    assert!(s.is_paused());

    s.resume();
    let log = s.wait_for("the cancel", |r| r.iter().any(|x| x.watch_id == from_history && x.canceled)).await;
    let cancel = log.iter().find(|x| x.watch_id == from_history && x.canceled).expect("cancel");
    assert!(cancel.cancel_reason.contains("catch-up read failed 4 times"), "{cancel:?}");
    assert!(cancel.cancel_reason.contains("injected catch-up read failure"), "names the error: {cancel:?}");
    assert!(s.events_of(from_history).is_empty());

    // The stream forgot the id and keeps serving the other watcher: events, progress, creates.
    let stats = s.addr().send(GetStreamStats).await.expect("stream alive");
    assert_eq!(stats.watchers, 1);
    let rev = put(&handle, "foo", "after").await;
    s.wait_for("the live watcher's event", |r| {
        r.iter().any(|x| x.watch_id == live && x.events.iter().any(|e| e.kv.mod_revision == rev))
    })
    .await;
    wait_stats(&handle, "nothing parked", |st| st.victims.victims == 0 && st.store.promoting == 0).await;
    s.request_progress().await;
    s.wait_for("a stream-wide progress", |r| r.iter().any(|x| x.watch_id == -1 && x.revision >= rev)).await;
    let log = s.fence(&handle).await;

    let history = History::from_responses(&everything.fence(&handle).await).expect("history");
    let reports = checker::assert_stream_ok(&history, &[live_create, history_create], &log);
    assert_eq!(reports[0].end, End::Active);
    assert!(matches!(&reports[1].end, End::ServerCanceled(reason) if reason.contains("catch-up read failed")));
    handle.shutdown().await.expect("shutdown");
}

/// A read covers every watcher of its pass and fails for all of them: the syncer reads them
/// apart before counting a failure, so the watcher whose history cannot be read is cancelled
/// and the one read with it gets its events.
#[actix_rt::test]
async fn one_watchers_unreadable_history_cancels_only_that_watcher() {
    let dir = tempfile::tempdir().expect("temp dir");
    let failing = FailingReads::with_watcher_of(b"a/x");
    let handle = start(dir.path(), true, 128, &failing).await;
    put(&handle, "a/x", "damaged").await; // 2
    put(&handle, "z", "z1").await; // 3
    put(&handle, "z", "z2").await; // 4
    let s = RecordedStream::open(&handle);
    let unreadable = s.watch(KeyRange::prefix("a/"), 2).await;
    let readable = s.watch(KeyRange::single("z"), 3).await;

    let mut ticks = 0;
    while handle.syncer_addr().send(SyncTick).await.expect("tick") > 0 {
        ticks += 1;
        assert!(ticks < 50, "still unsynced after {ticks} passes");
    }
    let log = s.wait_for("the cancel", |r| r.iter().any(|x| x.watch_id == unreadable && x.canceled)).await;
    let cancel = log.iter().find(|x| x.watch_id == unreadable && x.canceled).expect("cancel");
    assert!(cancel.cancel_reason.contains("catch-up read failed 4 times"), "{cancel:?}");
    assert!(log.iter().all(|x| x.watch_id != readable || !x.canceled), "the readable watcher was cancelled: {log:?}");
    let values: Vec<(i64, String)> = s.events_of(readable).into_iter().map(|(rev, _, v)| (rev, v)).collect();
    assert_eq!(values, vec![(3, "z1".to_string()), (4, "z2".to_string())]);
    // Live from here.
    put(&handle, "z", "z3").await; // 5
    s.fence(&handle).await;
    let revs: Vec<i64> = s.events_of(readable).into_iter().map(|(rev, _, _)| rev).collect();
    assert_eq!(revs, vec![3, 4, 5]);
    handle.shutdown().await.expect("shutdown");
}

/// Watchers whose compaction notices a full stream refuses go back to the syncer's group; they
/// wait behind the others there, so a pass of two watchers still reaches the watcher of
/// another stream created before them (etcd picks from a map in random order; a group that
/// served the most recent first chose the same two refused watchers every pass, forever).
#[actix_rt::test]
async fn watchers_a_full_stream_refuses_do_not_starve_another_streams() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = testing::config(dir.path(), true);
    let watch = config.watch().clone().with_chan_buf_len(1).with_max_watchers_per_sync(2);
    let handle = watchkv_actors::start(config.with_watch(watch)).await.expect("start");
    put(&handle, "k", "1").await; // 2
    let compacted = put(&handle, "k", "2").await; // 3
    handle.compact(compacted, false).await.expect("compact");

    let b = RecordedStream::open(&handle);
    let b1 = b.watch(KeyRange::single("k"), 1).await;
    let a = RecordedStream::open(&handle);
    let a0 = a.watch(KeyRange::single("x"), 0).await;
    let a1 = a.watch(KeyRange::single("k"), 1).await;
    let a2 = a.watch(KeyRange::single("k"), 1).await;
    // A's client stops reading; writes to x fill its one-message mailbox (a0 becomes a victim).
    a.pause();
    let started = Instant::now();
    while handle.stats().await.expect("stats").victims.victims == 0 {
        put(&handle, "x", "v").await;
        assert!(started.elapsed() < testing::DEADLINE, "the mailbox never filled");
    }
    for _ in 0..4 {
        handle.syncer_addr().send(SyncTick).await.expect("tick");
    }
    let notice = |id: i64| {
        move |r: &[watchkv::watch::response::WatchResponse]| {
            r.iter().any(|x| x.watch_id == id && x.compact_revision == compacted)
        }
    };
    b.wait_for("b1's compaction notice", notice(b1)).await;
    assert_eq!(handle.syncer_addr().send(SyncTick).await.expect("tick"), 2, "a1 and a2 wait for their stream");

    // A reads again: its notices go out.
    a.resume();
    let started = Instant::now();
    while handle.syncer_addr().send(SyncTick).await.expect("tick") > 0 {
        assert!(started.elapsed() < testing::DEADLINE, "a1 and a2 never left the syncer");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    a.wait_for("a1's compaction notice", notice(a1)).await;
    a.wait_for("a2's compaction notice", notice(a2)).await;
    assert!(a.events_of(a0).iter().all(|(_, k, _)| k == "x"));
    handle.shutdown().await.expect("shutdown");
}
