//! The system under test: a real actix system on a temporary store, and helpers that open
//! streams, create watchers and wait on the runtime's stats.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_rt::SystemRunner;
use watchkv::{Durability, KeyRange};
use watchkv_actors::{ActorsConfig, Handle, SystemStats};
use watchkv_actors::{CloseStream, CreateWatch, StreamActor, WatchCreate};

use crate::sinks::{CountingSink, Progress, WAIT_LIMIT};

pub const VALUE: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Buffered writes, no pause between compaction batches and no lease ticks.
fn config(dir: &Path) -> ActorsConfig {
    let c = ActorsConfig::new(dir);
    let store = c.store().clone().with_durability(Durability::Buffered).with_compaction_sleep_interval(Duration::ZERO);
    c.with_store(store).with_lease_tick(None)
}

/// An actix system with a running store in a temp dir. Stream actors (the sinks' side) live on
/// the system's own thread, the one that runs `block_on`.
pub struct Bench {
    rt: SystemRunner,
    pub handle: Handle,
    _dir: tempfile::TempDir,
}

impl Bench {
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"))
    }

    pub fn start_in(dir: tempfile::TempDir) -> Self {
        let rt = actix_rt::System::new();
        let handle = rt.block_on(watchkv_actors::start(config(dir.path()))).expect("start");
        Self { rt, handle, _dir: dir }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn stop(self) {
        self.rt.block_on(async {
            self.handle.shutdown().await.expect("shutdown");
        });
    }
}

/// Polls the runtime's stats every millisecond until `cond` holds; panics after [`WAIT_LIMIT`].
pub async fn wait_stats(handle: &Handle, what: &str, cond: impl Fn(&SystemStats) -> bool) -> SystemStats {
    let start = Instant::now();
    loop {
        let stats = handle.stats().await.expect("stats");
        if cond(&stats) {
            return stats;
        }
        assert!(start.elapsed() < WAIT_LIMIT, "timed out waiting for {what}; stats {stats:#?}");
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Opens `n` streams with counting sinks (must run inside the system).
pub fn counting_streams(handle: &Handle, progress: &Arc<Progress>, n: usize) -> Vec<Addr<StreamActor>> {
    (0..n).map(|_| handle.open_stream(Arc::new(CountingSink(Arc::clone(progress))))).collect()
}

/// Asks `stream` for a watcher on `range` from revision `start` (0: from the next revision).
pub fn create(stream: &Addr<StreamActor>, range: &KeyRange, start: i64) {
    stream.do_send(CreateWatch(WatchCreate::new(range, start)));
}

/// Creates `per_stream` watchers from the current revision on each of `streams`, watcher `i` on
/// `range(i)`; waits until the sinks have counted their created responses and `synced` holds.
pub async fn create_synced(
    handle: &Handle,
    progress: &Progress,
    streams: &[Addr<StreamActor>],
    per_stream: usize,
    range: impl Fn(usize) -> KeyRange,
    synced: impl Fn(&SystemStats) -> bool,
) {
    let created0 = progress.created();
    for (j, st) in streams.iter().enumerate() {
        for k in 0..per_stream {
            create(st, &range(j * per_stream + k), 0);
        }
    }
    progress.wait_created(created0 + (streams.len() * per_stream) as u64).await;
    wait_stats(handle, "watchers synced", synced).await;
}

/// Closes every stream and waits until the runtime has forgotten them.
pub async fn close_all(handle: &Handle, streams: Vec<Addr<StreamActor>>) {
    for s in &streams {
        s.do_send(CloseStream);
    }
    drop(streams);
    wait_stats(handle, "streams closed", |s| {
        s.store.streams == 0 && s.store.synced == 0 && s.store.promoting == 0 && s.syncer.unsynced == 0
    })
    .await;
}
