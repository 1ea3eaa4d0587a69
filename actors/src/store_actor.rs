//! Owns the `KvStore`, the synced watcher group and the recent-revision ring: every write, every
//! read, compaction and leases go through `StoreActor`, and it notifies synced watchers when a
//! write commits (etcd `watchable_store.go notify`, spec §6.4). It is the only place that moves
//! the current revision and the only one that adds to `synced`, so the hand-off from catch-up to
//! live delivery happens at a revision boundary with no event able to fall between.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures::channel::oneshot;
use watchkv::watch::id_map::IdMap;
use watchkv::watch::response::WatchResponse;
use watchkv::watch::watcher::{StreamId, Watcher, WatcherKey};
use watchkv::watch::watcher_group::{WatcherGroup, WatcherSlot};
use watchkv::{
    Applied, Error, Event, KvStore, LeaseId, LeaseStatus, Persisted, RangeRequest, RangeResponse, Result, Write,
    WriteGroup,
};

use crate::stream_actor::{CloseStream, Deliver, Delivery};
use crate::syncer_actor::{AddUnsynced, SyncerActor};
use crate::victim_actor::{ParkVictims, Victim, VictimActor};
use crate::{filtered_events, ActorsConfig};

/// The revisions other actors may read without asking: published by the `StoreActor` after
/// each durable commit. Atomics, not a lock: readers only ever need a recent value.
#[derive(Debug)]
pub struct RevisionClock {
    current: AtomicI64,
    compact: AtomicI64,
}

impl RevisionClock {
    /// Returns a clock at the given revisions.
    #[must_use]
    pub fn new(current: i64, compact: i64) -> Self {
        Self { current: AtomicI64::new(current), compact: AtomicI64::new(compact) }
    }

    /// Returns the last durable revision.
    #[must_use]
    pub fn current(&self) -> i64 {
        self.current.load(Ordering::Acquire)
    }

    /// Returns the compact revision.
    #[must_use]
    pub fn compact(&self) -> i64 {
        self.compact.load(Ordering::Acquire)
    }
}

/// Counters shared with the other actors and the metrics endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events delivered to stream mailboxes (counted per watcher).
    pub events_sent: AtomicU64,
    /// Responses delivered to stream mailboxes.
    pub responses_sent: AtomicU64,
    /// Watchers cancelled by the slow-consumer policy.
    pub slow_cancels: AtomicU64,
    /// Write batches committed.
    pub write_batches: AtomicU64,
    /// Sum of write batch latencies in microseconds (for a mean).
    pub write_micros: AtomicU64,
}

/// A write (put, delete-range, txn or lease revoke) whose answer, of the write's own response
/// type, goes straight to `reply`, which the caller awaits on its own thread.
///
/// An answer through the message's own reply would travel through a future on this actor's
/// thread, which cannot run before the turn that committed the write ends, fan-out included;
/// this one reaches the writer as soon as the store answers it. The message itself is answered
/// once the write is queued, so a full mailbox still pushes back on the caller.
#[derive(Debug)]
pub struct SubmitWrite<W: Write> {
    /// The write.
    pub request: W,
    /// Where its answer goes, after it is durable.
    pub reply: oneshot::Sender<Result<W::Response>>,
}

impl<W: Write> Message for SubmitWrite<W> {
    type Result = ();
}

/// A read at a revision.
#[derive(Debug, Message)]
#[rtype(result = "Result<RangeResponse>")]
pub struct Range(pub RangeRequest);

/// Compacts at `revision`; with `physical`, answers once the rows are gone.
#[derive(Debug, Message)]
#[rtype(result = "Result<i64>")]
pub struct Compact {
    /// The compaction revision.
    pub revision: i64,
    /// Wait for the physical compaction.
    pub physical: bool,
}

/// Grants a lease (`id` 0: the store picks); answers with the id, the TTL and the current
/// revision.
#[derive(Debug, Message)]
#[rtype(result = "Result<(LeaseId, i64, i64)>")]
pub struct LeaseGrant {
    /// Requested id.
    pub id: LeaseId,
    /// TTL in seconds.
    pub ttl: i64,
}

/// Renews a lease once; answers with its TTL and the current revision.
#[derive(Debug, Message)]
#[rtype(result = "Result<(i64, i64)>")]
pub struct LeaseKeepAlive(pub LeaseId);

/// A lease's remaining TTL (and its keys); answers with the current revision too.
#[derive(Debug, Message)]
#[rtype(result = "Result<(LeaseStatus, i64)>")]
pub struct LeaseTimeToLive {
    /// The lease.
    pub id: LeaseId,
    /// Include attached keys.
    pub keys: bool,
}

/// Every lease id and the current revision.
#[derive(Debug, Message)]
#[rtype(result = "Result<(Vec<LeaseId>, i64)>")]
pub struct LeaseLeases;

/// Expires due leases now, or at the given instant (tests drive time by hand).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LeaseTick(pub Option<Instant>);

/// Registers a stream's delivery address: a stream sends it itself to the victim actor, the
/// syncer and the store, before anything else, so each knows the stream before any of its
/// watchers can arrive there.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct RegisterStream {
    /// The stream.
    pub stream: StreamId,
    /// Its mailbox.
    pub deliver: Recipient<Deliver>,
    /// Where to tell it to close on shutdown.
    pub close: Recipient<CloseStream>,
}

/// Returns the bytes the store occupies on disk.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64>")]
pub struct DbSize;

/// Forgets a closed stream and all its watchers (sent to the store, which forwards it to the
/// syncer and the victim actor after dropping the stream's synced watchers).
#[derive(Debug, Message, Clone)]
#[rtype(result = "()")]
pub struct UnregisterStream {
    /// The stream.
    pub stream: StreamId,
    /// Its watchers at close.
    pub watchers: Vec<WatcherKey>,
}

/// Registers a new watcher; answers with the revision for its `created` response. A stream sends
/// only watches that start at 0 or after the current revision; one that starts in history it
/// hands to the syncer itself (`AddUnsynced`), and the store would only forward it.
#[derive(Debug, Message)]
#[rtype(result = "i64")]
pub struct Watch(pub Watcher);

/// Removes cancelled watchers wherever they are (the syncer and victim actor get a copy).
#[derive(Debug, Message, Clone)]
#[rtype(result = "()")]
pub struct CancelWatchers(pub Vec<WatcherKey>);

/// Hands caught-up or delivered watchers back: each is synced if it has seen everything, else
/// replayed from the ring, else returned to the syncer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Promote(pub Vec<Watcher>);

/// Asks for a progress notification (etcd `progressIfSync`, spec §6.9): sent through the
/// stream's mailbox only if every listed watcher is synced and past its start revision.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RequestProgress {
    /// The stream.
    pub stream: StreamId,
    /// The watchers the answer covers.
    pub watchers: Vec<WatcherKey>,
    /// The id to answer with: -1 for a client request, the watcher's for periodic ones.
    pub watch_id: i64,
}

/// Places the next [`PROMOTE_PER_TURN`] watchers waiting in the store's promotion queue (sent
/// to self).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct PlacePromoted;

/// Most promoted watchers placed in one turn of the store. A catch-up pass hands over up to
/// `max_watchers_per_sync` (512) at once, and placing one costs about 1 µs (two group inserts
/// and its share of the ring replay); in one turn that held a write queued behind it for 0.3-1.4
/// ms (`cargo bench -p watchkv-actors --bench watch -- catchup`). In turns of 64 a write waits
/// at most one of them: turns to self run only after the messages already in the mailbox.
const PROMOTE_PER_TURN: usize = 64;

/// Flushes pending writes as one group commit (sent to self).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

/// Syncs and stops accepting writes (shutdown).
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct Shutdown;

/// Observable state of the store actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Watchers in the synced group.
    pub synced: usize,
    /// Watchers handed back by the syncer or the victim actor and not yet placed.
    pub promoting: usize,
    /// Streams registered.
    pub streams: usize,
    /// Current revision.
    pub current_rev: i64,
    /// Compact revision.
    pub compact_rev: i64,
    /// Revisions held in the recent-revision ring.
    pub ring_revisions: usize,
    /// Keys in the index.
    pub indexed_keys: usize,
    /// Leases.
    pub leases: usize,
}

/// Returns [`StoreStats`].
#[derive(Debug, Message)]
#[rtype(result = "StoreStats")]
pub struct GetStoreStats;

/// A write waiting for the next group commit, with its typed reply.
trait PendingWrite: Send {
    /// Applies the write inside the group.
    fn apply(&mut self, group: &mut WriteGroup<'_>);
    /// Answers the writer once the group is persisted; returns the events to notify.
    fn answer(self: Box<Self>, persisted: &Persisted) -> Vec<Event>;
    /// Answers the writer with `error` without applying the write.
    fn fail(self: Box<Self>, error: Error);
}

/// A [`SubmitWrite`] in the group-commit queue.
struct Queued<W: Write> {
    request: Option<W>,
    applied: Option<Applied<W::Response>>,
    reply: oneshot::Sender<Result<W::Response>>,
}

impl<W: Write> PendingWrite for Queued<W> {
    fn apply(&mut self, group: &mut WriteGroup<'_>) {
        if let Some(request) = self.request.take() {
            self.applied = Some(group.apply(request));
        }
    }

    fn answer(self: Box<Self>, persisted: &Persisted) -> Vec<Event> {
        let Some(applied) = self.applied else {
            let _ = self.reply.send(Err(Error::Internal("a queued write was answered before it was applied".into())));
            return Vec::new();
        };
        match applied.settle(persisted) {
            Ok(committed) => {
                let _ = self.reply.send(Ok(committed.response));
                committed.events
            }
            Err(e) => {
                let _ = self.reply.send(Err(e));
                Vec::new()
            }
        }
    }

    fn fail(self: Box<Self>, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

/// A map keyed by stream id (ids come from a process counter, so [`IdMap`]'s cheap hash fits).
pub type StreamMap<V> = IdMap<V>;

/// One flush's deliveries, by stream, each stream's in the order they must reach it.
type PerStream = StreamMap<Vec<Delivery>>;

/// The store actor. Runs on its own arbiter: writes block it on disk, nothing else waits.
pub struct StoreActor {
    store: Option<KvStore>,
    config: Arc<ActorsConfig>,
    synced: WatcherGroup,
    streams: StreamMap<Recipient<Deliver>>,
    /// How to close each stream on shutdown.
    closers: HashMap<StreamId, Recipient<CloseStream>>,
    /// The last revisions' events, oldest first, for replaying to promoted watchers.
    ring: VecDeque<(i64, Arc<[Arc<Event>]>)>,
    pending: Vec<Box<dyn PendingWrite>>,
    flush_scheduled: bool,
    /// Promoted watchers not yet placed, in arrival order ([`PROMOTE_PER_TURN`] per turn).
    promoting: VecDeque<Watcher>,
    place_scheduled: bool,
    clock: Arc<RevisionClock>,
    counters: Arc<Counters>,
    syncer: Addr<SyncerActor>,
    victims: Addr<VictimActor>,
    /// Reused buffer for matching.
    matched: Vec<WatcherSlot>,
}

impl StoreActor {
    /// Wraps an open store.
    pub fn new(
        store: KvStore,
        config: Arc<ActorsConfig>,
        clock: Arc<RevisionClock>,
        counters: Arc<Counters>,
        syncer: Addr<SyncerActor>,
        victims: Addr<VictimActor>,
    ) -> Self {
        Self {
            store: Some(store),
            config,
            synced: WatcherGroup::new(),
            streams: StreamMap::default(),
            closers: HashMap::new(),
            ring: VecDeque::new(),
            pending: Vec::new(),
            flush_scheduled: false,
            promoting: VecDeque::new(),
            place_scheduled: false,
            clock,
            counters,
            syncer,
            victims,
            matched: Vec::new(),
        }
    }

    fn store(&mut self) -> Result<&mut KvStore> {
        self.store.as_mut().ok_or(Error::Stopped)
    }

    fn publish(&self) {
        if let Some(store) = &self.store {
            self.clock.current.store(store.current_rev(), Ordering::Release);
            self.clock.compact.store(store.compact_rev(), Ordering::Release);
        }
    }

    /// Records a committed revision's events and delivers them to synced watchers.
    fn committed(&mut self, events: Vec<Event>, out: &mut PerStream) {
        let Some(rev) = events.first().map(Event::revision) else { return };
        let events: Arc<[Arc<Event>]> = events.into_iter().map(Arc::new).collect();
        self.match_synced(rev, &events, out);
        self.ring.push_back((rev, events));
        while self.ring.len() > self.config.ring_revisions {
            self.ring.pop_front();
        }
    }

    /// etcd `notify`: delivers one committed revision to the synced watchers it matches.
    fn match_synced(&mut self, rev: i64, events: &[Arc<Event>], out: &mut PerStream) {
        match_revision(&mut self.synced, &mut self.matched, rev, events, out);
    }

    /// Sends each stream its deliveries in one mailbox message; a full mailbox turns those
    /// watchers into victims (etcd `notify` on a failed `send`), never a wait.
    fn deliver(&mut self, out: PerStream) {
        let mut parked = Vec::new();
        for (stream, entries) in out {
            let Some(recipient) = self.streams.get(&stream) else {
                // The stream is gone: its watchers go with it.
                for e in entries {
                    self.synced.remove(&e.key);
                }
                continue;
            };
            let sent_events: usize = entries.iter().map(|e| e.response.events.len()).sum();
            let responses = entries.len();
            match recipient.try_send(Deliver::live(entries)) {
                Ok(()) => {
                    self.counters.events_sent.fetch_add(sent_events as u64, Ordering::Relaxed);
                    self.counters.responses_sent.fetch_add(responses as u64, Ordering::Relaxed);
                }
                Err(SendError::Full(msg)) => {
                    // One message may carry several revisions for one watcher (group commit,
                    // ring replay): all of them go with it, in order.
                    let mut victims: Vec<Victim> = Vec::new();
                    for e in msg.entries {
                        if let Some(v) = victims.iter_mut().find(|v| v.watcher.key == e.key) {
                            v.responses.push(e.response);
                        } else if let Some(watcher) = self.synced.remove(&e.key) {
                            victims.push(Victim::new(watcher, e.response));
                        }
                    }
                    parked.extend(victims);
                }
                Err(SendError::Closed(msg)) => {
                    self.streams.remove(&stream);
                    for e in msg.entries {
                        self.synced.remove(&e.key);
                    }
                }
            }
        }
        if !parked.is_empty() {
            // Bounded: one parked entry per watcher, and a victim is in no group.
            self.victims.do_send(ParkVictims(parked));
        }
    }

    /// Puts caught-up or delivered watchers where they belong at the current revision (spec
    /// §6.2 and DESIGN "Promote"): synced when they have seen everything, replayed from the ring
    /// and then synced when it still holds what they missed, else back to the syncer.
    fn place_all(&mut self, watchers: Vec<Watcher>, out: &mut PerStream) {
        let current = self.clock.current();
        let oldest = self.ring.front().map(|(rev, _)| *rev);
        let mut to_syncer = Vec::new();
        // The watchers the ring replays, matched as a group: one pass over the missed
        // revisions for the whole batch, costing the missed events plus the matches. Watcher by
        // watcher, a pass's 512 promoted watchers could each walk up to `watch_batch_max_revs`
        // ring entries while writes waited. Measured with the catch-up bench: 16-31 µs for 512
        // watchers 31-37 revisions behind.
        let mut behind = WatcherGroup::with_capacity(watchers.len());
        for w in watchers {
            if w.is_cancelled() || !self.streams.contains_key(&w.key.stream) {
                continue;
            }
            if w.min_rev > current {
                let _ = self.synced.insert(w);
                continue;
            }
            // A longer gap than one catch-up batch goes through the syncer, so what a victim
            // can hold stays bounded by `watch_batch_max_revs` (DESIGN invariant 5).
            let covered = oldest.is_some_and(|oldest| oldest <= w.min_rev);
            let gap = usize::try_from(current - w.min_rev + 1).unwrap_or(usize::MAX);
            if !covered || gap > self.config.watch.watch_batch_max_revs() {
                to_syncer.push(w);
                continue;
            }
            if let Err(w) = behind.insert(w) {
                to_syncer.push(w);
            }
        }
        if !to_syncer.is_empty() {
            self.syncer.do_send(AddUnsynced(to_syncer));
        }
        let Some(from) = behind.min_rev() else { return };
        // The ring is in revision order: start at the first revision any of them still needs;
        // `match_revision` skips each watcher's revisions before its own `min_rev`.
        let first = self.ring.partition_point(|(rev, _)| *rev < from);
        for (rev, events) in self.ring.range(first..) {
            match_revision(&mut behind, &mut self.matched, *rev, events, out);
        }
        for mut w in behind.drain() {
            w.min_rev = current + 1;
            let _ = self.synced.insert(w);
        }
    }

    /// Places up to [`PROMOTE_PER_TURN`] queued promoted watchers, and schedules a later turn
    /// for the rest.
    fn place_promoted(&mut self, ctx: &mut Context<Self>) {
        let n = self.promoting.len().min(PROMOTE_PER_TURN);
        let turn: Vec<Watcher> = self.promoting.drain(..n).collect();
        let mut out = PerStream::default();
        self.place_all(turn, &mut out);
        self.deliver(out);
        self.place_scheduled = !self.promoting.is_empty();
        if self.place_scheduled {
            ctx.notify(PlacePromoted);
        }
    }

    /// Queues a write for the next group commit.
    fn submit<W: Write>(&mut self, msg: SubmitWrite<W>, ctx: &mut Context<Self>) {
        if self.store.is_none() {
            let _ = msg.reply.send(Err(Error::Stopped));
            return;
        }
        self.pending.push(Box::new(Queued { request: Some(msg.request), applied: None, reply: msg.reply }));
        if !self.flush_scheduled {
            // Runs after every message already in the mailbox: writes queued together are
            // applied in one batch with one persist (group commit).
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        let started = Instant::now();
        let Some(store) = self.store.as_mut() else {
            for write in pending {
                write.fail(Error::Stopped);
            }
            return;
        };
        let mut group = store.group();
        let mut pending = pending;
        for write in &mut pending {
            write.apply(&mut group);
        }
        let persisted = group.persist();
        self.publish();
        self.counters.write_batches.fetch_add(1, Ordering::Relaxed);
        self.counters.write_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        // Answer first, then notify, in the same turn of this actor. A writer's reply no longer
        // waits for a fan-out to thousands of watchers, and etcd's guarantee still holds:
        // whatever a writer can do once it knows its revision (start a watch, ask for progress,
        // read) reaches the watch machinery as a message to this actor, handled only after this
        // turn has queued the revision's events to every matching synced watcher's stream. The
        // revision's own visibility was published above, before either, as it always was.
        let events: Vec<Vec<Event>> = pending.into_iter().map(|w| w.answer(&persisted)).collect();
        if events.iter().flatten().any(|e| self.synced.any_matches(&e.kv.key)) {
            // A fan-out follows: let a writer just woken onto this core reply now rather than
            // after it. Measured (`cargo bench -p watchkv-actors --bench watch -- fanout`):
            // without this, 2-5% of puts to a key 10k watchers share waited the whole fan-out
            // (1.3-3.5 ms) on a 2-core machine, because the kernel queued the woken writer
            // behind this busy thread while the other core was idle (`perf sched timehist`).
            // Only then: yielding hands the rest of this thread's time slice to whatever waits
            // on this core, and after commits nobody watches, that was a stream thread's
            // delivery burst (up to 1.1 ms) that the next write then waited behind (the
            // catch-up bench: 1 in 4 runs met its put p99 target with an unconditional yield, 7
            // in 8 without).
            std::thread::yield_now();
        }
        let mut out = PerStream::default();
        for evs in events {
            self.committed(evs, &mut out);
        }
        self.deliver(out);
        let _ = ctx;
    }
}

/// etcd `notify` for one revision and one group: each matching watcher that still needs `rev`
/// gets one response with the events it matches, and then needs only later revisions.
///
/// The cancel flag is not checked here: a cancelled watcher leaves the group by
/// `CancelWatchers`, and until then its stream drops what it is sent (cancel wins on delivery,
/// DESIGN invariant 6), so the hot loop skips one cache miss per watcher.
fn match_revision(
    group: &mut WatcherGroup,
    matched: &mut Vec<WatcherSlot>,
    rev: i64,
    events: &[Arc<Event>],
    out: &mut PerStream,
) {
    if group.is_empty() {
        return;
    }
    if let [event] = events {
        // One event (the common case): `matching` yields each slot once, so each watcher's
        // response is built straight from the match, with no per-watcher grouping.
        matched.clear();
        group.matching(&event.kv.key, matched);
        for &slot in matched.iter() {
            let Some(w) = group.slot_mut(slot) else { continue };
            if w.min_rev > rev {
                continue;
            }
            w.min_rev = rev + 1;
            if w.filters.accepts(event) {
                let response = WatchResponse::event(w.key.id, rev, Arc::clone(event), w.prev_kv);
                out.entry(w.key.stream).or_default().push(Delivery { key: w.key, response });
            }
        }
        return;
    }
    // (slot, events) in first-match order.
    let mut per_watcher: Vec<(WatcherSlot, Vec<Arc<Event>>)> = Vec::new();
    let mut position: HashMap<WatcherSlot, usize> = HashMap::new();
    for event in events {
        matched.clear();
        group.matching(&event.kv.key, matched);
        for &slot in matched.iter() {
            match position.entry(slot) {
                Entry::Occupied(e) => per_watcher[*e.get()].1.push(Arc::clone(event)),
                Entry::Vacant(e) => {
                    e.insert(per_watcher.len());
                    per_watcher.push((slot, vec![Arc::clone(event)]));
                }
            }
        }
    }
    for (slot, evs) in per_watcher {
        let Some(w) = group.slot_mut(slot) else { continue };
        if w.min_rev > rev {
            continue;
        }
        w.min_rev = rev + 1;
        if let Some(evs) = filtered_events(w, evs) {
            out.entry(w.key.stream)
                .or_default()
                .push(Delivery { key: w.key, response: WatchResponse::events(w.key.id, rev, evs, w.prev_kv) });
        }
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.config.store_mailbox);
        self.publish();
        if let Some(period) = self.config.lease_tick {
            ctx.run_interval(period, |_, ctx| ctx.notify(LeaseTick(None)));
        }
    }
}

impl<W: Write> Handler<SubmitWrite<W>> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: SubmitWrite<W>, ctx: &mut Self::Context) {
        self.submit(msg, ctx);
    }
}

impl Handler<Flush> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.flush(ctx);
    }
}

impl Handler<Range> for StoreActor {
    type Result = Result<RangeResponse>;

    fn handle(&mut self, msg: Range, _: &mut Self::Context) -> Self::Result {
        self.store()?.range(&msg.0)
    }
}

impl Handler<Compact> for StoreActor {
    type Result = ResponseFuture<Result<i64>>;

    fn handle(&mut self, msg: Compact, _: &mut Self::Context) -> Self::Result {
        // Publish the compact revision before the physical compaction can delete a row: the
        // syncer reads it after taking its snapshot, so a snapshot that misses compacted rows
        // always comes with a compact revision that sends the watchers needing them a notice.
        if let Some(store) = &self.store {
            if msg.revision > store.compact_rev() && msg.revision <= store.current_rev() {
                self.clock.compact.store(msg.revision, Ordering::Release);
            }
        }
        let result = self.store().and_then(|s| s.compact(msg.revision).map(|t| (t, s.current_rev())));
        self.publish();
        // Watchers behind the new compact revision get their notice on the next pass.
        self.syncer.do_send(AddUnsynced(Vec::new()));
        Box::pin(async move {
            let (ticket, rev) = result?;
            if msg.physical {
                actix_rt::task::spawn_blocking(move || ticket.wait()).await.map_err(|_| Error::Stopped)??;
            }
            Ok(rev)
        })
    }
}

impl Handler<LeaseGrant> for StoreActor {
    type Result = Result<(LeaseId, i64, i64)>;

    fn handle(&mut self, msg: LeaseGrant, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        let (id, ttl) = store.lease_grant(msg.id, msg.ttl, Instant::now())?;
        Ok((id, ttl, store.current_rev()))
    }
}

impl Handler<LeaseKeepAlive> for StoreActor {
    type Result = Result<(i64, i64)>;

    fn handle(&mut self, msg: LeaseKeepAlive, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        let ttl = store.lease_keep_alive(msg.0, Instant::now())?;
        Ok((ttl, store.current_rev()))
    }
}

impl Handler<LeaseTimeToLive> for StoreActor {
    type Result = Result<(LeaseStatus, i64)>;

    fn handle(&mut self, msg: LeaseTimeToLive, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        Ok((store.lease_time_to_live(msg.id, Instant::now(), msg.keys)?, store.current_rev()))
    }
}

impl Handler<LeaseLeases> for StoreActor {
    type Result = Result<(Vec<LeaseId>, i64)>;

    fn handle(&mut self, _: LeaseLeases, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        Ok((store.leases(), store.current_rev()))
    }
}

impl Handler<LeaseTick> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: LeaseTick, _: &mut Self::Context) {
        let now = msg.0.unwrap_or_else(Instant::now);
        let Some(store) = self.store.as_mut() else { return };
        if store.next_lease_deadline().is_none_or(|d| d > now) {
            return;
        }
        let results = store.expire_leases(now);
        self.publish();
        let mut out = PerStream::default();
        for (id, result) in results {
            match result {
                Ok(c) => self.committed(c.events, &mut out),
                Err(e) => tracing::error!(lease = id, error = %e, "lease expiry failed"),
            }
        }
        self.deliver(out);
    }
}

impl Handler<RegisterStream> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: RegisterStream, _: &mut Self::Context) {
        // The stream registers with the syncer and the victim actor itself (`StreamActor::started`).
        if self.store.is_none() {
            // Shut down: the stream ends at once.
            msg.close.do_send(CloseStream);
            return;
        }
        self.closers.insert(msg.stream, msg.close);
        self.streams.insert(msg.stream, msg.deliver);
    }
}

impl Handler<UnregisterStream> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: UnregisterStream, _: &mut Self::Context) {
        for key in &msg.watchers {
            self.synced.remove(key);
        }
        self.streams.remove(&msg.stream);
        self.closers.remove(&msg.stream);
        self.syncer.do_send(msg.clone());
        self.victims.do_send(msg);
    }
}

impl Handler<Watch> for StoreActor {
    type Result = MessageResult<Watch>;

    fn handle(&mut self, msg: Watch, _: &mut Self::Context) -> Self::Result {
        let mut w = msg.0;
        let current = self.clock.current();
        // etcd watchStream.Watch (spec §6.2 step 4): start 0 or in the future is synced, from
        // history (including start == current) unsynced.
        if w.start_rev == 0 || w.start_rev > current {
            w.min_rev = (current + 1).max(w.start_rev);
            if !w.is_cancelled() {
                let _ = self.synced.insert(w);
            }
        } else {
            w.min_rev = w.start_rev;
            self.syncer.do_send(AddUnsynced(vec![w]));
        }
        // Spec §10.1, the better behaviour: exactly `min_rev - 1` for start 0.
        MessageResult(current)
    }
}

impl Handler<CancelWatchers> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: CancelWatchers, _: &mut Self::Context) {
        for key in &msg.0 {
            self.synced.remove(key);
        }
        self.syncer.do_send(msg.clone());
        self.victims.do_send(msg);
    }
}

impl Handler<Promote> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Promote, ctx: &mut Self::Context) {
        self.promoting.extend(msg.0);
        if !self.place_scheduled {
            // The first turn's worth at once: a small hand-over (a victim, a few caught-up
            // watchers) is synced before the next message, as if placed in one go.
            self.place_promoted(ctx);
        }
    }
}

impl Handler<PlacePromoted> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: PlacePromoted, ctx: &mut Self::Context) {
        self.place_promoted(ctx);
    }
}

impl Handler<RequestProgress> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: RequestProgress, _: &mut Self::Context) {
        let current = self.clock.current();
        let all_synced = !msg.watchers.is_empty()
            && msg.watchers.iter().all(|k| self.synced.get(k).is_some_and(|w| current >= w.start_rev));
        if !all_synced {
            // etcd: nothing is sent and nothing is remembered; the client asks again (F18).
            return;
        }
        if let Some(recipient) = self.streams.get(&msg.stream) {
            let delivery = Delivery { key: msg.watchers[0], response: WatchResponse::progress(msg.watch_id, current) };
            // A full mailbox drops the notification, as etcd does (spec §10 quirk 5).
            let _ = recipient.try_send(Deliver::live(vec![delivery]));
        }
    }
}

impl Handler<Shutdown> for StoreActor {
    type Result = Result<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        self.flush(ctx);
        let result = match self.store.as_mut() {
            Some(store) => store.sync(),
            None => Ok(()),
        };
        // Dropping the store stops the compactor between batches and closes the database.
        self.store = None;
        // Every stream ends cleanly: its client sees the end of the response.
        for (_, close) in self.closers.drain() {
            close.do_send(CloseStream);
        }
        result
    }
}

impl Handler<DbSize> for StoreActor {
    type Result = Result<u64>;

    fn handle(&mut self, _: DbSize, _: &mut Self::Context) -> Self::Result {
        self.store()?.disk_space()
    }
}

impl Handler<GetStoreStats> for StoreActor {
    type Result = MessageResult<GetStoreStats>;

    fn handle(&mut self, _: GetStoreStats, _: &mut Self::Context) -> Self::Result {
        let (indexed_keys, leases) = self.store.as_ref().map_or((0, 0), |s| {
            let st = s.stats();
            (st.indexed_keys, st.leases)
        });
        MessageResult(StoreStats {
            synced: self.synced.len(),
            promoting: self.promoting.len(),
            streams: self.streams.len(),
            current_rev: self.clock.current(),
            compact_rev: self.clock.compact(),
            ring_revisions: self.ring.len(),
            indexed_keys,
            leases,
        })
    }
}
