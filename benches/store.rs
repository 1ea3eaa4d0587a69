//! Store benchmarks: durable writes, group commit, ranges, open/restore of a large store, and
//! the key index's memory per live key.
//!
//! - `index/get_1m`: a lookup in an `Index` of 1M live keys. Its setup measures, with the
//!   counting allocator below, the bytes the index allocates per live key beyond the key bytes
//!   themselves, and prints them to stderr.
//! - `store/put_fsync`: one put, `Durability::Fsync`.
//! - `store/put_batch_1000`: 1000 puts in one group commit (`KvStore::write_all`, one fsync), `Durability::Fsync`.
//! - `store/range_10k`: a range over the 10k keys of a prefix (10k more keys outside it).
//! - `store/range_10k_from_snapshot`: the same range planned on the key index and read from a
//!   snapshot (`RangePlan::finish_from`), as the store actor reads an answer of 512 rows or more.
//! - `store/range_10k_last_created`: the same prefix's last created key (`limit = 1`, sorted by
//!   create revision, descending, with a `max_create_revision` filter), as the lock and election
//!   recipes ask.
//! - `store/open_1m`: `KvStore::open` of a store holding 1M keys (one row each).
//!
//! Keys look like `key/00000042` (12 bytes); values are 100 bytes of pseudo-random text (so that
//! fjall's block compression does not shrink them to nothing). Every store lives in a tempdir.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use watchkv::index::Index;
use watchkv::{Durability, KeyRange, KvStore, PutRequest, RangeRequest, Revision, SortOrder, SortTarget, StoreConfig};

// The counting global allocator the index's memory figures read (shared with the watch bench).
#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{alloc_calls, isize_of, live_bytes};

/// Resident set size from `/proc/self/statm` (includes malloc overhead), if available.
fn rss_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

// ----- data -----

const VALUE_LEN: usize = 100;

fn key(i: u64) -> String {
    format!("key/{i:08}")
}

/// The store of the range benches, made once: 10k keys under `range/` (what `req` reads) and
/// 10k under `other/`.
fn range_store<'a>(state: &'a mut Option<TempStore>, req: &RangeRequest, values: &mut Values) -> &'a TempStore {
    state.get_or_insert_with(|| {
        let mut s = temp_store(Durability::Buffered);
        let keys = (0..10_000u64).flat_map(|i| [format!("range/{i:08}"), format!("other/{i:08}")]);
        fill(&mut s.store, keys, 1000, values);
        assert_eq!(s.store.range(req).expect("range").kvs.len(), 10_000);
        s
    })
}

/// The history the `range_events` benches read: 100k revisions over 1000 keys (`ev/0000` to
/// `ev/0999`), one put per revision, built by whichever of them runs first.
fn history_store<'a>(state: &'a mut Option<TempStore>, values: &mut Values) -> &'a TempStore {
    state.get_or_insert_with(|| {
        let mut s = temp_store(Durability::Buffered);
        let mut batch = Vec::with_capacity(1000);
        for i in 0..100_000u64 {
            batch.push(PutRequest::new(format!("ev/{:04}", i % 1000), values.next()));
            if batch.len() == 1000 {
                for r in s.store.write_all(std::mem::take(&mut batch)) {
                    r.expect("fill write");
                }
            }
        }
        s
    })
}

/// Hands out 100-byte values cut from a pool of pseudo-random printable bytes.
struct Values {
    pool: Vec<u8>,
    next: usize,
}

impl Values {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(7);
        let pool = (0..1 << 20).map(|_| rng.random_range(b'!'..=b'~')).collect();
        Self { pool, next: 0 }
    }

    fn next(&mut self) -> Vec<u8> {
        self.next = (self.next + 7919) % (self.pool.len() - VALUE_LEN);
        self.pool[self.next..self.next + VALUE_LEN].to_vec()
    }
}

fn open(dir: &Path, durability: Durability) -> KvStore {
    KvStore::open(StoreConfig::new(dir).with_durability(durability)).expect("open store")
}

/// Writes `keys` (one put each) in group-commit batches of `batch` puts.
fn fill(store: &mut KvStore, keys: impl Iterator<Item = String>, batch: usize, values: &mut Values) {
    let mut reqs = Vec::with_capacity(batch);
    let flush = |store: &mut KvStore, reqs: &mut Vec<PutRequest>| {
        for r in store.write_all(std::mem::take(reqs)) {
            r.expect("fill write");
        }
    };
    for k in keys {
        reqs.push(PutRequest::new(k, values.next()));
        if reqs.len() == batch {
            flush(store, &mut reqs);
        }
    }
    if !reqs.is_empty() {
        flush(store, &mut reqs);
    }
}

// ----- benches -----

/// Builds an index of `keys` (one put each, in the given order) and returns it with the bytes
/// and allocations it took.
fn build_index(keys: &[String]) -> (Index, isize, usize, Option<i64>) {
    let rss0 = rss_bytes();
    let bytes0 = live_bytes();
    let allocs0 = alloc_calls();
    let mut index = Index::new();
    for (rev, k) in (2i64..).zip(keys) {
        index.put(k.as_bytes(), Revision::new(rev, 0));
    }
    let bytes = live_bytes() - bytes0;
    let allocs = alloc_calls() - allocs0;
    let rss = rss0.zip(rss_bytes()).map(|(a, b)| b - a);
    (index, bytes, allocs, rss)
}

/// Builds the 1M-key index and prints its memory figures (run once, lazily: only when the
/// bench is selected).
fn measured_index() -> (Index, Vec<String>) {
    const N: usize = 1_000_000;
    let keys: Vec<String> = (0..N as u64).map(key).collect();
    let key_bytes: usize = keys.iter().map(String::len).sum();
    let per_key = |bytes: isize| (bytes - isize_of(key_bytes)) as f64 / N as f64;

    // Ascending order first, in a fresh heap region, so the RSS growth means something.
    let (index, bytes, allocs, rss) = build_index(&keys);
    assert_eq!(index.len(), N);
    eprintln!(
        "index: {N} live keys, {key_bytes} key bytes, {bytes} bytes allocated ({:.2} allocations per key){}",
        allocs as f64 / N as f64,
        rss.map(|r| format!(", RSS grew by {r} bytes ({:.1} per key, malloc overhead included)", r as f64 / N as f64))
            .unwrap_or_default(),
    );
    eprintln!("index bytes per live key beyond key bytes: {:.0}", per_key(bytes));

    // For comparison: the same keys inserted in random order (B-tree nodes fill differently).
    let mut shuffled = keys.clone();
    shuffled.shuffle(&mut StdRng::seed_from_u64(1));
    let (other, bytes, _, _) = build_index(&shuffled);
    assert_eq!(other.len(), N);
    eprintln!("index bytes per live key beyond key bytes (keys inserted in random order): {:.0}", per_key(bytes));
    drop(other);
    (index, shuffled)
}

fn index_memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1));
    g.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let mut state = None;
    let mut i = 0;
    g.bench_function("get_1m", |b| {
        let (index, probes) = state.get_or_insert_with(measured_index);
        b.iter(|| {
            i = (i + 1) % probes.len();
            black_box(index.get(probes[i].as_bytes(), i64::MAX))
        });
    });
    g.finish();
}

/// A store in a tempdir (the directory lives as long as the store).
struct TempStore {
    store: KvStore,
    _dir: tempfile::TempDir,
}

fn temp_store(durability: Durability) -> TempStore {
    let dir = tempfile::tempdir().expect("tempdir");
    TempStore { store: open(dir.path(), durability), _dir: dir }
}

fn store_benches(c: &mut Criterion) {
    let mut values = Values::new();
    let mut g = c.benchmark_group("store");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));

    // Each bench builds its store on first use, so that a filter skips the setup too.

    // ----- put_fsync -----
    let mut state: Option<TempStore> = None;
    let mut n = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_fsync", |b| {
        let store = &mut state.get_or_insert_with(|| temp_store(Durability::Fsync)).store;
        b.iter_batched(
            || {
                n += 1;
                PutRequest::new(key(n % 100_000), values.next())
            },
            |req| store.put(req).expect("put"),
            BatchSize::SmallInput,
        );
    });
    drop(state);

    // ----- put_batch_1000 -----
    let mut state: Option<TempStore> = None;
    let mut n = 0u64;
    g.throughput(Throughput::Elements(1000));
    g.bench_function("put_batch_1000", |b| {
        let store = &mut state.get_or_insert_with(|| temp_store(Durability::Fsync)).store;
        b.iter_batched(
            || {
                (0..1000)
                    .map(|_| {
                        n += 1;
                        PutRequest::new(key(n), values.next())
                    })
                    .collect::<Vec<_>>()
            },
            |reqs| {
                let results = store.write_all(reqs);
                assert!(results.iter().all(Result::is_ok), "group commit failed");
                results
            },
            BatchSize::LargeInput,
        );
    });
    if let Some(s) = state.take() {
        eprintln!("put_batch_1000: store ended at revision {}", s.store.current_rev());
    }

    // ----- range_10k -----
    let mut state: Option<TempStore> = None;
    let req = RangeRequest::new(KeyRange::prefix("range/"));
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("range_10k", |b| {
        let store = &range_store(&mut state, &req, &mut values).store;
        b.iter(|| store.range(&req).expect("range"));
    });
    // ----- range_10k_from_snapshot: the same range as the store actor reads a large one -----
    g.bench_function("range_10k_from_snapshot", |b| {
        let store = &range_store(&mut state, &req, &mut values).store;
        let reader = store.reader();
        b.iter(|| {
            let plan = store.plan_range(&req).expect("plan");
            plan.finish_from(&reader.snapshot()).expect("read")
        });
    });
    // ----- range_10k_last_created: the lock and election recipes' "who was before me" -----
    let last_created = RangeRequest {
        limit: 1,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Create,
        max_create_revision: i64::MAX,
        ..req.clone()
    };
    // One key comes back: time per request, not keys per second.
    g.throughput(Throughput::Elements(1));
    g.bench_function("range_10k_last_created", |b| {
        let store = &range_store(&mut state, &req, &mut values).store;
        b.iter(|| store.range(&last_created).expect("range"));
    });
    drop(state);

    // ----- range_events_100k: the catch-up read (docs/etcd-semantics.md §6.5 step 3) -----
    let mut state: Option<TempStore> = None;
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("range_events_100k", |b| {
        let store = &history_store(&mut state, &mut values).store;
        let reader = store.reader();
        let cur = store.current_rev();
        b.iter(|| {
            let snap = reader.snapshot();
            let events = watchkv::watch::history::range_events(&snap, 1, cur + 1, -1, |_| {
                watchkv::watch::history::Wanted::Event
            })
            .expect("range_events");
            assert_eq!(events.len(), 100_000);
            events
        });
    });
    // The same history read for sparse watchers: 10 of the 1000 keys wanted, so 1% of the rows
    // (the shape of a catch-up pass for single-key watchers). Throughput counts rows scanned.
    g.bench_function("range_events_100k_1pct_wanted", |b| {
        let store = &history_store(&mut state, &mut values).store;
        let reader = store.reader();
        let cur = store.current_rev();
        b.iter(|| {
            let snap = reader.snapshot();
            let events = watchkv::watch::history::range_events(&snap, 1, cur + 1, -1, |key| {
                if key.ends_with(b"00") {
                    watchkv::watch::history::Wanted::Event
                } else {
                    watchkv::watch::history::Wanted::No
                }
            })
            .expect("range_events");
            assert_eq!(events.len(), 1_000);
            events
        });
    });
    drop(state);

    // ----- open_1m -----
    const N: u64 = 1_000_000;
    let mut state: Option<(tempfile::TempDir, StoreConfig)> = None;
    let open_checked = |config: &StoreConfig| {
        let t = Instant::now();
        let store = KvStore::open(config.clone()).expect("open 1m");
        let took = t.elapsed();
        assert_eq!(store.stats().indexed_keys, N as usize);
        (store, took)
    };
    g.throughput(Throughput::Elements(N));
    // One open per sample (~10 opens): flat sampling, and a target time that fits them.
    g.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(30));
    g.bench_function("open_1m", |b| {
        let (_, config) = state.get_or_insert_with(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let t = Instant::now();
            let mut store = open(dir.path(), Durability::Buffered);
            fill(&mut store, (0..N).map(key), 10_000, &mut values);
            store.sync().expect("sync");
            eprintln!(
                "open_1m: built {N} keys in {:?}, {} MiB on disk",
                t.elapsed(),
                store.disk_space().expect("disk space") >> 20
            );
            drop(store);
            let config = StoreConfig::new(dir.path()).with_durability(Durability::Buffered);
            let (store, first) = open_checked(&config);
            eprintln!("open_1m: first open after the build took {first:?}");
            drop(store);
            (dir, config)
        });
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (store, took) = open_checked(config);
                total += took;
                drop(store); // closing is not part of the measurement
            }
            total
        });
    });
    drop(state);
    g.finish();
}

criterion_group!(benches, index_memory, store_benches);
criterion_main!(benches);
