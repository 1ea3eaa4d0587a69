//! watchkv-actors: the runtime. The core's values live inside actors, never behind a shared
//! lock, and a watcher moves between groups only as a message.
//!
//! ```text
//!  client ─► StreamActor ── Watch (start 0 or in the future) ──► StoreActor (KvStore, synced, ring)
//!             │  ▲ bounded buffer (chan_buf_len responses)
//!             │  ├──── Deliver ◄─── StoreActor (notify on commit)
//!             │  ├──── Deliver ◄─── SyncerActor (unsynced group; snapshot catch-up)
//!             │  └──── Deliver ◄─── VictimActor (parked batches; retry tick)
//!             └── AddUnsynced (start <= current revision) ──► SyncerActor
//!  Full buffer ─► ParkVictims ─► VictimActor;  delivered / caught up ─► Promote ─► StoreActor
//! ```
//!
//! - [`protocol`]: every message between the actors, and the values they share.
//! - [`store`]: all writes and reads, leases, compaction, synced watchers.
//! - [`syncer_actor`]: the unsynced group and its catch-up loop.
//! - [`victim_actor`]: victims and their retry loop.
//! - [`auto_compactor`]: automatic compaction (etcd's `v3compactor`) on a timer;
//!   [`integrity_checker`]: the `HashKV` self-check that raises `CORRUPT`.
//! - [`stream_actor`]: one per client stream: ids, bounded buffer, delivery through a [`WatchSink`];
//!   [`response_queue`]: the queue from a stream to its transport.
//! - [`system`]: [`start`], start and shutdown order; [`handle`]: [`Handle`], the embedder's
//!   typed async API.
//! - [`config`]: [`ActorsConfig`], the runtime's tunables.
//! - [`api`]: the transport-neutral layer between `Handle` and the wire.
//! - [`gateway`]: etcd's HTTP/JSON gateway on actix-web, mountable with `App::configure`.
//! - [`grpc`]: etcd's gRPC API on tonic (KV, Watch, Lease, Maintenance, Cluster (one member),
//!   Auth, Lock, Election).
//! - [`listener`]: the client port, where gRPC and the gateway share one address as in etcd;
//!   [`tls`]: TLS on it, with etcd's flags.
//! - [`snapshot_stream`]: a store snapshot as etcd's stream of chunks (gRPC and the gateway).
//! - [`import`]: `watchkv import`, a running etcd's keyspace at one revision into a new store.
//! - [`mirror`]: mirror mode's follower (`watchkv --upstream`): upstream's revisions applied locally.
//! - [`forward`]: mirror mode's writes, lease calls and linearizable reads, forwarded to upstream.
//! - [`upstream`]: the connections of those three to an upstream etcd: URLs, TLS, credentials.
//! - [`sched`]: the runtime threads' requests to the OS scheduler (catch-up priority, store slice).
//! - [`thread_name`]: the names the server's threads show to the OS (`watchkv-store`, ...).
//! - `testing` (feature `testing`): a recorder standing in for a client stream and the
//!   watch-guarantee checker, for message-driven tests of a service that embeds watchkv.
//!
//! # Embedding
//!
//! [`start`] opens a store and runs the actors; the [`Handle`] it returns is the typed API
//! every transport uses. A watch is a [`futures::Stream`] of responses that cancels its watcher
//! when dropped. To serve etcd's HTTP/JSON gateway from an actix-web service, see
//! [`gateway::http_server`].
//!
//! ```no_run
//! use futures::StreamExt;
//! use watchkv_actors::watchkv::{KeyRange, PutRequest};
//! use watchkv_actors::{ActorsConfig, WatchCreate};
//!
//! # async fn run() -> Result<(), watchkv_actors::watchkv::Error> {
//! let handle = watchkv_actors::start(ActorsConfig::new("./my.data")).await?;
//! // Every change under "jobs/" from now on: the first response is the watcher's `created`.
//! let mut jobs = handle.watch(WatchCreate::new(&KeyRange::prefix("jobs/"), 0));
//! let put = handle.put(PutRequest::new("jobs/1", "queued")).await?;
//! while let Some(response) = jobs.next().await {
//!     for event in response.events.iter() {
//!         println!("{} at revision {}", String::from_utf8_lossy(&event.kv.key), event.kv.mod_revision);
//!     }
//!     if response.revision >= put.revision {
//!         break;
//!     }
//! }
//! drop(jobs); // cancels the watcher
//! handle.shutdown().await
//! # }
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod auto_compactor;
pub mod config;
pub mod forward;
pub mod gateway;
pub mod grpc;
pub mod handle;
pub mod idle_poll;
pub mod import;
pub mod integrity_checker;
pub mod listener;
pub mod mirror;
pub mod mirror_status;
mod outbox;
pub mod protocol;
pub mod reply_route;
pub mod response_queue;
pub mod sched;
pub mod sink;
pub mod snapshot_stream;
pub mod store;
pub mod stream_actor;
pub mod syncer_actor;
pub mod system;
#[cfg(feature = "testing")]
pub mod testing;
pub mod thread_name;
pub mod tls;
pub mod upstream;
pub mod victim_actor;

use std::sync::Arc;

use watchkv::watch::watcher::Watcher;
use watchkv::Event;

pub use config::{ActorsConfig, SlowConsumerPolicy};
pub use handle::{Handle, SystemStats, WatchStream};
pub use protocol::{CancelWatch, CloseStream, CreateWatch, Deliver, Delivery, RequestStreamProgress, WatchCreate};
pub use sched::CatchUpPriority;
pub use sink::{SinkClosed, SinkSend, StreamOutput, WatchSink};
pub use stream_actor::{BufferedResponses, StreamActor, CREATES_IN_FLIGHT, PROGRESS_REQUESTS_IN_FLIGHT};
pub use system::start;
/// The core crate, re-exported so that an embedder names one dependency.
pub use watchkv;

/// Applies a watcher's filters to the events it is owed (etcd `watcher.send`,
/// docs/etcd-semantics.md §6.3): `None` when there were events and every one was filtered out,
/// so nothing is sent.
pub(crate) fn filtered_events(w: &Watcher, mut events: Vec<Arc<Event>>) -> Option<Vec<Arc<Event>>> {
    if events.is_empty() {
        return None;
    }
    if w.filters.no_put || w.filters.no_delete {
        events.retain(|e| w.filters.accepts(e));
    }
    (!events.is_empty()).then_some(events)
}
