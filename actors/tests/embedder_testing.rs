//! The template for a service that embeds watchkv and wants message-driven integration tests
//! of its own: copy this file. It uses only the public API (`watchkv_actors` with the
//! `testing` feature; in your `Cargo.toml`, `watchkv-actors = { ..., features = ["testing"] }`
//! under `[dev-dependencies]`): a runtime in a temporary directory, recorded streams standing
//! in for clients, writes through the `Handle`, assertions on what each client received, and
//! the watch-guarantee checker over every recording.

use std::time::{Duration, Instant};

use watchkv_actors::protocol::{GetStreamStats, RetryTick, SyncTick};
use watchkv_actors::testing::{self, checker, History, RecordedStream};
use watchkv_actors::watchkv::{DeleteRangeRequest, EventKind, KeyRange, PutRequest, WatchConfig};
use watchkv_actors::{Handle, WatchCreate};

/// A runtime in a fresh temporary directory (which lives as long as the returned guard), with
/// stream mailboxes of `chan_buf_len` messages.
async fn start(manual_ticks: bool, chan_buf_len: usize) -> (Handle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config =
        testing::config(dir.path(), manual_ticks).with_watch(WatchConfig::default().with_chan_buf_len(chan_buf_len));
    let handle = watchkv_actors::start(config).await.expect("start");
    (handle, dir)
}

/// A watcher on every key from the store's first revision, on a stream of its own that never
/// stops reading: the history every other stream is checked against.
async fn record_history(handle: &Handle) -> RecordedStream {
    let everything = RecordedStream::open(handle);
    everything.watch(KeyRange::all(), 0).await;
    everything
}

#[actix_rt::test]
async fn a_client_sees_its_prefix_and_the_guarantees_hold() {
    let (handle, _dir) = start(false, 128).await;
    let everything = record_history(&handle).await;

    // The client under test watches its service's prefix, with the previous values.
    let client = RecordedStream::open(&handle);
    let create = WatchCreate { prev_kv: true, ..WatchCreate::new(&KeyRange::prefix("service/"), 0) };
    let created = client.create(create.clone()).await;
    assert!(created.created && !created.canceled, "{created:?}");

    // The service writes.
    handle.put(PutRequest::new("service/a", "1")).await.expect("put");
    handle.put(PutRequest::new("elsewhere", "x")).await.expect("put");
    handle.put(PutRequest::new("service/a", "2")).await.expect("put");
    handle.delete_range(DeleteRangeRequest::new(KeyRange::single("service/a"))).await.expect("delete");

    // Everything the client is owed up to now, and nothing else.
    let log = client.fence(&handle).await;
    let events: Vec<_> = log.iter().flat_map(|r| r.events.iter()).collect();
    let seen: Vec<(EventKind, &[u8])> = events.iter().map(|e| (e.kind, e.kv.value.as_slice())).collect();
    assert_eq!(seen, vec![(EventKind::Put, &b"1"[..]), (EventKind::Put, b"2"), (EventKind::Delete, b"")]);
    let prev = events[1].prev_kv.as_ref().expect("prev_kv");
    assert_eq!(prev.value, b"1");

    // etcd's watch guarantees over the client's whole recording.
    let history = History::from_responses(&everything.fence(&handle).await).expect("a possible history");
    let reports = checker::assert_stream_ok(&history, &[create], &log);
    assert_eq!(reports[0].events, 3);
    handle.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_client_that_stops_reading_misses_nothing() {
    // Manual ticks: the test decides when the catch-up and the victim retries run. One-message
    // mailboxes, so that a client that stops reading soon has its watcher parked as a victim.
    let (handle, _dir) = start(true, 1).await;
    let everything = record_history(&handle).await;
    for i in 0..20 {
        handle.put(PutRequest::new(format!("job/{i}"), "queued")).await.expect("put");
    }

    // A client resumes from revision 2 (it saw revision 1), then stops reading.
    let client = RecordedStream::open(&handle);
    let create = WatchCreate::new(&KeyRange::prefix("job/"), 2);
    client.create(create.clone()).await;
    client.pause();
    let left = handle.syncer_addr().send(SyncTick).await.expect("tick");
    assert_eq!(left, 0, "one pass caught the watcher up");
    for i in 0..5 {
        handle.put(PutRequest::new(format!("job/{i}"), "done")).await.expect("put");
    }
    let stats = handle.stats().await.expect("stats");
    assert!(stats.victims.victims > 0, "the full mailbox parked the watcher: {stats:#?}");

    // The client reads again; victims are retried by hand until nothing is left behind.
    client.resume();
    let started = Instant::now();
    loop {
        handle.victim_addr().send(RetryTick).await.expect("tick");
        let s = handle.stats().await.expect("stats");
        if s.victims.victims == 0 && s.syncer.unsynced == 0 && s.store.promoting == 0 {
            break;
        }
        assert!(started.elapsed() < testing::DEADLINE, "victims left: {s:#?}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let log = client.fence(&handle).await;
    assert_eq!(log.iter().map(|r| r.events.len()).sum::<usize>(), 25, "every event, once");
    let history = History::from_responses(&everything.fence(&handle).await).expect("a possible history");
    checker::assert_stream_ok(&history, &[create], &log);
    let stats = client.addr().send(GetStreamStats).await.expect("stream alive");
    assert_eq!(stats.watchers, 1);
    handle.shutdown().await.expect("shutdown");
}
