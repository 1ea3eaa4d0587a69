//! Message-driven tests for a service that embeds watchkv (feature `testing`), written the way
//! the runtime's own tests are: start a runtime, open a [`RecordedStream`] (a watch stream
//! whose client is a recorder actor), send it messages, assert on what it recorded, and run the
//! watch-guarantee [`checker`] over the recording against the store's [`History`].
//!
//! - [`RecordedStream`], [`Recorder`]: a stream and the stand-in for its client; pausing the
//!   recorder makes a slow client.
//! - [`checker`]: etcd's watch guarantees (Ordered, Unique, Atomic, Bookmarkable, Reliable,
//!   Resumable, filters, IsCreate, PrevKV) over one recorded stream.
//! - [`History`]: what the checker checks against, built from a watcher on all keys.
//! - [`config`], [`wait_stats`], [`DEADLINE`]: a test configuration and waits with a deadline.
//! - [`start_with_history_reader`], [`FailingReads`]: a runtime whose catch-up reads fail.
//!
//! `actors/tests/embedder_testing.rs` is the complete template. In short:
//!
//! ```
//! use watchkv_actors::testing::{self, checker, History, RecordedStream};
//! use watchkv_actors::watchkv::{KeyRange, PutRequest};
//! use watchkv_actors::WatchCreate;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! actix_rt::System::new().block_on(async {
//!     let handle = watchkv_actors::start(testing::config(dir.path(), false)).await?;
//!     // A watcher on every key from the first revision: the history to check against.
//!     let everything = RecordedStream::open(&handle);
//!     everything.watch(KeyRange::all(), 1).await;
//!     // The stream under test.
//!     let stream = RecordedStream::open(&handle);
//!     let create = WatchCreate::new(&KeyRange::prefix("app/"), 0);
//!     stream.create(create.clone()).await;
//!     handle.put(PutRequest::new("app/a", "1")).await?;
//!     handle.put(PutRequest::new("other", "2")).await?;
//!     let log = stream.fence(&handle).await;
//!     assert_eq!(log.iter().map(|r| r.events.len()).sum::<usize>(), 1);
//!
//!     let history = History::from_responses(&everything.fence(&handle).await)?;
//!     checker::assert_stream_ok(&history, &[create], &log);
//!     handle.shutdown().await?;
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```

pub mod checker;
mod failing_reads;
mod history;
mod recorder;

use std::path::Path;
use std::time::{Duration, Instant};

use watchkv::backend::RevisionReader;
use watchkv::{Durability, Result};

pub use self::failing_reads::FailingReads;
pub use self::history::History;
pub use self::recorder::{RecordedStream, Recorder};
use crate::config::ActorsConfig;
use crate::handle::{Handle, SystemStats};
use crate::syncer_actor::HistoryReader;

/// How long a wait of this module lasts before it fails the test. Generous: CI machines are
/// small and noisy, and a wait that succeeds returns at once.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often [`wait_stats`] asks again.
const STATS_POLL: Duration = Duration::from_millis(5);

/// A test configuration for a store in `dir`: buffered durability (a crash test needs
/// `fsync`, a message-driven one does not), no pause between compaction batches, no lease
/// timer (tests send `LeaseTick` with the instant they want), and with `manual_ticks` every
/// other timer off too (tests send `SyncTick`, `RetryTick`, `ProgressTick` by hand).
#[must_use]
pub fn config(dir: &Path, manual_ticks: bool) -> ActorsConfig {
    let config = ActorsConfig::new(dir);
    let store =
        config.store().clone().with_durability(Durability::Buffered).with_compaction_sleep_interval(Duration::ZERO);
    config.with_store(store).with_lease_tick(None).with_manual_ticks(manual_ticks)
}

/// Starts a runtime like [`crate::start`], with the syncer's catch-up reads going through what
/// `reader` makes of the store's own reader (for example [`FailingReads::wrap`]).
///
/// # Errors
/// Fails if the store cannot be opened.
pub async fn start_with_history_reader(
    config: ActorsConfig,
    reader: impl FnOnce(RevisionReader) -> Box<dyn HistoryReader>,
) -> Result<Handle> {
    crate::system::start_with_history_reader(config, reader).await
}

/// Waits until `cond` holds of the runtime's stats and returns them.
///
/// # Panics
/// If the runtime has stopped, or after [`DEADLINE`], naming `what` and showing the stats.
pub async fn wait_stats(handle: &Handle, what: &str, cond: impl Fn(&SystemStats) -> bool) -> SystemStats {
    let start = Instant::now();
    loop {
        let stats = match handle.stats().await {
            Ok(stats) => stats,
            Err(e) => panic!("waiting for {what}: {e}"),
        };
        if cond(&stats) {
            return stats;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}; stats {stats:#?}");
        actix_rt::time::sleep(STATS_POLL).await;
    }
}
