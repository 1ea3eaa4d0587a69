//! Large ranges are read from a snapshot off the store's thread (`actors/src/store/reads.rs`):
//! each answer is still the keyspace at its header revision, while writes and physical
//! compactions go on around it.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use watchkv::{KeyRange, PutRequest, RangeRequest};
use watchkv_actors::testing;
use watchkv_actors::{start, Handle};

const KEYS: usize = 1500;
const ROUNDS: usize = 6;

fn key(i: usize) -> String {
    format!("r/{i:04}")
}

/// Puts every key with `value` from tasks spawned together; returns (key, revision, value).
async fn round_of_puts(handle: &Handle, value: &str) -> Vec<(String, i64, String)> {
    let tasks: Vec<_> = (0..KEYS)
        .map(|i| {
            let handle = handle.clone();
            let (key, value) = (key(i), value.to_string());
            actix_rt::spawn(async move {
                let rev = handle.put(PutRequest::new(key.clone(), value.clone())).await.expect("put").revision;
                (key, rev, value)
            })
        })
        .collect();
    let mut puts = Vec::with_capacity(KEYS);
    for task in tasks {
        puts.push(task.await.expect("put task"));
    }
    puts
}

#[actix_rt::test]
async fn large_ranges_answer_their_revision_while_writes_and_compactions_go_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handle = start(testing::config(dir.path(), true)).await.expect("start");
    let mut history = round_of_puts(&handle, "round-0").await;

    let whole = || RangeRequest::new(KeyRange::prefix("r/"));
    let first = handle.range(whole()).await.expect("range");
    let writing = Rc::new(Cell::new(true));
    let reader = {
        let (handle, writing) = (handle.clone(), Rc::clone(&writing));
        actix_rt::spawn(async move {
            let mut answers = Vec::new();
            while writing.get() {
                answers.push(handle.range(whole()).await.expect("range"));
                actix_rt::task::yield_now().await;
            }
            answers
        })
    };
    for round in 1..=ROUNDS {
        history.extend(round_of_puts(&handle, &format!("round-{round}")).await);
        // Compact at the current revision, rows too: a range planned before it, still reading,
        // needs rows this deletes.
        let last = history.iter().map(|(_, rev, _)| *rev).max().expect("puts");
        handle.compact(last, true).await.expect("compact");
    }
    writing.set(false);
    let mut answers = reader.await.expect("reader task");
    answers.insert(0, first);
    answers.push(handle.range(whole()).await.expect("range"));

    // Each key's puts in revision order, to tell its value at any revision.
    let mut by_key: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for (k, rev, value) in history {
        by_key.entry(k).or_default().push((rev, value));
    }
    for puts in by_key.values_mut() {
        puts.sort_unstable();
    }
    let mut revisions: Vec<i64> = answers.iter().map(|a| a.revision).collect();
    for answer in answers {
        assert_eq!(answer.count, KEYS as i64);
        assert_eq!(answer.kvs.len(), KEYS, "at revision {}", answer.revision);
        for (i, kv) in answer.kvs.iter().enumerate() {
            assert_eq!(kv.key, key(i).into_bytes(), "key order at revision {}", answer.revision);
            let puts = &by_key[&key(i)];
            let at = puts.partition_point(|(rev, _)| *rev <= answer.revision);
            let (rev, value) = &puts[at - 1];
            assert_eq!(kv.mod_revision, *rev, "{} at revision {}", key(i), answer.revision);
            assert_eq!(kv.value, value.as_bytes(), "{} at revision {}", key(i), answer.revision);
            assert_eq!(kv.version, at as i64);
        }
    }
    revisions.dedup();
    assert!(revisions.len() > 1, "ranges before and after the writes: {revisions:?}");
    let off_thread = handle.stats().await.expect("stats").store.ranges_read_off_thread;
    assert!(off_thread > 0, "no range of {KEYS} rows was read off the store's thread");
    handle.shutdown().await.expect("shutdown");
}
