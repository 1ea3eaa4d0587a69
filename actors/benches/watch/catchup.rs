//! Section `catchup`: watchers from revision 1 over a prefilled store, the time until they are
//! synced and put latency meanwhile.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::{Arbiter, ArbiterHandle};
use criterion::Criterion;
use watchkv::{Durability, KeyRange, KvStore, PutRequest, StoreConfig};
use watchkv_actors::{Handle, SystemStats};

use crate::harness::{close_all, counting_streams, create, wait_stats, Bench, VALUE};
use crate::mode::{scale, selected};
use crate::probe::{spawn_probe, Probe};
use crate::report::{commit_time, fmt_d, fmt_rate, lat, loadavg, note, quantile, verdict};
use crate::sinks::Progress;

/// Time between the puts of the writer that measures put latency.
const PACE: Duration = Duration::from_millis(1);

fn cu_key(i: usize) -> String {
    format!("cu/{i:05}")
}

/// Writes `revs` puts over `keys` keys straight into a store in `dir`, 1000 per group commit.
fn prefill(dir: &Path, revs: usize, keys: usize) {
    let mut store = KvStore::open(StoreConfig::new(dir).with_durability(Durability::Buffered)).expect("open");
    let mut i = 0;
    while i < revs {
        let n = (revs - i).min(1000);
        let reqs = (i..i + n).map(|j| PutRequest::new(cu_key(j % keys), VALUE));
        for r in store.write_all(reqs) {
            r.expect("prefill put");
        }
        i += n;
    }
    store.sync().expect("sync");
}

pub fn catchup(_: &mut Criterion) {
    if !selected("catchup") {
        return;
    }
    let s = scale();
    let dir = tempfile::tempdir().expect("temp dir");
    let t = Instant::now();
    prefill(dir.path(), s.cu_revs, s.cu_keys);
    note(format!(
        "[catchup] prefilled {} revisions over {} keys with KvStore::write_all in {}",
        s.cu_revs,
        s.cu_keys,
        fmt_d(t.elapsed())
    ));
    let t = Instant::now();
    let b = Bench::start_in(dir);
    note(format!("[catchup] system start (index restore) in {}", fmt_d(t.elapsed())));
    let probe = Arbiter::new();
    let progress = Progress::new();
    note(format!("[catchup] load average at start: {}", loadavg()));
    let st0 = b.block_on(b.handle.stats()).expect("stats");
    let idle = b.probe(&probe.handle(), Probe { pace: Some(PACE), ..Probe::spread("lat", s.cu_idle_probe) });
    let st1 = b.block_on(b.handle.stats()).expect("stats");
    note(format!(
        "[catchup] idle put latency (1 put per ms, from another thread): {}; store commit time per batch {}",
        lat(&idle),
        commit_time(&st0, &st1)
    ));

    // 10k single-key watchers from revision 1, each key written revs/keys times.
    let watchers = s.cu_streams * s.cu_per_stream;
    let per_key = (s.cu_revs / s.cu_keys) as u64;
    let mut during = Vec::new();
    let mut round_p99 = Vec::new();
    for round in 1..=s.cu_rounds {
        let c = b.block_on(catch_up(
            &b.handle,
            &probe.handle(),
            &progress,
            (s.cu_streams, s.cu_per_stream),
            |i| KeyRange::single(cu_key(i % s.cu_keys)),
            watchers as u64 * per_key,
        ));
        note(format!(
            "[catchup] round {round}: {watchers} watchers (1 key each, {} streams) from rev 1 over {} prefilled revisions: all created after {}, all {} events delivered after {}, all synced (unsynced 0, victims 0) after {}; {} catch-up passes; store commit time per batch {}; put latency meanwhile {}",
            s.cu_streams,
            s.cu_revs,
            fmt_d(c.created),
            watchers as u64 * per_key,
            fmt_d(c.delivered),
            fmt_d(c.synced),
            c.after.syncer.passes - c.before.syncer.passes,
            commit_time(&c.before, &c.after),
            lat(&c.latency)
        ));
        round_p99.push(quantile(&c.latency, 0.99).as_secs_f64() / quantile(&idle, 0.99).as_secs_f64());
        during.extend(c.latency);
    }
    let ratio = quantile(&during, 0.99).as_secs_f64() / quantile(&idle, 0.99).as_secs_f64();
    note(format!(
        "[catchup] put latency during those {} catch-ups (samples pooled): {}; p99 vs idle x{ratio:.2} (target <= 2x): {}; single rounds x{}",
        s.cu_rounds,
        lat(&during),
        verdict(ratio <= 2.0),
        round_p99.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" x")
    ));

    // 10 prefix watchers, each catching up every revision.
    let n = s.cu_prefix_watchers;
    let c = b.block_on(catch_up(
        &b.handle,
        &probe.handle(),
        &progress,
        (n, 1),
        |_| KeyRange::prefix("cu/"),
        (n * s.cu_revs) as u64,
    ));
    note(format!(
        "[catchup] {n} prefix watchers from rev 1: all {} events delivered after {} ({}), all synced after {}; {} passes, victims delivered {}",
        n * s.cu_revs,
        fmt_d(c.delivered),
        fmt_rate((n * s.cu_revs) as f64 / c.delivered.as_secs_f64()),
        fmt_d(c.synced),
        c.after.syncer.passes - c.before.syncer.passes,
        c.after.victims.delivered
    ));
    note(format!(
        "[catchup] {n} prefix watchers x {} revisions: {} until all synced (target <= 1.5 s; etcd 16.5 s): {}; put latency meanwhile {}",
        s.cu_revs,
        fmt_d(c.synced),
        verdict(c.synced <= Duration::from_millis(1500)),
        lat(&c.latency)
    ));
    note(format!("[catchup] load average at end: {}", loadavg()));
    b.stop();
    probe.stop();
}

/// What one catch-up measured; times from the opening of the first stream.
struct CatchUp {
    created: Duration,
    delivered: Duration,
    synced: Duration,
    /// Stats before the streams were opened, and once every watcher was synced.
    before: SystemStats,
    after: SystemStats,
    /// Put latency of the paced writer meanwhile.
    latency: Vec<Duration>,
}

/// Opens `streams.0` counting streams of `streams.1` watchers each from revision 1 (watcher `i`
/// on `range(i)`) while a writer on `probe` puts once per [`PACE`]; waits until all are created,
/// the sinks have counted `events` more events and every watcher is synced; then stops the writer
/// and closes the streams.
async fn catch_up(
    handle: &Handle,
    probe: &ArbiterHandle,
    progress: &Arc<Progress>,
    (streams, per_stream): (usize, usize),
    range: impl Fn(usize) -> KeyRange,
    events: u64,
) -> CatchUp {
    let watchers = streams * per_stream;
    let stop = Arc::new(AtomicBool::new(false));
    let before = handle.stats().await.expect("stats");
    let rx = spawn_probe(
        handle,
        probe,
        Probe { pace: Some(PACE), stop: Some(Arc::clone(&stop)), ..Probe::spread("lat", 0) },
    );
    let (created0, events0) = (progress.created(), progress.events());
    let t = Instant::now();
    let streams = counting_streams(handle, progress, streams);
    for (j, st) in streams.iter().enumerate() {
        for k in 0..per_stream {
            create(st, &range(j * per_stream + k), 1);
        }
    }
    progress.wait_created(created0 + watchers as u64).await;
    let created = t.elapsed();
    progress.wait_events(events0 + events).await;
    let delivered = t.elapsed();
    let after = wait_stats(handle, "all synced", |st| {
        st.syncer.unsynced == 0 && st.victims.victims == 0 && st.store.synced == watchers
    })
    .await;
    let synced = t.elapsed();
    stop.store(true, Ordering::Release);
    let latency = rx.await.expect("probe");
    close_all(handle, streams).await;
    CatchUp { created, delivered, synced, before, after, latency }
}
