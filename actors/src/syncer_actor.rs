//! Owns the unsynced watcher group and catches it up from a storage snapshot (etcd
//! `syncWatchersLoop` / `syncWatchers`, spec §6.5). `SyncerActor` runs on its own arbiter and
//! reads history through a fjall snapshot, so a long catch-up never blocks a write: where etcd
//! holds its store mutex for the whole scan (spec §9.1), the writer here never waits.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use watchkv::backend::RevisionReader;
use watchkv::watch::catch_up::catch_up;
use watchkv::watch::response::WatchResponse;
use watchkv::watch::watcher::{StreamId, Watcher};
use watchkv::watch::watcher_group::WatcherGroup;

use crate::store_actor::{
    CancelWatchers, Counters, Promote, RegisterStream, RevisionClock, StoreActor, UnregisterStream,
};
use crate::stream_actor::{Deliver, Delivery};
use crate::victim_actor::{ParkVictims, Victim, VictimActor};
use crate::{filtered_events, ActorsConfig};

/// Adds watchers to the unsynced group (an empty list just asks for a pass soon).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AddUnsynced(pub Vec<Watcher>);

/// Runs one catch-up pass now (tests send it by hand, like etcd's tests call
/// `syncWatchers()`); answers with the number of watchers still unsynced.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct SyncTick;

/// Tells the syncer where the store is.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetStore(pub Addr<StoreActor>);

/// Observable state of the syncer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncerStats {
    /// Watchers in the unsynced group.
    pub unsynced: usize,
    /// Catch-up passes run.
    pub passes: u64,
}

/// Returns [`SyncerStats`].
#[derive(Debug, Message)]
#[rtype(result = "SyncerStats")]
pub struct GetSyncerStats;

/// The syncer actor.
pub struct SyncerActor {
    unsynced: WatcherGroup,
    streams: HashMap<StreamId, Recipient<Deliver>>,
    reader: RevisionReader,
    store: Option<Addr<StoreActor>>,
    victims: Addr<VictimActor>,
    config: Arc<ActorsConfig>,
    clock: Arc<RevisionClock>,
    counters: Arc<Counters>,
    pass_scheduled: bool,
    passes: u64,
}

impl SyncerActor {
    /// Returns a syncer reading history through `reader`.
    #[must_use]
    pub fn new(
        reader: RevisionReader,
        victims: Addr<VictimActor>,
        config: Arc<ActorsConfig>,
        clock: Arc<RevisionClock>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            unsynced: WatcherGroup::new(),
            streams: HashMap::new(),
            reader,
            store: None,
            victims,
            config,
            clock,
            counters,
            pass_scheduled: false,
            passes: 0,
        }
    }

    /// Schedules the next pass: at once after a pass that made progress, else after
    /// `watch_resync_period`. etcd waits up to 100 ms between passes of 1000 revisions; we keep
    /// going while there is progress, so a watcher far behind catches up at disk speed.
    fn schedule(&mut self, ctx: &mut Context<Self>, soon: bool) {
        if self.pass_scheduled || self.unsynced.is_empty() || self.config.manual_ticks {
            return;
        }
        self.pass_scheduled = true;
        let delay = if soon { std::time::Duration::ZERO } else { self.config.watch.watch_resync_period() };
        ctx.run_later(delay, |act, ctx| {
            act.pass_scheduled = false;
            let progressed = act.pass();
            act.schedule(ctx, progressed);
        });
    }

    /// One catch-up pass; returns whether any watcher received something or left the group.
    fn pass(&mut self) -> bool {
        if self.unsynced.is_empty() {
            return false;
        }
        self.passes += 1;
        let started = Instant::now();
        let chosen: Vec<Watcher> = self
            .unsynced
            .take(self.config.watch.max_watchers_per_sync())
            .into_iter()
            .filter(|w| !w.is_cancelled())
            .collect();
        let chosen_count = chosen.len();
        // Current before the snapshot (it holds every revision up to it), compact after it: the
        // store publishes a compaction before its rows can start disappearing, so a snapshot
        // missing rows below a compact revision is always read with that revision or a newer
        // one, and watchers that needed those rows get a compaction notice, not a gap.
        let current = self.clock.current();
        let snapshot = self.reader.snapshot();
        let compact = self.clock.compact();
        let result = match catch_up(chosen, &snapshot, current, compact, self.config.watch.watch_batch_max_revs()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "catch-up read failed; the watchers are lost");
                return false;
            }
        };
        drop(snapshot);
        let before = self.unsynced.len() + chosen_count;

        // Compaction notices (spec §6.5 step 2): a watcher that gets one is done; one whose
        // stream is full tries again next pass.
        for w in result.compacted {
            let Some(recipient) = self.streams.get(&w.key.stream) else { continue };
            let notice = Delivery { key: w.key, response: WatchResponse::compacted(w.key.id, compact) };
            if let Err(SendError::Full(_)) = recipient.try_send(Deliver::catch_up(vec![notice])) {
                let _ = self.unsynced.insert(w);
            }
        }

        let mut promote = Vec::new();
        let mut by_stream: HashMap<StreamId, Vec<(Watcher, Option<WatchResponse>, bool)>> = HashMap::new();
        for (w, batch) in result.batches {
            let truncated = batch.is_truncated();
            let response =
                filtered_events(&w, batch.events).map(|evs| WatchResponse::events(w.key.id, current, evs, w.prev_kv));
            if response.is_none() && !truncated {
                // Nothing to send: synced without a response (spec §6.5 step 5).
                promote.push(w);
            } else {
                by_stream.entry(w.key.stream).or_default().push((w, response, truncated));
            }
        }
        let mut parked = Vec::new();
        let mut sent_any = false;
        for (stream, items) in by_stream {
            let Some(recipient) = self.streams.get(&stream) else { continue };
            let entries: Vec<Delivery> = items
                .iter()
                .filter_map(|(w, r, _)| r.clone().map(|response| Delivery { key: w.key, response }))
                .collect();
            let events: usize = entries.iter().map(|e| e.response.events.len()).sum();
            let responses = entries.len();
            let sent = if entries.is_empty() { Ok(()) } else { recipient.try_send(Deliver::catch_up(entries)) };
            match sent {
                Ok(()) => {
                    self.counters.events_sent.fetch_add(events as u64, Ordering::Relaxed);
                    self.counters.responses_sent.fetch_add(responses as u64, Ordering::Relaxed);
                    sent_any = true;
                    for (w, _, truncated) in items {
                        if truncated {
                            let _ = self.unsynced.insert(w);
                        } else {
                            promote.push(w);
                        }
                    }
                }
                Err(SendError::Full(_)) => {
                    for (w, response, truncated) in items {
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
            self.victims.do_send(ParkVictims(parked));
        }
        if !promote.is_empty() {
            if let Some(store) = &self.store {
                store.do_send(Promote(promote));
            }
        }
        tracing::trace!(chosen = chosen_count, elapsed_us = started.elapsed().as_micros() as u64, "catch-up pass");
        // Progress: something left the group, or a truncated batch was delivered and the rest
        // can follow at once.
        self.unsynced.len() < before || sent_any
    }
}

impl Actor for SyncerActor {
    type Context = Context<Self>;
}

impl Handler<SetStore> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: SetStore, _: &mut Self::Context) {
        self.store = Some(msg.0);
    }
}

impl Handler<AddUnsynced> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: AddUnsynced, ctx: &mut Self::Context) {
        for w in msg.0 {
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
        let progressed = self.pass();
        self.schedule(ctx, progressed);
        self.unsynced.len()
    }
}

impl Handler<RegisterStream> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: RegisterStream, _: &mut Self::Context) {
        self.streams.insert(msg.stream, msg.deliver);
    }
}

impl Handler<UnregisterStream> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: UnregisterStream, _: &mut Self::Context) {
        self.streams.remove(&msg.stream);
        for key in &msg.watchers {
            self.unsynced.remove(key);
        }
    }
}

impl Handler<CancelWatchers> for SyncerActor {
    type Result = ();

    fn handle(&mut self, msg: CancelWatchers, _: &mut Self::Context) {
        for key in &msg.0 {
            self.unsynced.remove(key);
        }
    }
}

impl Handler<GetSyncerStats> for SyncerActor {
    type Result = MessageResult<GetSyncerStats>;

    fn handle(&mut self, _: GetSyncerStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(SyncerStats { unsynced: self.unsynced.len(), passes: self.passes })
    }
}
