//! Section `memory`: live bytes per idle watcher and per idle stream, from the counting allocator.

use std::time::Duration;

use criterion::Criterion;
use watchkv::KeyRange;

use crate::alloc::{alloc_calls, live_bytes};
use crate::harness::{close_all, counting_streams, create_synced, wait_stats, Bench};
use crate::mode::{scale, selected};
use crate::report::{note, verdict};
use crate::sinks::Progress;
use watchkv_actors::SystemStats;

/// Lets background work settle, then reads the live-bytes counter.
async fn settled_live_bytes() -> isize {
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    live_bytes()
}

pub fn memory(_: &mut Criterion) {
    if !selected("memory") {
        return;
    }
    let s = scale();
    // Per idle watcher: N watchers on M streams opened beforehand.
    {
        let b = Bench::start();
        let progress = Progress::new();
        b.block_on(async {
            let streams = counting_streams(&b.handle, &progress, s.mem_watcher_streams);
            wait_stats(&b.handle, "streams registered", |st| st.store.streams == s.mem_watcher_streams).await;
            let before = settled_live_bytes().await;
            let allocs = alloc_calls();
            let per_stream = s.mem_watchers / s.mem_watcher_streams;
            let range = |i| KeyRange::single(format!("mw/{i:06}"));
            let synced = |st: &SystemStats| st.store.synced == s.mem_watchers;
            create_synced(&b.handle, &progress, &streams, per_stream, range, synced).await;
            let after = settled_live_bytes().await;
            let allocs = alloc_calls() - allocs;
            let per = (after - before) as f64 / s.mem_watchers as f64;
            note(format!(
                "[memory] per idle watcher (single 9-byte key, {} watchers on {} streams): {per:.0} B live ({} allocation calls per watcher while creating) (target <= 300 B): {}",
                s.mem_watchers,
                s.mem_watcher_streams,
                allocs / s.mem_watchers,
                verdict(per <= 300.0)
            ));
            let before = settled_live_bytes().await;
            let mut prefix_streams = counting_streams(&b.handle, &progress, s.mem_watcher_streams);
            wait_stats(&b.handle, "streams registered", |st| st.store.streams == 2 * s.mem_watcher_streams).await;
            let mid = settled_live_bytes().await;
            let range = |i| KeyRange::prefix(format!("mx/{i:06}/"));
            let synced = |st: &SystemStats| st.store.synced == 2 * s.mem_watchers;
            create_synced(&b.handle, &progress, &prefix_streams, per_stream, range, synced).await;
            let after = settled_live_bytes().await;
            let per = (after - mid) as f64 / s.mem_watchers as f64;
            note(format!(
                "[memory] per idle prefix watcher (distinct 10-byte prefixes, same layout): {per:.0} B live; those {} streams alone: {:.0} B each",
                s.mem_watcher_streams,
                (mid - before) as f64 / s.mem_watcher_streams as f64
            ));
            prefix_streams.extend(streams);
            close_all(&b.handle, prefix_streams).await;
        });
        b.stop();
    }
    // Per idle stream: with no watcher, then with one watcher each.
    {
        let b = Bench::start();
        let progress = Progress::new();
        b.block_on(async {
            let before = settled_live_bytes().await;
            let streams = counting_streams(&b.handle, &progress, s.mem_streams);
            wait_stats(&b.handle, "streams registered", |st| st.store.streams == s.mem_streams).await;
            let after = settled_live_bytes().await;
            let bare = (after - before) as f64 / s.mem_streams as f64;
            close_all(&b.handle, streams).await;

            let before = settled_live_bytes().await;
            let streams = counting_streams(&b.handle, &progress, s.mem_streams);
            let range = |i| KeyRange::single(format!("ms/{i:06}"));
            let synced = |st: &SystemStats| st.store.streams == s.mem_streams && st.store.synced == s.mem_streams;
            create_synced(&b.handle, &progress, &streams, 1, range, synced).await;
            let after = settled_live_bytes().await;
            let with_one = (after - before) as f64 / s.mem_streams as f64;
            note(format!(
                "[memory] per idle stream ({} streams): {bare:.0} B with no watcher, {with_one:.0} B with 1 watcher (target <= 4096 B): {}",
                s.mem_streams,
                verdict(with_one <= 4096.0)
            ));
            close_all(&b.handle, streams).await;
        });
        b.stop();
    }
}
