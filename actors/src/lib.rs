//! watchkv-actors: the runtime. The core's values live inside actors, never behind a shared
//! lock, and a watcher moves between groups only as a message.
//!
//! ```text
//!  client ─► StreamActor ── Watch (start 0 or in the future) ──► StoreActor (KvStore, synced, ring)
//!             │  ▲ bounded mailbox (chan_buf_len)
//!             │  ├──── Deliver ◄─── StoreActor (notify on commit)
//!             │  ├──── Deliver ◄─── SyncerActor (unsynced group; snapshot catch-up)
//!             │  └──── Deliver ◄─── VictimActor (parked batches; retry tick)
//!             └── AddUnsynced (start <= current revision) ──► SyncerActor
//!  Full mailbox ─► ParkVictims ─► VictimActor;  delivered / caught up ─► Promote ─► StoreActor
//! ```
//!
//! - [`store_actor`]: all writes and reads, leases, compaction, synced watchers.
//! - [`syncer_actor`]: the unsynced group and its catch-up loop.
//! - [`victim_actor`]: victims and their retry loop.
//! - [`stream_actor`]: one per client stream: ids, mailbox, delivery through a [`sink::WatchSink`].
//! - [`system`]: `start(config) -> Handle`, the embedder's typed async API; start and shutdown order.
//! - [`gateway`]: etcd's HTTP/JSON gateway on actix-web, mountable with `App::configure`.
//! - [`grpc`]: etcd's gRPC API on tonic (KV, Watch, Lease, Maintenance.Status, Cluster.MemberList).
//! - [`listener`]: the client port, where gRPC and the gateway share one address as in etcd.
//! - [`sched`]: the runtime threads' requests to the OS scheduler (catch-up priority, store slice).
#![deny(missing_docs)]

pub mod api;
pub mod gateway;
pub mod grpc;
pub mod listener;
pub mod sched;
pub mod sink;
pub mod store_actor;
pub mod stream_actor;
pub mod syncer_actor;
pub mod system;
pub mod victim_actor;

use std::sync::Arc;
use std::time::Duration;

use watchkv::watch::watcher::Watcher;
use watchkv::{Event, StoreConfig, WatchConfig};

pub use sched::CatchUpPriority;
pub use sink::{SinkClosed, SinkSend, StreamOutput, WatchSink};
pub use stream_actor::{
    CancelWatch, CloseStream, CreateWatch, Deliver, Delivery, RequestStreamProgress, StreamActor, WatchCreate,
};
pub use system::{start, Handle, SystemStats, WatchStream};
/// The core crate, re-exported so that an embedder names one dependency.
pub use watchkv;

/// What to do with a watcher whose client stops reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// etcd's: keep it parked as a victim for as long as it takes. Default.
    #[default]
    Keep,
    /// Cancel it (with a `cancel_reason` naming the cause) once it is more than `lag_revisions`
    /// behind or has been undeliverable for longer than `parked_for`, so a dead client cannot
    /// hold memory forever (etcd #16839).
    CancelAfter {
        /// Largest tolerated distance from the current revision.
        lag_revisions: i64,
        /// Longest tolerated time parked.
        parked_for: Duration,
    },
}

/// Configuration of the runtime.
#[derive(Debug, Clone)]
pub struct ActorsConfig {
    /// The store.
    pub store: StoreConfig,
    /// The watch tunables.
    pub watch: WatchConfig,
    /// Slow-consumer policy. Default = [`SlowConsumerPolicy::Keep`].
    pub slow_consumer: SlowConsumerPolicy,
    /// How often due leases are expired; `None` = only by explicit `LeaseTick`. Default = 500 ms.
    pub lease_tick: Option<Duration>,
    /// Most watchers one stream may hold. Default = 10000.
    pub max_watchers_per_stream: usize,
    /// Revisions kept in memory to replay to promoted watchers. Default = 4096.
    pub ring_revisions: usize,
    /// Capacity of the store's mailbox; callers wait when it is full. Default = 1024.
    pub store_mailbox: usize,
    /// Disable every timer (catch-up, victim retry, progress): tests send the ticks by hand.
    pub manual_ticks: bool,
    /// How the syncer's thread competes for the CPU (Linux), so that a long catch-up yields the
    /// CPU to writes and live delivery when cores are short and still uses every idle cycle.
    /// Default = [`CatchUpPriority::Idle`]; see [`sched`].
    pub catch_up_priority: CatchUpPriority,
    /// Time slice requested for the store's thread (Linux 6.12 and later), shorter than the
    /// default so that the store, woken by a write, preempts a stream thread's delivery burst
    /// instead of waiting up to a whole slice behind it. `None` leaves the default.
    /// Default = 100 µs, the shortest the kernel grants.
    pub store_time_slice: Option<Duration>,
}

impl ActorsConfig {
    /// Returns the default configuration for a store in `path`.
    #[must_use]
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            store: StoreConfig::new(path),
            watch: WatchConfig::default(),
            slow_consumer: SlowConsumerPolicy::Keep,
            lease_tick: Some(Duration::from_millis(500)),
            max_watchers_per_stream: 10_000,
            ring_revisions: 4096,
            store_mailbox: 1024,
            manual_ticks: false,
            catch_up_priority: CatchUpPriority::Idle,
            store_time_slice: Some(Duration::from_micros(100)),
        }
    }
}

/// Applies a watcher's filters to the events it is owed (etcd `watcher.send`, spec §6.3):
/// `None` when there were events and every one was filtered out, so nothing is sent.
pub(crate) fn filtered_events(w: &Watcher, mut events: Vec<Arc<Event>>) -> Option<Vec<Arc<Event>>> {
    if events.is_empty() {
        return None;
    }
    if w.filters.no_put || w.filters.no_delete {
        events.retain(|e| w.filters.accepts(e));
    }
    (!events.is_empty()).then_some(events)
}
