//! Watch runtime benchmarks: fan-out, mailbox pressure, catch-up and memory, each against a real
//! actix system (`watchkv_actors::start`) in a temp dir with `Durability::Buffered`.
//!
//! Criterion measures what fits its model (many short, repeatable iterations); the rest are
//! one-shot measurements printed to stderr as `[section] ...` lines and repeated in a summary at
//! the end of the run.
//!
//! - `fanout` (criterion `fanout/*`, `put_latency/*`, plus one-shots): one put to 10k synced
//!   watchers on 1k streams (10 per stream; all on one key, then all on a prefix); the time from
//!   issuing the put until every sink has counted its event, as deliveries per second; put
//!   latency p50/p99 with no watchers vs 10k synced watchers (measured from a separate thread),
//!   both for puts to the watched key (each waiting for its fan-out) and to an unwatched key;
//!   back-to-back puts with the sustained delivery rate. One-shots stop after ~4 s each.
//! - `mailbox`: 100 streams watching a prefix, one of whose sinks stops completing sends; put
//!   throughput (sequential, and pipelined from 8 tasks so group commit batches them) with and
//!   without that stalled client, alternating phases in one system (31 pairs, ABBA order) so
//!   drift hits both alike; the median of the paired ratios, and `victims.parked_bytes` at the end
//!   of each stalled phase.
//! - `catchup`: 100k revisions prefilled with `KvStore::write_all`; 10k watchers from revision
//!   1 on 1k streams: time until all events are delivered and all are synced, put latency during
//!   that vs idle. Five rounds (fresh streams each), their put latency samples pooled: one round
//!   gives about 250 puts, too few for a stable p99. Then 10 prefix watchers catching up 100k
//!   revisions each.
//! - `memory`: a counting global allocator (per-thread shards, so counting adds no contention to
//!   the other sections); bytes per idle watcher (100k on 1k streams) and per idle stream (10k
//!   streams, with 0 and with 1 watcher).
//!
//! Sinks are counters (atomics, plus a `Notify` for the waiter) so the client side is never the
//! bottleneck. Without `--bench` (e.g. `cargo test --benches`), every scenario runs at a tiny scale
//! as a smoke test. A positional filter argument selects sections as well as criterion benches.
//!
//! Modules: `alloc` (the counting allocator), `mode` (arguments, scale, section filter), `report`
//! (figures, verdicts and the summary), `sinks` (counting and stalling clients), `harness` (the
//! system under test), `probe` (writers measuring put latency), and one module a section.

#[path = "../../../benches/common/counting_alloc.rs"]
mod alloc;
mod catchup;
mod fanout;
mod harness;
mod mailbox;
mod memory;
mod mode;
mod probe;
mod report;
mod sinks;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use crate::catchup::catchup;
use crate::fanout::fanout;
use crate::mailbox::mailbox;
use crate::memory::memory;
use crate::report::summary;

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = fanout, mailbox, catchup, memory, summary
}
criterion_main!(benches);
