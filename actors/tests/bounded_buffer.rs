//! A stream whose client stops reading holds a bounded number of responses, however many
//! revisions go by: its buffer stops at `chan_buf_len` responses (or one delivery), its
//! watchers become victims holding one coalesced batch each, and the writers and the other
//! streams go on. The bound is in responses, not in mailbox messages that may each carry many,
//! and a response that joins revisions holds at most `max_batch_bytes` of events, whatever
//! the value sizes.

use futures::StreamExt;
use watchkv::watch::response::WatchResponse;
use watchkv::{KeyRange, PutRequest};
use watchkv_actors::testing::{self, checker, wait_stats, History, RecordedStream};
use watchkv_actors::{start, WatchCreate, WatchStream};

/// Watchers on the stream that stops reading.
const STALLED_WATCHERS: usize = 10;
/// Puts sent together: group commit may put them in one delivery, several responses per
/// watcher.
const PUTS_PER_BATCH: usize = 4;

#[actix_rt::test]
async fn a_stream_that_stops_reading_holds_bounded_responses_while_the_rest_go_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = testing::config(dir.path(), false);
    let chan_buf_len = 16;
    let watch = config.watch().clone().with_chan_buf_len(chan_buf_len);
    let handle = start(config.with_watch(watch)).await.expect("start");

    let reader = RecordedStream::open(&handle);
    let reader_create = WatchCreate::new(&KeyRange::all(), 0);
    reader.create(reader_create.clone()).await;
    // Never polled: its client reads nothing, not even the created responses.
    let stalled = handle.watch_stream();
    for _ in 0..STALLED_WATCHERS {
        stalled.create(WatchCreate::new(&KeyRange::prefix("k"), 0));
    }
    wait_stats(&handle, "every watcher synced", |st| st.store.synced == STALLED_WATCHERS + 1).await;

    let mut buffered_after = Vec::new();
    let mut parked_after = Vec::new();
    for round in 0..3 {
        // Puts sent together, so that a delivery may carry several revisions.
        for i in 0..100 {
            let puts = (0..PUTS_PER_BATCH)
                .map(|j| handle.put(PutRequest::new(format!("k{}", j % 2), format!("{round}-{i}-{j}"))));
            for put in futures::future::join_all(puts).await {
                put.expect("the writer is never held up by a stalled stream");
            }
        }
        // Read without a message: the stream's actor is busy waiting on its client.
        buffered_after.push(stalled.buffered_responses());
        parked_after.push(handle.stats().await.expect("stats").victims);
    }

    // One delivery may carry every watcher's responses for a batch, beyond the bound; it is
    // taken only by an empty buffer.
    let one_delivery = STALLED_WATCHERS * PUTS_PER_BATCH;
    for (round, buffered) in buffered_after.iter().enumerate() {
        assert!(
            *buffered <= chan_buf_len.max(one_delivery) + one_delivery,
            "round {round}: the stalled stream buffers {buffered} responses"
        );
    }
    for (round, parked) in parked_after.iter().enumerate() {
        assert!(parked.victims <= STALLED_WATCHERS, "round {round}: {parked:?}");
    }
    // Nothing grows with the revisions written: not the buffer, not what the victims hold.
    assert_eq!(buffered_after[1], buffered_after[2], "{buffered_after:?}");
    assert_eq!(parked_after[1].parked_bytes, parked_after[2].parked_bytes, "{parked_after:?}");

    // The other stream had every event while the stalled one still held its buffer.
    let current = handle.current_revision();
    reader
        .wait_for("every revision", |l| l.iter().flat_map(|r| r.events.iter()).any(|e| e.kv.mod_revision == current))
        .await;
    assert_eq!(stalled.buffered_responses(), buffered_after[2], "the stalled stream is still stalled");

    // The stalled client reads at last: it gets a consistent stream too, every watcher's events
    // exactly once, in order (the victims' batches, then catch-up).
    let responses = read_until_caught_up(stalled, STALLED_WATCHERS, current).await;
    assert_eq!(responses.iter().filter(|r| r.created).count(), STALLED_WATCHERS);
    // The other stream got every event too, exactly once, in order (it never waited for the
    // stalled one: it had them all before that one read anything).
    let log = reader.fence(&handle).await;
    let history = History::from_responses(&log).expect("history");
    let puts = history.events().iter().filter(|e| e.kv.key.starts_with(b"k")).count();
    assert_eq!(puts, 300 * PUTS_PER_BATCH, "one event per put (the fence writes a key of its own)");
    checker::assert_stream_ok(&history, &[reader_create], &log);

    handle.shutdown().await.expect("shutdown");
}

/// Large values behind a stalled stream: whatever path its watchers' events take (merged at the
/// store, parked as victims, caught up from history), no response that joins revisions holds
/// more than `max_batch_bytes` of events, and every watcher still gets every revision once, in
/// order.
#[actix_rt::test]
async fn responses_that_join_revisions_stay_within_the_byte_limit() {
    const WATCHERS: usize = 3;
    const VALUE: usize = 2048;
    let max_batch_bytes = 16 * 1024;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = testing::config(dir.path(), false);
    let watch = config.watch().clone().with_chan_buf_len(4).with_max_batch_bytes(max_batch_bytes);
    let handle = start(config.with_watch(watch)).await.expect("start");

    let stalled = handle.watch_stream();
    for _ in 0..WATCHERS {
        stalled.create(WatchCreate::new(&KeyRange::prefix("k"), 0));
    }
    wait_stats(&handle, "every watcher synced", |st| st.store.synced == WATCHERS).await;
    for i in 0..200 {
        let puts = (0..PUTS_PER_BATCH)
            .map(|j| handle.put(PutRequest::new(format!("k{j}"), vec![b'a' + (i % 26) as u8; VALUE])));
        for put in futures::future::join_all(puts).await {
            put.expect("put");
        }
    }
    let current = handle.current_revision();

    let mut joined = 0;
    for response in read_until_caught_up(stalled, WATCHERS, current).await {
        let (Some(first), Some(last)) = (response.events.first(), response.events.last()) else { continue };
        let (first, last) = (first.kv.mod_revision, last.kv.mod_revision);
        if first != last {
            joined += 1;
            let bytes: usize = response.events.iter().map(|e| e.field_len(false)).sum();
            assert!(bytes <= max_batch_bytes, "{bytes} bytes of events of revisions {first}..={last}");
        }
    }
    assert!(joined > 0, "a stalled stream's watchers get responses that join revisions");
    handle.shutdown().await.expect("shutdown");
}

/// Reads `stream`, whose watchers `0..watchers` all watch every revision from 2, until each has
/// had `current`; checks that each got every revision once, in order, and returns the responses.
async fn read_until_caught_up(mut stream: WatchStream, watchers: usize, current: i64) -> Vec<WatchResponse> {
    let mut per_watcher = vec![Vec::new(); watchers];
    let mut responses = Vec::new();
    let deadline = tokio::time::Instant::now() + testing::DEADLINE;
    while per_watcher.iter().any(|revs: &Vec<i64>| revs.last() != Some(&current)) {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let response = next.expect("the stalled stream caught up in time").expect("the stream is open");
        let Ok(i) = usize::try_from(response.watch_id) else { panic!("unexpected response {response:?}") };
        per_watcher[i].extend(response.events.iter().map(|e| e.kv.mod_revision));
        responses.push(response);
    }
    let expected: Vec<i64> = (2..=current).collect();
    for (i, revs) in per_watcher.iter().enumerate() {
        assert_eq!(revs, &expected, "watcher {i}: every revision once, in order");
    }
    responses
}
