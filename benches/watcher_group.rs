//! `WatcherGroup` matching cost with 100k watchers (the live notify path does one `matching`
//! call per event), and the cost of adding and removing the watchers of one hot key or prefix
//! (streams opening and closing, watchers promoted or made victims, all on the store's thread).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use watchkv::watch::watcher::{Filters, Watcher, WatcherKey};
use watchkv::watch::watcher_group::WatcherGroup;
use watchkv::KeyRange;

const N: usize = 100_000;

fn watcher(i: usize, range: KeyRange) -> Watcher {
    Watcher {
        key: WatcherKey { stream: (i / 100) as u64, id: (i % 100) as i64, seq: i as u64 },
        range,
        start_rev: 0,
        min_rev: 1,
        filters: Filters::default(),
        prev_kv: false,
        cancel: watchkv::watch::watcher::CancelFlag::new(),
    }
}

/// `n` distinct random keys of 16 bytes, sorted.
fn sorted_keys(rng: &mut StdRng, n: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(n);
    while keys.len() < n {
        keys.extend((keys.len()..n).map(|_| {
            let mut k = b"/registry/".to_vec();
            k.extend((0..6).map(|_| rng.random_range(b'a'..=b'z')));
            k
        }));
        keys.sort_unstable();
        keys.dedup();
    }
    keys
}

/// 99,990 disjoint intervals `[k[2i], k[2i+1])` between consecutive sorted random keys, plus 10
/// nested intervals around the probe key `k[2j+1]` (which no disjoint interval contains, their
/// ends being exclusive). Inserted in random order.
fn range_group(rng: &mut StdRng) -> (WatcherGroup, Vec<u8>) {
    const HITS: usize = 10;
    let keys = sorted_keys(rng, 2 * (N - HITS));
    let j = keys.len() / 4;
    let probe = keys[2 * j + 1].clone();
    let mut ranges: Vec<KeyRange> =
        keys.chunks_exact(2).map(|p| KeyRange::interval(p[0].clone(), p[1].clone())).collect();
    ranges.extend((0..HITS).map(|m| KeyRange::interval(keys[2 * j + 1 - m].clone(), keys[2 * j + 2 + m].clone())));
    // Fisher-Yates, so the tree sees no particular order.
    for i in (1..ranges.len()).rev() {
        ranges.swap(i, rng.random_range(0..=i));
    }
    let mut g = WatcherGroup::new();
    for (i, r) in ranges.into_iter().enumerate() {
        assert!(g.insert(watcher(i, r)).is_ok());
    }
    (g, probe)
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut group = c.benchmark_group("watcher_group");

    let (ranges, probe) = range_group(&mut rng);
    let mut out = Vec::with_capacity(64);
    ranges.matching(&probe, &mut out);
    assert_eq!(out.len(), 10, "probe must hit exactly 10 intervals");
    group.bench_function("match_one_event/100k_ranges_10_match", |b| {
        b.iter(|| {
            out.clear();
            ranges.matching(black_box(&probe), &mut out);
            black_box(out.len())
        });
    });

    let keys = sorted_keys(&mut rng, N);
    let mut singles = WatcherGroup::new();
    for (i, k) in keys.iter().enumerate() {
        assert!(singles.insert(watcher(i, KeyRange::Single(k.clone()))).is_ok());
    }
    let probe = keys[N / 3].clone();
    out.clear();
    singles.matching(&probe, &mut out);
    assert_eq!(out.len(), 1);
    group.bench_function("match_one_event/100k_keys_1_match", |b| {
        b.iter(|| {
            out.clear();
            singles.matching(black_box(&probe), &mut out);
            black_box(out.len())
        });
    });

    // One range watcher in and out of the 100k-range group.
    let mut ranges = ranges;
    let mut w = Some(watcher(N + 1, KeyRange::interval(probe.clone(), [probe.as_slice(), b"\xff"].concat())));
    group.bench_function("insert_remove/100k", |b| {
        b.iter(|| {
            if let Some(x) = w.take() {
                let slot = ranges.insert(x).ok();
                w = slot.and_then(|s| ranges.remove_slot(black_box(s)));
            }
        });
    });
    assert!(w.is_some());

    group.finish();

    // Whole-group passes of seconds at worst: ten samples.
    let mut hot = c.benchmark_group("watcher_group_hot");
    hot.sample_size(10);
    // 100k watchers on one key, then on one prefix, in streams of 10k (a stream's most): all
    // inserted, then all removed in the same order, as closing their streams removes them.
    for (name, range) in
        [("one_key", KeyRange::Single(b"/hot".to_vec())), ("one_prefix", KeyRange::prefix(b"/hot/".to_vec()))]
    {
        let on_one = |i: usize| Watcher {
            key: WatcherKey { stream: (i / 10_000) as u64, id: (i % 10_000) as i64, seq: i as u64 },
            ..watcher(i, range.clone())
        };
        hot.bench_function(format!("insert_all/100k_on_{name}"), |b| {
            b.iter_batched(
                || (0..N).map(on_one).collect::<Vec<_>>(),
                |ws| {
                    let mut g = WatcherGroup::new();
                    for w in ws {
                        assert!(g.insert(w).is_ok());
                    }
                    g
                },
                BatchSize::PerIteration,
            );
        });
        hot.bench_function(format!("remove_all/100k_on_{name}"), |b| {
            b.iter_batched(
                || {
                    let mut g = WatcherGroup::new();
                    let keys: Vec<WatcherKey> = (0..N).map(|i| on_one(i).key).collect();
                    for i in 0..N {
                        assert!(g.insert(on_one(i)).is_ok());
                    }
                    (g, keys)
                },
                |(mut g, keys)| {
                    for k in &keys {
                        assert!(g.remove(k).is_some());
                    }
                    g
                },
                BatchSize::PerIteration,
            );
        });
    }

    hot.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
