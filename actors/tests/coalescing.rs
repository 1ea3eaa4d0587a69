//! A watcher whose client is not taking responses gets what it missed coalesced once the client
//! reads again: its parked batch and the ring replay that follows go out as multi-revision
//! responses (etcd gives a victim one batch the same way), every event exactly once, in order,
//! and no response beyond `watch_batch_max_revs` revisions.

use std::time::{Duration, Instant};

use watchkv::{KeyRange, PutRequest};
use watchkv_actors::protocol::RetryTick;
use watchkv_actors::testing::checker;
use watchkv_actors::testing::{self, wait_stats, History, RecordedStream};
use watchkv_actors::{start, WatchCreate};

#[actix_rt::test]
async fn events_missed_while_not_reading_go_out_coalesced_exactly_once_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Manual ticks, so that victims are retried only when the test says; a one-message mailbox,
    // so that a client that stops reading turns its watcher into a victim at once.
    let config = testing::config(dir.path(), true);
    let watch = config.watch().clone().with_chan_buf_len(1);
    let handle = start(config.with_watch(watch)).await.expect("start");
    let everything = RecordedStream::open(&handle);
    everything.watch(KeyRange::all(), 0).await;

    let s = RecordedStream::open(&handle);
    let create = WatchCreate::new(&KeyRange::single("foo"), 0);
    let id = s.create(create.clone()).await.watch_id;
    s.pause();
    let mut revisions = Vec::new();
    let started = Instant::now();
    while handle.stats().await.expect("stats").victims.victims == 0 {
        revisions.push(handle.put(PutRequest::new("foo", "v")).await.expect("put").revision);
        assert!(started.elapsed() < testing::DEADLINE, "the watcher never became a victim");
    }
    // Missed while parked: the ring replays them to the watcher in one delivery once the
    // parked responses are through.
    for i in 0..40 {
        revisions.push(handle.put(PutRequest::new("foo", format!("v{i}"))).await.expect("put").revision);
    }
    s.resume();

    // Retry (by hand) until both streams have every event.
    let started = Instant::now();
    let all = |log: &[watchkv::watch::response::WatchResponse], id: i64| {
        log.iter().filter(|r| r.watch_id == id).map(|r| r.events.len()).sum::<usize>() == revisions.len()
    };
    while !(s.with_log(|l| all(l, id)) && everything.with_log(|l| all(l, 0))) {
        assert!(started.elapsed() < testing::DEADLINE, "not every event arrived");
        handle.victim_addr().send(RetryTick).await.expect("retry");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    wait_stats(&handle, "nothing parked", |st| st.victims.victims == 0 && st.store.promoting == 0).await;

    let log = s.fence(&handle).await;
    let mine: Vec<_> = log.iter().filter(|r| r.watch_id == id && !r.events.is_empty()).collect();
    let delivered: Vec<i64> = mine.iter().flat_map(|r| r.events.iter().map(|e| e.kv.mod_revision)).collect();
    assert_eq!(delivered, revisions, "every event exactly once, in revision order");
    assert!(
        mine.len() < revisions.len(),
        "nothing was coalesced: {} responses for {} events",
        mine.len(),
        revisions.len()
    );
    let max_revs = handle.config().watch().watch_batch_max_revs();
    for r in &mine {
        assert!(r.events.len() <= max_revs);
        assert!(r.revision >= r.events.last().map_or(0, |e| e.kv.mod_revision), "header behind its events: {r:?}");
    }

    let history = History::from_responses(&everything.fence(&handle).await).expect("history");
    checker::assert_stream_ok(&history, &[create], &log);
    handle.shutdown().await.expect("shutdown");
}
