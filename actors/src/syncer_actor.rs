//! Owns the unsynced watcher group and catches it up from a storage snapshot (etcd
//! `syncWatchersLoop` / `syncWatchers`, docs/etcd-semantics.md §6.5). `SyncerActor` runs on
//! its own arbiter and reads history through a snapshot, so a long catch-up never blocks a
//! write: where etcd holds its store mutex for the whole scan (docs/etcd-semantics.md §9 item 1),
//! the writer here never waits. It reads through a [`HistoryReader`], so that tests can make a
//! read fail; a failed read is retried with backoff, and a watcher whose reads keep failing is
//! cancelled with a reason, never dropped silently. A read fails for all the watchers it reads
//! at once (it scans from the lowest revision any of them needs), so after a failure each is
//! read on its own: one watcher's unreadable history never cancels another's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use watchkv::backend::RevisionReader;
use watchkv::watch::catch_up::{catch_up_pausing, CatchUp, CatchUpFailed};
use watchkv::watch::event_batch::BatchLimits;
use watchkv::watch::response::WatchResponse;
use watchkv::watch::watcher::{StreamId, Watcher, WatcherKey};
use watchkv::watch::watcher_group::WatcherGroup;
use watchkv::Error;

use crate::config::ActorsConfig;
use crate::filtered_events;
use crate::protocol::{
    AddUnsynced, CancelWatchers, Counters, Deliver, Delivery, GetSyncerStats, ParkVictims, Promote, RegisterStream,
    ReleaseStorage, RevisionClock, StreamInbox, SyncTick, SyncerStats, UnregisterStream, UseStorage, Victim,
};

/// Delays before each retry of a watcher's failed catch-up read. A watcher whose read fails
/// once more after the last is cancelled: a few tries ride out a transient I/O error, and a
/// client whose history cannot be read hears so within a second rather than waiting forever.
pub const READ_RETRY_DELAYS: [Duration; 3] =
    [Duration::from_millis(10), Duration::from_millis(50), Duration::from_millis(250)];

/// Where the syncer reads history from: the core's [`RevisionReader`] in production; a test can
/// pass one that fails on purpose (see `testing::FailingReads`, feature `testing`).
pub trait HistoryReader: Send + 'static {
    /// Runs one catch-up read for `watchers` (`watchkv::watch::catch_up::catch_up_pausing`) at the
    /// revisions `clock` shows: the current revision read before the snapshot is taken (the
    /// snapshot holds every revision up to it), the compact revision after (the store
    /// publishes a compaction before its rows can start disappearing, so a snapshot missing
    /// rows below a compact revision is always read with that revision or a newer one, and
    /// watchers that needed those rows get a compaction notice, not a gap).
    ///
    /// # Errors
    /// A storage error, with every watcher handed back unchanged.
    fn catch_up(
        &self,
        watchers: Vec<Watcher>,
        clock: &RevisionClock,
        limits: BatchLimits,
    ) -> Result<CaughtUp, CatchUpFailed>;
}

/// What a catch-up read produced, and the revisions it was read at.
#[derive(Debug)]
pub struct CaughtUp {
    /// The current revision the read covers.
    pub current: i64,
    /// The compact revision it was read with.
    pub compact: i64,
    /// The watchers with their batches, and those below the compact revision.
    pub result: CatchUp,
}

impl HistoryReader for RevisionReader {
    fn catch_up(
        &self,
        watchers: Vec<Watcher>,
        clock: &RevisionClock,
        limits: BatchLimits,
    ) -> Result<CaughtUp, CatchUpFailed> {
        let current = clock.current();
        let snapshot = self.snapshot();
        let compact = clock.compact();
        // Between rows the scan hands the CPU back to a thread that offered it
        // (`sched::give_way`; only where this, the catch-up thread, runs at `SCHED_IDLE`).
        let result = catch_up_pausing(watchers, &snapshot, current, compact, limits, &mut crate::sched::give_way)?;
        Ok(CaughtUp { current, compact, result })
    }
}

/// The messages the syncer sends its peers.
pub struct SyncerPeers {
    /// The store: caught-up watchers.
    pub promote: Recipient<Promote>,
    /// The victim actor: watchers whose stream's mailbox was full.
    pub park_victims: Recipient<ParkVictims>,
}

/// The syncer actor.
pub struct SyncerActor {
    unsynced: WatcherGroup,
    /// Watchers whose read failed, waiting out their backoff before they are read again, each
    /// on its own (`read_apart`):
    /// (when they may, watchers). Still the syncer's (docs/design.md, invariant 1), and counted
    /// as unsynced.
    retrying: Vec<(Instant, Vec<Watcher>)>,
    /// Failed reads in a row, per watcher that has had one.
    read_failures: HashMap<WatcherKey, usize>,
    /// Watchers back from the backoff of a failed read, each to be read on its own before the
    /// next pass takes from `unsynced`: the read that failed may have failed on another
    /// watcher's history, and read together again it would fail for all of them again. Still
    /// the syncer's, and counted as unsynced.
    read_apart: VecDeque<Watcher>,
    streams: HashMap<StreamId, StreamInbox>,
    /// Where history is read; `None` while the store reopens its database after a storage
    /// failure (`ReleaseStorage` .. `UseStorage`), when the watchers wait in the group without
    /// reading, so that a reopen does not use up their read retries and cancel them.
    reader: Option<Box<dyn HistoryReader>>,
    peers: SyncerPeers,
    config: Arc<ActorsConfig>,
    clock: Arc<RevisionClock>,
    counters: Arc<Counters>,
    pass_scheduled: bool,
    passes: u64,
    failed_reads: u64,
}

impl SyncerActor {
    /// Returns a syncer reading history through `reader`.
    #[must_use]
    pub fn new(
        reader: Box<dyn HistoryReader>,
        peers: SyncerPeers,
        config: Arc<ActorsConfig>,
        clock: Arc<RevisionClock>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            unsynced: WatcherGroup::new(),
            retrying: Vec::new(),
            read_failures: HashMap::new(),
            read_apart: VecDeque::new(),
            streams: HashMap::new(),
            reader: Some(reader),
            peers,
            config,
            clock,
            counters,
            pass_scheduled: false,
            passes: 0,
            failed_reads: 0,
        }
    }

    /// Watchers the syncer holds: the unsynced group and those waiting to retry a read.
    fn unsynced_count(&self) -> usize {
        self.unsynced.len() + self.retrying.iter().map(|(_, ws)| ws.len()).sum::<usize>() + self.read_apart.len()
    }

    /// Whether a pass has watchers to read.
    fn has_readable(&self) -> bool {
        !self.unsynced.is_empty() || !self.read_apart.is_empty()
    }

    /// Schedules the next pass: at once after a pass that made progress, else after
    /// `watch_resync_period`. etcd waits up to 100 ms between passes of 1000 revisions; this
    /// keeps going while there is progress, so a watcher far behind catches up at disk speed.
    fn schedule(&mut self, ctx: &mut Context<Self>, soon: bool) {
        if self.pass_scheduled || !self.has_readable() || self.config.manual_ticks() {
            return;
        }
        self.pass_scheduled = true;
        let delay = if soon { Duration::ZERO } else { self.config.watch().watch_resync_period() };
        ctx.run_later(delay, |act, ctx| {
            act.pass_scheduled = false;
            let progressed = act.pass(ctx);
            act.schedule(ctx, progressed);
        });
    }

    /// One catch-up pass; returns whether any watcher received something or left the group.
    fn pass(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(reader) = &self.reader else { return false };
        if !self.has_readable() {
            return false;
        }
        self.passes += 1;
        let started = Instant::now();
        let read_alone = self.read_apart.pop_front();
        let was_alone = read_alone.is_some();
        let chosen = match read_alone {
            Some(alone) => vec![alone],
            None => self.unsynced.take(self.config.watch().max_watchers_per_sync()),
        };
        let chosen: Vec<Watcher> = chosen.into_iter().filter(|w| !w.is_cancelled()).collect();
        let chosen_count = chosen.len();
        let read = match reader.catch_up(chosen, &self.clock, self.config.watch().batch_limits()) {
            Ok(read) => read,
            Err(failed) => {
                self.read_failed(failed, ctx);
                // The watchers still to be read alone need not wait a period each.
                return was_alone && !self.read_apart.is_empty();
            }
        };
        let CaughtUp { current, compact, result } = read;
        if !self.read_failures.is_empty() {
            // Read at last: their count starts again.
            for w in result.compacted.iter().chain(result.batches.iter().map(|(w, _)| w)) {
                self.read_failures.remove(&w.key);
            }
        }
        let before = self.unsynced.len() + chosen_count;

        // Compaction notices (docs/etcd-semantics.md §6.5 step 2): a watcher that gets one is
        // done; one whose stream is full tries again next pass.
        for w in result.compacted {
            let Some(recipient) = self.streams.get(&w.key.stream) else { continue };
            let notice = Delivery { key: w.key, response: WatchResponse::compacted(w.key.id, compact) };
            if let Err(SendError::Full(_)) = recipient.try_deliver(Deliver::catch_up(vec![notice])) {
                let _ = self.unsynced.insert(w);
            }
        }

        let mut promote = Vec::new();
        let mut by_stream: HashMap<StreamId, Vec<(Watcher, Option<WatchResponse>, bool)>> = HashMap::new();
        for (w, batch) in result.batches {
            crate::sched::give_way();
            let truncated = batch.is_truncated();
            let response =
                filtered_events(&w, batch.events).map(|evs| WatchResponse::events(w.key.id, current, evs, w.prev_kv));
            if response.is_none() && !truncated {
                // Nothing to send: synced without a response (docs/etcd-semantics.md §6.5
                // step 5).
                promote.push(w);
            } else {
                by_stream.entry(w.key.stream).or_default().push((w, response, truncated));
            }
        }
        let mut parked = Vec::new();
        let mut sent_any = false;
        for (stream, mut items) in by_stream {
            crate::sched::give_way();
            let Some(recipient) = self.streams.get(&stream) else { continue };
            // The responses move into the message and, refused, come back with it in the same
            // order (`Option::take` leaves `None` in `items`, which the refusal fills again).
            let entries: Vec<Delivery> = items
                .iter_mut()
                .filter_map(|(w, r, _)| r.take().map(|response| Delivery { key: w.key, response }))
                .collect();
            let msg = Deliver::catch_up(entries);
            let (responses, events) = msg.size();
            let sent = if responses == 0 { Ok(()) } else { recipient.try_deliver(msg) };
            match sent {
                Ok(()) => {
                    self.counters.delivered(responses, events);
                    sent_any = true;
                    for (w, _, truncated) in items {
                        if truncated {
                            let _ = self.unsynced.insert(w);
                        } else {
                            promote.push(w);
                        }
                    }
                }
                Err(SendError::Full(refused)) => {
                    // Each watcher is in `items` once, and the refused entries keep its order.
                    let mut refused = refused.entries.into_iter().peekable();
                    for (w, _, truncated) in items {
                        let response = refused.next_if(|d| d.key == w.key).map(|d| d.response);
                        match response {
                            Some(r) => parked.push(Victim::new(w, r)),
                            None if truncated => {
                                let _ = self.unsynced.insert(w);
                            }
                            None => promote.push(w),
                        }
                    }
                }
                Err(SendError::Closed(_)) => {
                    self.streams.remove(&stream);
                }
            }
        }
        if !parked.is_empty() {
            self.peers.park_victims.do_send(ParkVictims(parked));
        }
        if !promote.is_empty() {
            self.peers.promote.do_send(Promote(promote));
        }
        tracing::trace!(chosen = chosen_count, elapsed_us = started.elapsed().as_micros() as u64, "catch-up pass");
        // Progress: something left the group, or a truncated batch was delivered and the rest
        // can follow at once.
        self.unsynced.len() < before || sent_any
    }

    /// A read failed: each of its watchers waits out its next backoff delay outside the group,
    /// so the other watchers' passes go on meanwhile; one that has used every retry is
    /// cancelled with the error as the reason.
    fn read_failed(&mut self, failed: CatchUpFailed, ctx: &mut Context<Self>) {
        self.failed_reads += 1;
        let CatchUpFailed { error, watchers } = failed;
        // Failed reads in a row -> the watchers with that many.
        let mut by_failures: BTreeMap<usize, Vec<Watcher>> = BTreeMap::new();
        for w in watchers {
            if w.is_cancelled() {
                self.read_failures.remove(&w.key);
                continue;
            }
            let failures = self.read_failures.entry(w.key).or_insert(0);
            *failures += 1;
            by_failures.entry(*failures).or_default().push(w);
        }
        tracing::warn!(error = %error, watchers = by_failures.values().map(Vec::len).sum::<usize>(), "catch-up read failed");
        let now = Instant::now();
        for (failures, watchers) in by_failures {
            let Some(&delay) = READ_RETRY_DELAYS.get(failures - 1) else {
                for w in watchers {
                    self.cancel_unreadable(w, &error, failures);
                }
                continue;
            };
            self.retrying.push((now + delay, watchers));
            if !self.config.manual_ticks() {
                ctx.run_later(delay, |act, ctx| act.resume_retries(ctx, Some(Instant::now())));
            }
        }
    }

    /// Cancels a watcher whose history could not be read: its client gets a `canceled`
    /// response naming the error, through the stream's mailbox like any notice, and the stream
    /// forgets the id (as for a compaction notice).
    fn cancel_unreadable(&mut self, w: Watcher, error: &Error, attempts: usize) {
        self.read_failures.remove(&w.key);
        let reason = format!("watchkv: catch-up read failed {attempts} times: {error}");
        tracing::error!(stream = w.key.stream, watch_id = w.key.id, error = %error, "cancelling a watcher whose history cannot be read");
        w.cancel.cancel();
        if let Some(recipient) = self.streams.get(&w.key.stream) {
            // Past a full mailbox if need be (as the slow-consumer cancel): one per watcher,
            // and the client must hear of it.
            let response = WatchResponse::canceled(w.key.id, self.clock.current(), reason);
            recipient.deliver_notice(Deliver::live(vec![Delivery { key: w.key, response }]));
        }
    }

    /// Returns the watchers whose backoff has passed by `due_by` (all of them for `None`) to be
    /// read, each on its own, and schedules a pass.
    fn resume_retries(&mut self, ctx: &mut Context<Self>, due_by: Option<Instant>) {
        let mut resumed = false;
        let mut i = 0;
        while i < self.retrying.len() {
            if due_by.is_some_and(|t| self.retrying[i].0 > t) {
                i += 1;
                continue;
            }
            let (_, watchers) = self.retrying.swap_remove(i);
            for w in watchers {
                if !w.is_cancelled() && self.streams.contains_key(&w.key.stream) {
                    self.read_apart.push_back(w);
                    resumed = true;
                } else {
                    self.read_failures.remove(&w.key);
                }
            }
        }
        if resumed {
            self.schedule(ctx, true);
        }
    }

    /// Forgets the given watchers wherever the syncer holds them.
    fn remove(&mut self, keys: &[WatcherKey]) {
        for key in keys {
            self.unsynced.remove(key);
        }
        if !self.retrying.is_empty() {
            for (_, watchers) in &mut self.retrying {
                watchers.retain(|w| !keys.contains(&w.key));
            }
            self.retrying.retain(|(_, watchers)| !watchers.is_empty());
        }
        if !self.read_apart.is_empty() {
            self.read_apart.retain(|w| !keys.contains(&w.key));
        }
        if !self.read_failures.is_empty() {
            for key in keys {
                self.read_failures.remove(key);
            }
        }
    }
}

impl Actor for SyncerActor {
    type Context = Context<Self>;
}

impl Handler<AddUnsynced> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: AddUnsynced, ctx: &mut Self::Context) {
        // `msg.slot`, if any, goes back to its stream when `msg` drops here.
        for w in msg.watchers {
            if !w.is_cancelled() && self.streams.contains_key(&w.key.stream) {
                let _ = self.unsynced.insert(w);
            }
        }
        // New work is handled at once rather than at the next period.
        self.schedule(ctx, true);
    }
}

impl Handler<SyncTick> for SyncerActor {
    type Result = usize;

    fn handle(&mut self, _: SyncTick, ctx: &mut Self::Context) -> usize {
        // With manual ticks no timer ends a backoff: the tick does, whatever the delay.
        let due_by = if self.config.manual_ticks() { None } else { Some(Instant::now()) };
        self.resume_retries(ctx, due_by);
        let progressed = self.pass(ctx);
        self.schedule(ctx, progressed);
        self.unsynced_count()
    }
}

impl Handler<RegisterStream> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: RegisterStream, _: &mut Self::Context) {
        self.streams.insert(msg.stream, msg.inbox);
    }
}

impl Handler<UnregisterStream> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: UnregisterStream, _: &mut Self::Context) {
        self.streams.remove(&msg.stream);
        self.remove(&msg.watchers);
    }
}

impl Handler<CancelWatchers> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: CancelWatchers, _: &mut Self::Context) {
        self.remove(&msg.0);
    }
}

impl Handler<ReleaseStorage> for SyncerActor {
    type Result = ();

    fn handle(&mut self, _: ReleaseStorage, _: &mut Self::Context) {
        self.reader = None;
    }
}

impl Handler<UseStorage> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: UseStorage, ctx: &mut Self::Context) {
        self.reader = Some(Box::new(msg.0));
        // Watchers waiting for storage can catch up now.
        ctx.notify(SyncTick);
    }
}

impl Handler<GetSyncerStats> for SyncerActor {
    type Result = MessageResult<GetSyncerStats>;

    fn handle(&mut self, _: GetSyncerStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(SyncerStats {
            unsynced: self.unsynced_count(),
            passes: self.passes,
            failed_reads: self.failed_reads,
        })
    }
}
