//! Large ranges are read from a snapshot off the store's thread, and a range over more keys
//! than the store walks in one turn is planned over several turns with writes between them
//! (`actors/src/store/reads.rs`): each answer is still the keyspace at its header revision,
//! while writes and physical compactions go on around it. A txn that only reads is served the
//! same way, beside the group commit rather than in it.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use watchkv::{
    Compare, CompareResult, CompareTarget, KeyRange, PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseOp,
    SortOrder, SortTarget, TxnRequest,
};
use watchkv_actors::protocol::StoreStats;
use watchkv_actors::testing;
use watchkv_actors::{start, Handle};

fn key(i: usize) -> String {
    format!("r/{i:05}")
}

/// Puts keys `0..keys` with `value` from tasks spawned together; returns (key, revision, value).
async fn round_of_puts(handle: &Handle, keys: usize, value: &str) -> Vec<(String, i64, String)> {
    let tasks: Vec<_> = (0..keys)
        .map(|i| {
            let handle = handle.clone();
            let (key, value) = (key(i), value.to_string());
            actix_rt::spawn(async move {
                let rev = handle.put(PutRequest::new(key.clone(), value.clone())).await.expect("put").revision;
                (key, rev, value)
            })
        })
        .collect();
    let mut puts = Vec::with_capacity(keys);
    for task in tasks {
        puts.push(task.await.expect("put task"));
    }
    puts
}

/// A store in a temporary directory with keys `0..keys` put once.
async fn store_with_keys(keys: usize) -> (tempfile::TempDir, Handle) {
    let dir = tempfile::tempdir().expect("temp dir");
    let handle = start(testing::config(dir.path(), true)).await.expect("start");
    round_of_puts(&handle, keys, "v").await;
    (dir, handle)
}

/// The reader's ranges, in turn: the whole prefix, its count, and its ten latest-modified keys.
fn shapes() -> [RangeRequest; 3] {
    let whole = RangeRequest::new(KeyRange::prefix("r/"));
    [
        whole.clone(),
        RangeRequest { count_only: true, ..whole.clone() },
        RangeRequest { limit: 10, sort_order: SortOrder::Descend, sort_target: SortTarget::Mod, ..whole },
    ]
}

/// A txn that only reads: `range` in its success branch, behind a compare that holds (the
/// first key exists), and a nested txn in its failure branch that writes nothing either.
fn read_only_txn(range: RangeRequest) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            range: KeyRange::single(key(0)),
            result: CompareResult::Greater,
            target: CompareTarget::Version(0),
        }],
        success: vec![RequestOp::Range(range.clone())],
        failure: vec![RequestOp::Txn(TxnRequest { success: vec![RequestOp::Range(range)], ..TxnRequest::default() })],
    }
}

/// `range` asked as a range, then inside a read-only txn: both answers, each checked to be the
/// one range answer the txn holds, at the txn's revision.
async fn range_both_ways(handle: &Handle, range: RangeRequest) -> [RangeResponse; 2] {
    let direct = handle.range(range.clone()).await.expect("range");
    let txn = handle.txn(read_only_txn(range)).await.expect("read-only txn");
    assert!(txn.succeeded, "the compare holds");
    let [ResponseOp::Range(in_txn)] = <[ResponseOp; 1]>::try_from(txn.responses).expect("one response") else {
        panic!("a range's answer")
    };
    assert_eq!(in_txn.revision, txn.revision, "the txn's range reads at the txn's revision");
    [direct, in_txn]
}

/// Puts `keys` keys `rounds + 1` times while a reader ranges over them back to back, compacting
/// (rows too) at the current revision after each round, each range asked directly and inside a
/// read-only txn; checks every answer key by key against the write history at its header
/// revision. Returns the store's stats at the end.
async fn ranges_answer_their_revision(keys: usize, rounds: usize) -> StoreStats {
    let dir = tempfile::tempdir().expect("temp dir");
    let handle = start(testing::config(dir.path(), true)).await.expect("start");
    let mut history = round_of_puts(&handle, keys, "round-0").await;

    let first = handle.range(shapes()[0].clone()).await.expect("range");
    let writing = Rc::new(Cell::new(true));
    let reader = {
        let (handle, writing) = (handle.clone(), Rc::clone(&writing));
        actix_rt::spawn(async move {
            let mut answers = Vec::new();
            for shape in shapes().into_iter().cycle() {
                if !writing.get() {
                    break;
                }
                for answer in range_both_ways(&handle, shape.clone()).await {
                    answers.push((shape.clone(), answer));
                }
                actix_rt::task::yield_now().await;
            }
            answers
        })
    };
    for round in 1..=rounds {
        history.extend(round_of_puts(&handle, keys, &format!("round-{round}")).await);
        // Compact at the current revision, rows too: a range planned before it, still reading,
        // needs rows this deletes.
        let last = history.iter().map(|(_, rev, _)| *rev).max().expect("puts");
        handle.compact(last, true).await.expect("compact");
    }
    writing.set(false);
    let mut answers = reader.await.expect("reader task");
    let final_rev = history.iter().map(|(_, rev, _)| *rev).max().expect("puts");
    let during = answers.iter().filter(|(_, a)| a.revision > first.revision && a.revision < final_rev).count();
    assert!(
        during > 0,
        "no range answered while the writes and compactions went on (revisions {} to {final_rev}): {:?}",
        first.revision,
        answers.iter().map(|(_, a)| a.revision).collect::<Vec<_>>()
    );
    answers.insert(0, (shapes()[0].clone(), first));
    for shape in shapes() {
        for answer in range_both_ways(&handle, shape.clone()).await {
            answers.push((shape.clone(), answer));
        }
    }

    // Each key's puts in revision order, to tell its value at any revision.
    let mut by_key: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for (k, rev, value) in history {
        by_key.entry(k).or_default().push((rev, value));
    }
    for puts in by_key.values_mut() {
        puts.sort_unstable();
    }
    let mut revisions: Vec<i64> = answers.iter().map(|(_, a)| a.revision).collect();
    for (shape, answer) in &answers {
        check_answer(shape, answer, keys, &by_key);
    }
    revisions.dedup();
    assert!(revisions.len() > 1, "ranges before and after the writes: {revisions:?}");
    let stats = handle.stats().await.expect("stats").store;
    handle.shutdown().await.expect("shutdown");
    stats
}

/// Checks `answer` to `shape` against each key's puts (`by_key`) at the answer's revision.
fn check_answer(
    shape: &RangeRequest,
    answer: &RangeResponse,
    keys: usize,
    by_key: &HashMap<String, Vec<(i64, String)>>,
) {
    let at = answer.revision;
    // Every key's (key, mod revision, value, version) at `at`, in key order.
    let state: Vec<(String, i64, &str, i64)> = (0..keys)
        .map(|i| {
            let puts = &by_key[&key(i)];
            let n = puts.partition_point(|(rev, _)| *rev <= at);
            let (rev, value) = &puts[n - 1];
            (key(i), *rev, value.as_str(), n as i64)
        })
        .collect();
    assert_eq!(answer.count, keys as i64, "count at revision {at}");
    let want: Vec<_> = if shape.count_only {
        Vec::new()
    } else if shape.sort_target == SortTarget::Mod {
        let mut latest = state.clone();
        latest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        latest.truncate(10);
        latest
    } else {
        state
    };
    let got: Vec<_> = answer
        .kvs
        .iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.mod_revision, kv.value.as_slice(), kv.version))
        .collect();
    let want: Vec<_> =
        want.iter().map(|(k, rev, value, version)| (k.clone(), *rev, value.as_bytes(), *version)).collect();
    assert!(got == want, "{shape:?} at revision {at}: {} rows, want {}", got.len(), want.len());
    assert_eq!(answer.more, shape.limit > 0 && keys as i64 > shape.limit, "more at revision {at}");
}

#[actix_rt::test]
async fn large_ranges_answer_their_revision_while_writes_and_compactions_go_on() {
    let stats = ranges_answer_their_revision(1500, 6).await;
    assert!(stats.ranges_read_off_thread > 0, "no range of 1500 rows was read off the store's thread");
    assert!(stats.read_txns > 0, "no read-only txn was served as a read");
}

/// A txn that only reads joins no group commit and takes no revision, and its rows are read off
/// the store's thread when they are many; one that could write (its other branch deletes) is a
/// write, in a group commit, even when the branch it runs reads.
#[actix_rt::test]
async fn a_read_only_txn_joins_no_group_commit() {
    const KEYS: usize = 600;
    let (_dir, handle) = store_with_keys(KEYS).await;
    let before = handle.stats().await.expect("stats");
    for i in 0..3 {
        let txn = handle.txn(read_only_txn(RangeRequest::new(KeyRange::single(key(i))))).await.expect("txn");
        let [ResponseOp::Range(range)] = txn.responses.as_slice() else { panic!("one range answer: {txn:?}") };
        assert_eq!(range.kvs.len(), 1, "key {i}");
        assert_eq!(txn.revision, before.store.current_rev);
    }
    let txn = handle.txn(read_only_txn(shapes()[0].clone())).await.expect("txn");
    let [ResponseOp::Range(range)] = txn.responses.as_slice() else { panic!("one range answer: {txn:?}") };
    assert_eq!(range.kvs.len(), KEYS);
    let after = handle.stats().await.expect("stats");
    assert_eq!(after.write_batches, before.write_batches, "a read-only txn went through a group commit");
    assert_eq!(after.store.read_txns, before.store.read_txns + 4);
    assert_eq!(
        after.store.ranges_read_off_thread,
        before.store.ranges_read_off_thread + 1,
        "the txn's {KEYS} rows were read off the store's thread"
    );

    let mut may_delete = read_only_txn(RangeRequest::new(KeyRange::single(key(0))));
    may_delete.failure = vec![RequestOp::DeleteRange(watchkv::DeleteRangeRequest::new(KeyRange::single(key(0))))];
    let txn = handle.txn(may_delete).await.expect("txn");
    assert!(txn.succeeded);
    assert_eq!(txn.revision, before.store.current_rev, "nothing was written");
    let last = handle.stats().await.expect("stats");
    assert_eq!(last.write_batches, after.write_batches + 1, "a txn that may delete is a write");
    assert_eq!(last.store.read_txns, after.store.read_txns);
    handle.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn ranges_walked_over_several_turns_answer_their_revision_while_writes_and_compactions_go_on() {
    let stats = ranges_answer_their_revision(10_000, 3).await;
    assert!(stats.ranges_planned_in_parts > 0, "no range of 10,000 keys was planned over several turns");
    assert!(stats.ranges_read_off_thread > 0, "no range of 10,000 rows was read off the store's thread");
}

/// A compaction above a read's revision that arrives while the store is still walking the
/// read's keys waits for the walk: the read (a range, or a read-only txn of two ranges) answers
/// whole instead of failing as compacted.
#[actix_rt::test]
async fn a_compaction_during_a_reads_walk_lets_the_walk_finish_first() {
    const KEYS: usize = 20_000;
    let (_dir, handle) = store_with_keys(KEYS).await;
    let count = RangeRequest { count_only: true, ..shapes()[0].clone() };
    let mut txn = read_only_txn(count.clone());
    txn.success.push(RequestOp::Range(count.clone()));
    for attempt in 0..3 {
        let counting = {
            let (handle, count) = (handle.clone(), count.clone());
            actix_rt::spawn(async move { handle.range(count).await })
        };
        let in_txn = {
            let (handle, txn) = (handle.clone(), txn.clone());
            actix_rt::spawn(async move { handle.txn(txn).await })
        };
        // Let the reads reach the store first; then a write and a compaction above their
        // revision, each sent once the one before is done (the walks take several turns).
        actix_rt::task::yield_now().await;
        let rev =
            handle.put(PutRequest::new(format!("s/{attempt}"), "outside the prefix")).await.expect("put").revision;
        handle.compact(rev, true).await.expect("compact");
        let answer = counting.await.expect("range task").expect("the range answers whole");
        assert_eq!(answer.count, KEYS as i64);
        let answer = in_txn.await.expect("txn task").expect("the txn answers whole");
        let counts: Vec<i64> = answer
            .responses
            .iter()
            .map(|op| match op {
                ResponseOp::Range(r) => r.count,
                other => panic!("a range's answer: {other:?}"),
            })
            .collect();
        assert_eq!(counts, [KEYS as i64; 2]);
    }
    let stats = handle.stats().await.expect("stats").store;
    assert!(stats.ranges_planned_in_parts >= 6, "the counts of {KEYS} keys took one turn each");
    handle.shutdown().await.expect("shutdown");
}

/// While the store walks a large count in parts, its thread still runs its other tasks between
/// the parts: a range of 600 rows sent after the count, read off the thread, can answer before
/// the count does. (Were the parts queued ahead of the thread's other tasks, its answer could
/// only follow the count's.)
#[actix_rt::test]
async fn a_large_count_in_planning_does_not_hold_back_other_answers() {
    const KEYS: usize = 100_000;
    let (_dir, handle) = store_with_keys(KEYS).await;
    let count = RangeRequest { count_only: true, ..shapes()[0].clone() };
    let rows = RangeRequest::new(KeyRange::interval(key(0), key(600)));
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    // Which answers first is up to the scheduler on a busy machine; what must not happen is the
    // rows' answer waiting for the count's every time. Up to ten tries, until it comes first.
    let mut rows_first = 0;
    let mut tries = 0u64;
    while rows_first == 0 && tries < 10 {
        tries += 1;
        order.borrow_mut().clear();
        let task = |name: &'static str, req: RangeRequest| {
            let (handle, order) = (handle.clone(), Rc::clone(&order));
            actix_rt::spawn(async move {
                let answer = handle.range(req).await.expect("range");
                order.borrow_mut().push(name);
                answer
            })
        };
        let counting = task("count", count.clone());
        actix_rt::task::yield_now().await;
        let reading = task("rows", rows.clone());
        assert_eq!(counting.await.expect("count task").count, KEYS as i64);
        assert_eq!(reading.await.expect("rows task").kvs.len(), 600);
        if order.borrow()[0] == "rows" {
            rows_first += 1;
        }
    }
    assert!(rows_first > 0, "the 600-row range answered after the count of {KEYS} keys every time");
    let stats = handle.stats().await.expect("stats").store;
    assert!(stats.ranges_planned_in_parts >= tries && stats.ranges_read_off_thread >= tries, "{stats:?}");
    handle.shutdown().await.expect("shutdown");
}

/// At most a few ranges are walked over several turns at once; the others sent meanwhile are
/// walked whole in their turn, as before, so that a flood of large ranges meets the store's
/// bounded mailbox instead of piling up half-walked at the store. Every one answers right.
#[actix_rt::test]
async fn a_flood_of_large_ranges_is_walked_a_few_at_a_time() {
    const KEYS: usize = 20_000;
    const RANGES: usize = 12;
    let (_dir, handle) = store_with_keys(KEYS).await;
    let count = RangeRequest { count_only: true, ..shapes()[0].clone() };
    let tasks: Vec<_> = (0..RANGES)
        .map(|_| {
            let (handle, count) = (handle.clone(), count.clone());
            actix_rt::spawn(async move { handle.range(count).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("range task").expect("range").count, KEYS as i64);
    }
    let in_parts = handle.stats().await.expect("stats").store.ranges_planned_in_parts;
    assert!(in_parts > 0 && in_parts < RANGES as u64, "{in_parts} of {RANGES} ranges sent together walked in parts");
    handle.shutdown().await.expect("shutdown");
}
