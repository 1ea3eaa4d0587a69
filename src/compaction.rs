//! Owns physical compaction: a background thread that deletes history rows the index no longer
//! needs, in batches, and records the finished marker (etcd `kvstore_compaction.go`,
//! docs/etcd-semantics.md §5). Logical compaction (the index and the compact revision) is
//! `kv_store`'s, and happens at once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::{Backend, META_FINISHED_COMPACT};
use crate::error::{Error, Result};
use crate::revision::Revision;

/// How a physical compaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Done {
    Finished,
    Stopped,
    Failed(String),
}

/// The end of a physical compaction, shared between the worker and whoever waits for it.
#[derive(Debug, Default)]
struct Outcome {
    state: Mutex<Option<Done>>,
    changed: Condvar,
}

/// A handle on one scheduled physical compaction (etcd returns a channel that closes when it
/// finishes; gRPC `physical = true` waits on it).
#[derive(Debug, Clone)]
pub struct CompactionTicket {
    rev: i64,
    outcome: Arc<Outcome>,
}

impl CompactionTicket {
    /// Returns the revision compacted at.
    #[must_use]
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// Returns whether the physical compaction has ended (successfully or not).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.outcome.state.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    /// Blocks until the physical compaction has ended.
    ///
    /// # Errors
    /// Returns the storage error that stopped it, or an error if the store was closed first
    /// (the compaction then resumes when the store is reopened).
    pub fn wait(&self) -> Result<()> {
        let mut state = self.outcome.state.lock().map_err(|_| Error::Poisoned)?;
        loop {
            match state.as_ref() {
                Some(Done::Finished) => return Ok(()),
                Some(Done::Stopped) => return Err(Error::Stopped),
                Some(Done::Failed(reason)) => {
                    return Err(Error::CompactionFailed { rev: self.rev, reason: reason.clone() })
                }
                None => {}
            }
            state = self.outcome.changed.wait(state).map_err(|_| Error::Poisoned)?;
        }
    }

    fn finish(&self, result: Done) {
        if let Ok(mut state) = self.outcome.state.lock() {
            *state = Some(result);
        }
        self.outcome.changed.notify_all();
    }
}

struct Job {
    keep: HashSet<Revision>,
    ticket: CompactionTicket,
}

/// Settings of the worker.
#[derive(Debug, Clone, Copy)]
pub struct CompactorSettings {
    /// Rows examined per batch (etcd `CompactionBatchLimit`).
    pub batch_limit: usize,
    /// Pause between batches (etcd `CompactionSleepInterval`).
    pub sleep_interval: Duration,
}

/// The background worker; jobs run one at a time in the order they were scheduled.
pub struct Compactor {
    jobs: Option<mpsc::Sender<Job>>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor").finish_non_exhaustive()
    }
}

impl Compactor {
    /// Starts the worker thread.
    ///
    /// # Errors
    /// Fails if the thread cannot be spawned.
    pub fn start(backend: Backend, settings: CompactorSettings) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::clone(&stop);
        let worker = std::thread::Builder::new().name("watchkv-compactor".into()).spawn(move || {
            for job in rx {
                let result = compact_rows(&backend, job.ticket.rev, &job.keep, settings, &worker_stop);
                match &result {
                    // The store is closing; the compaction resumes when it is opened again.
                    Err(Error::Stopped) => {
                        tracing::info!(
                            rev = job.ticket.rev,
                            "physical compaction stopped; it resumes at the next open"
                        );
                    }
                    Err(e) => tracing::error!(rev = job.ticket.rev, error = %e, "physical compaction failed"),
                    Ok(()) => {}
                }
                job.ticket.finish(match result {
                    Ok(()) => Done::Finished,
                    Err(Error::Stopped) => Done::Stopped,
                    Err(e) => Done::Failed(e.to_string()),
                });
            }
        })?;
        Ok(Self { jobs: Some(tx), stop, worker: Some(worker) })
    }

    /// Schedules the physical compaction at `rev`, deleting every row with `main <= rev` whose
    /// revision is not in `keep`.
    #[must_use]
    pub fn schedule(&self, rev: i64, keep: HashSet<Revision>) -> CompactionTicket {
        let ticket = CompactionTicket { rev, outcome: Arc::new(Outcome::default()) };
        let job = Job { keep, ticket: ticket.clone() };
        let sent = self.jobs.as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            ticket.finish(Done::Stopped);
        }
        ticket
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        // Stop between batches; an unfinished compaction resumes on the next open because its
        // scheduled marker is ahead of the finished one.
        self.stop.store(true, Ordering::SeqCst);
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Deletes, batch by batch, the rows with `main <= rev` that are not in `keep`, then records
/// `rev` as the finished compaction (etcd `scheduleCompaction`). Callable directly from tests.
///
/// # Errors
/// Fails on storage errors, or with `Stopped` if `stop` is raised before the end (the marker is
/// then not written).
pub fn compact_rows(
    backend: &Backend,
    rev: i64,
    keep: &HashSet<Revision>,
    settings: CompactorSettings,
    stop: &AtomicBool,
) -> Result<()> {
    let mut from = Revision::new(0, 0);
    loop {
        let keys = backend.row_keys_up_to(from, rev, settings.batch_limit)?;
        let Some(last) = keys.last().copied() else { break };
        let mut batch = backend.batch();
        for key in keys.iter().filter(|k| !keep.contains(&k.rev)) {
            batch.delete_row(*key);
        }
        batch.commit()?;
        // The next revision key sorts after both the put and the tombstone key of `last`.
        from = Revision::new(last.rev.main, last.rev.sub.saturating_add(1));
        if keys.len() < settings.batch_limit {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        std::thread::sleep(settings.sleep_interval);
    }
    let mut batch = backend.batch();
    batch.put_meta(META_FINISHED_COMPACT, rev);
    batch.commit()?;
    backend.sync()?;
    tracing::debug!(rev, "finished physical compaction");
    Ok(())
}
