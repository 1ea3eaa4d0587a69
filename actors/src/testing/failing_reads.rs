//! Owns [`FailingReads`]: a catch-up reader that fails on purpose, to test what a client sees
//! when the store cannot read its watchers' history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use watchkv::backend::RevisionReader;
use watchkv::watch::catch_up::CatchUpFailed;
use watchkv::watch::event_batch::BatchLimits;
use watchkv::watch::watcher::Watcher;
use watchkv::Error;

use crate::protocol::RevisionClock;
use crate::syncer_actor::{CaughtUp, HistoryReader};

/// Makes catch-up reads fail: the first `n` of them, all, or every read that includes a
/// watcher of a given key (as a damaged row in that key's history would). Clones share the
/// counts, so a test keeps one to look at after handing another to
/// [`super::start_with_history_reader`].
#[derive(Debug, Clone)]
pub struct FailingReads {
    /// Reads still to fail (`u64::MAX`: all).
    to_fail: Arc<AtomicU64>,
    /// Only reads with a watcher whose range holds this key fail.
    only_with: Option<Arc<[u8]>>,
    reads: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl FailingReads {
    /// Fails the first `n` catch-up reads, then reads through the store's reader.
    #[must_use]
    pub fn first(n: u64) -> Self {
        Self { to_fail: Arc::new(AtomicU64::new(n)), only_with: None, reads: Arc::default(), failed: Arc::default() }
    }

    /// Fails every catch-up read that includes a watcher whose range holds `key`; the others
    /// read through the store's reader.
    #[must_use]
    pub fn with_watcher_of(key: &[u8]) -> Self {
        Self { only_with: Some(key.into()), ..Self::always() }
    }

    /// Fails every catch-up read.
    #[must_use]
    pub fn always() -> Self {
        Self::first(u64::MAX)
    }

    /// Returns the catch-up reads attempted so far, failed ones included.
    #[must_use]
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Acquire)
    }

    /// Returns the catch-up reads failed so far.
    #[must_use]
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Acquire)
    }

    /// Returns a reader over `reader` that fails as configured: pass
    /// `|reader| failing.wrap(reader)` to [`super::start_with_history_reader`].
    #[must_use]
    pub fn wrap(&self, reader: RevisionReader) -> Box<dyn HistoryReader> {
        Box::new(Wrapped { reader, counts: self.clone() })
    }
}

/// The reader [`FailingReads::wrap`] makes.
struct Wrapped {
    reader: RevisionReader,
    counts: FailingReads,
}

impl HistoryReader for Wrapped {
    fn catch_up(
        &self,
        watchers: Vec<Watcher>,
        clock: &RevisionClock,
        limits: BatchLimits,
    ) -> Result<CaughtUp, CatchUpFailed> {
        self.counts.reads.fetch_add(1, Ordering::AcqRel);
        let to_fail = &self.counts.to_fail;
        let chosen = match &self.counts.only_with {
            Some(key) => watchers.iter().any(|w| w.range.contains(key)),
            None => true,
        };
        let fail = chosen
            && (to_fail.load(Ordering::Acquire) == u64::MAX
                || to_fail.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok());
        if fail {
            self.counts.failed.fetch_add(1, Ordering::AcqRel);
            let error = Error::Io(std::io::Error::other("injected catch-up read failure"));
            return Err(CatchUpFailed { error, watchers });
        }
        self.reader.catch_up(watchers, clock, limits)
    }
}
