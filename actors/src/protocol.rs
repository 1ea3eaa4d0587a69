//! Owns the protocol between the runtime's actors: every message one actor sends another (or a
//! transport sends an actor), with its reply type, and the values they share: the
//! [`RevisionClock`] the store publishes and the [`Counters`] the metrics read. Actors know each
//! other only as `Recipient`s of these messages, never by type (docs/design.md, "Actors talk
//! through one protocol").

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::reply_route::Reply;
use actix::prelude::*;
use watchkv::watch::event_batch::BatchLimits;
use watchkv::watch::response::WatchResponse;
use watchkv::watch::watcher::{Filters, StreamId, WatchId, Watcher, WatcherKey};
use watchkv::{KeyRange, LeaseId, LeaseStatus, RangeRequest, RangeResponse, Result, TxnRequest, TxnResponse, Write};

// ---- Values every actor reads ----

/// The revisions other actors may read without asking: published by the store actor after
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

    /// Publishes the store's revisions (the store actor only).
    pub(crate) fn publish(&self, current: i64, compact: i64) {
        self.current.store(current, Ordering::Release);
        self.compact.store(compact, Ordering::Release);
    }

    /// Publishes a compact revision ahead of the compaction itself (the store actor only).
    pub(crate) fn publish_compact(&self, compact: i64) {
        self.compact.store(compact, Ordering::Release);
    }
}

/// Counters shared by the actors and read by the metrics endpoint.
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

impl Counters {
    /// Counts one delivered `Deliver` of `responses` responses carrying `events` events.
    pub(crate) fn delivered(&self, responses: usize, events: usize) {
        self.events_sent.fetch_add(events as u64, Ordering::Relaxed);
        self.responses_sent.fetch_add(responses as u64, Ordering::Relaxed);
        crate::idle_poll::note_delivery();
    }
}

// ---- Deliveries to a stream ----

/// One response for one watcher of a stream.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The watcher it is for.
    pub key: WatcherKey,
    /// The response.
    pub response: WatchResponse,
}

/// Responses for watchers of one stream, from the store, the syncer or the victim actor; one
/// mailbox slot however many watchers and revisions it carries.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Deliver {
    /// In the order they must reach the client.
    pub entries: Vec<Delivery>,
    /// Whether this is catch-up work (the syncer's replay from storage). A stream thread that
    /// runs such deliveries back to back yields the CPU after a short burst
    /// (`sched::STREAM_BURST`), so a catch-up rarely holds up writes or live deliveries for
    /// longer than that; live and victim deliveries never yield.
    pub catch_up: bool,
    /// The responses and encoded bytes its inbox counted it for (set by `StreamInbox`; zero for
    /// a `Deliver` sent to a stream's address directly, which its release then leaves alone).
    weight: (usize, usize),
}

impl Deliver {
    /// Live work: the store's fan-out, a victim retry, a progress or cancel notice. A victim
    /// retry counts as live even when the syncer parked the batch: a stream whose mailbox was
    /// full is already behind, and its retries are few (one per retry period).
    #[must_use]
    pub fn live(entries: Vec<Delivery>) -> Self {
        Self { entries, catch_up: false, weight: (0, 0) }
    }

    /// Catch-up work from the syncer.
    #[must_use]
    pub fn catch_up(entries: Vec<Delivery>) -> Self {
        Self { entries, catch_up: true, weight: (0, 0) }
    }

    /// Returns what the stream's inbox counted it for: responses and encoded bytes.
    #[must_use]
    pub fn weight(&self) -> (usize, usize) {
        self.weight
    }

    /// Returns how many responses and events it carries, for [`Counters`].
    #[must_use]
    pub fn size(&self) -> (usize, usize) {
        (self.entries.len(), self.entries.iter().map(|e| e.response.events.len()).sum())
    }
}

/// A stream's inbox as the actors that deliver to it see it: its mailbox, and the responses
/// queued for it that its client has not taken yet, counted and in encoded bytes. The bound is
/// in responses and bytes, not in messages (a `Deliver` may carry thousands): a delivery is
/// refused as `Full` when the stream already holds responses and this one would take it past
/// `limit` responses (`WatchConfig::chan_buf_len`, etcd's 128-slot channel) or `byte_limit`
/// bytes (`ActorsConfig::stream_buffer_bytes`: a catch-up response may carry a thousand
/// revisions). A delivery to a stream that holds none is always taken, whatever its size, so a
/// stream holds at most `limit` responses and `byte_limit` bytes, or one delivery. Every `Deliver` goes through an inbox: the stream releases what it was counted
/// for once its client has taken it.
#[derive(Clone)]
pub struct StreamInbox {
    deliver: Recipient<Deliver>,
    state: Arc<InboxState>,
    limit: usize,
    byte_limit: usize,
}

/// What a stream and the actors delivering to it share: the responses it holds for its client,
/// and whether a delivery was refused since its client last drained them.
#[derive(Debug, Default)]
pub struct InboxState {
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    refused: AtomicBool,
}

impl InboxState {
    /// Returns the responses the stream holds that its client has not taken.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Returns the encoded bytes of those responses.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Releases a delivery the client has taken (its [`Deliver::weight`]). Returns whether a
    /// delivery was refused since the last release that returned `true`: its watchers are
    /// victims now, and the stream tells the victim actor that its socket drained
    /// (`RetryStream`) rather than leaving them to the next retry tick.
    pub(crate) fn release(&self, (n, bytes): (usize, usize)) -> bool {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.refused.load(Ordering::Acquire) && self.refused.swap(false, Ordering::AcqRel)
    }
}

impl StreamInbox {
    /// Returns the inbox of the stream whose mailbox is `deliver`, sharing `state` with it.
    #[must_use]
    pub fn new(deliver: Recipient<Deliver>, state: Arc<InboxState>, limit: usize, byte_limit: usize) -> Self {
        Self { deliver, state, limit, byte_limit }
    }

    /// The encoded bytes of `msg`'s responses.
    fn bytes(msg: &Deliver) -> usize {
        msg.entries.iter().map(|e| e.response.encoded_len(RESPONSE_HEADER_ESTIMATE)).sum()
    }

    /// Counts `msg`, of `bytes` encoded bytes, into the stream's buffer.
    fn take(&self, msg: &mut Deliver, bytes: usize) {
        msg.weight = (msg.entries.len(), bytes);
        self.state.queued.fetch_add(msg.weight.0, Ordering::AcqRel);
        self.state.queued_bytes.fetch_add(msg.weight.1, Ordering::AcqRel);
    }

    /// Delivers without waiting; `Full` when the stream's buffer or its mailbox is full. Two
    /// actors delivering at the same moment may each pass the check: the bound can be passed
    /// by at most one delivery per delivering actor.
    ///
    /// # Errors
    /// The message back, when the stream is full or gone.
    pub fn try_deliver(&self, mut msg: Deliver) -> Result<(), SendError<Deliver>> {
        let queued = self.state.queued.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(msg.entries.len()) > self.limit {
            self.state.refused.store(true, Ordering::Release);
            return Err(SendError::Full(msg));
        }
        let bytes = Self::bytes(&msg);
        if queued > 0 && self.state.queued_bytes.load(Ordering::Acquire).saturating_add(bytes) > self.byte_limit {
            self.state.refused.store(true, Ordering::Release);
            return Err(SendError::Full(msg));
        }
        self.take(&mut msg, bytes);
        let weight = msg.weight();
        self.deliver.try_send(msg).inspect_err(|e| {
            self.state.queued.fetch_sub(weight.0, Ordering::AcqRel);
            self.state.queued_bytes.fetch_sub(weight.1, Ordering::AcqRel);
            if matches!(e, SendError::Full(_)) {
                self.state.refused.store(true, Ordering::Release);
            }
        })
    }

    /// Delivers a notice the client must get even past a full buffer (a server-side cancel):
    /// bounded by one per watcher, and it ends the watcher whose responses fill the buffer.
    pub fn deliver_notice(&self, mut msg: Deliver) {
        let bytes = Self::bytes(&msg);
        self.take(&mut msg, bytes);
        self.deliver.do_send(msg);
    }
}

impl std::fmt::Debug for StreamInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamInbox").field("state", &self.state).field("limit", &self.limit).finish()
    }
}

/// Closes a stream, cancelling all its watchers (a transport whose client left, or the store
/// on shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CloseStream;

// ---- A stream's lifecycle, sent by the stream ----

/// Registers a stream's mailbox: a stream sends it itself to the victim actor, the syncer and
/// the store, before anything else, so each knows the stream before any of its watchers can
/// arrive there.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct RegisterStream {
    /// The stream.
    pub stream: StreamId,
    /// Where its deliveries go.
    pub inbox: StreamInbox,
    /// Where to tell it to close on shutdown.
    pub close: Recipient<CloseStream>,
}

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

/// Registers a new watcher with the store; answers with the revision for its `created`
/// response. A stream sends only watches that start at 0 or after the current revision; one
/// that starts in history it hands to the syncer itself ([`AddUnsynced`]), and the store would
/// only forward it.
#[derive(Debug, Message)]
#[rtype(result = "i64")]
pub struct Watch(pub Watcher);

/// Removes cancelled watchers wherever they are: sent to the store, which forwards those it does
/// not hold to the syncer and the victim actor.
#[derive(Debug, Message, Clone)]
#[rtype(result = "()")]
pub struct CancelWatchers(pub Vec<WatcherKey>);

/// Asks the store for a progress notification (etcd `progressIfSync`,
/// docs/etcd-semantics.md §6.9): sent through the stream's mailbox only if every listed watcher
/// is synced and past its start revision.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RequestProgress {
    /// The stream.
    pub stream: StreamId,
    /// The watchers the answer covers.
    pub watchers: Vec<WatcherKey>,
    /// The id to answer with: -1 for a client request, the watcher's for periodic ones.
    pub watch_id: i64,
    /// A client request's slot among its stream's progress requests in flight, given back when
    /// the store has handled (or dropped) this message ([`RequestStreamProgress`]).
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

// ---- Watchers moving between the groups (docs/design.md, invariant 1) ----

/// Adds watchers to the syncer's unsynced group (an empty list just asks for a pass soon).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AddUnsynced {
    /// The watchers.
    pub watchers: Vec<Watcher>,
    /// A new watcher's create slot ([`crate::CREATES_IN_FLIGHT`]), given back once the syncer
    /// has taken it: creates from history wait for the syncer rather than queue in its mailbox
    /// without bound.
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl AddUnsynced {
    /// Watchers the store hands on (no stream's create slot rides with them).
    #[must_use]
    pub fn new(watchers: Vec<Watcher>) -> Self {
        Self { watchers, slot: None }
    }
}

/// Hands caught-up or delivered watchers back to the store: each is synced if it has seen
/// everything, else replayed from the ring, else returned to the syncer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Promote(pub Vec<Watcher>);

/// Bytes a transport adds as a response's header, counted when sizing responses (fragments,
/// coalescing) before the header is written.
pub const RESPONSE_HEADER_ESTIMATE: usize = 32;

/// A watcher that missed a delivery, with what it is owed.
#[derive(Debug)]
pub struct Victim {
    /// The watcher; its `min_rev` is past the parked responses.
    pub watcher: Watcher,
    /// The responses to resend, in order.
    pub responses: Vec<WatchResponse>,
    /// When it was first parked.
    pub parked_at: Instant,
    /// The store's revision when it was first parked (its first response's header revision).
    pub parked_rev: i64,
}

impl Victim {
    /// Parks `watcher` with one undelivered response.
    #[must_use]
    pub fn new(watcher: Watcher, response: WatchResponse) -> Self {
        let parked_rev = response.revision;
        Self { watcher, responses: vec![response], parked_at: Instant::now(), parked_rev }
    }

    /// Revisions committed since it was first parked: how far the store has moved on while its
    /// client took nothing. Not how far behind its history it is: a watcher catching up from
    /// long ago is far behind while its client reads as fast as it can.
    #[must_use]
    pub fn lag(&self, current: i64) -> i64 {
        current - self.parked_rev
    }

    /// Merges its consecutive events responses into multi-revision ones (within `limits`, never
    /// splitting a revision: `WatchResponse::merge`), as etcd gives a victim one batch: what it
    /// holds parked, and what its client reads when the retry gets through, shrink to a few
    /// responses however many revisions it missed.
    pub fn coalesce(&mut self, limits: BatchLimits) {
        if self.responses.len() < 2 {
            return;
        }
        let mut merged: Vec<WatchResponse> = Vec::with_capacity(self.responses.len());
        let mut last_len = 0;
        for response in self.responses.drain(..) {
            let response = match merged.last_mut() {
                Some(last) => match last.merge(response, last_len, limits.max_revs, limits.max_bytes) {
                    Ok(len) => {
                        last_len = len;
                        continue;
                    }
                    Err(unmerged) => unmerged,
                },
                None => response,
            };
            last_len = response.encoded_len(RESPONSE_HEADER_ESTIMATE);
            merged.push(response);
        }
        self.responses = merged;
    }

    /// Returns the approximate bytes of the events it holds.
    #[must_use]
    pub fn approx_bytes(&self) -> usize {
        self.responses.iter().flat_map(|r| r.events.iter()).map(|e| e.approx_size()).sum()
    }
}

/// Parks victims with the victim actor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ParkVictims(pub Vec<Victim>);

// ---- Ticks: what the timers send, and tests send by hand (`ActorsConfig::manual_ticks`) ----

/// Runs one catch-up pass now, as etcd's tests call `syncWatchers()`; answers with the number
/// of watchers still unsynced.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct SyncTick;

/// Retries every parked victim now.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RetryTick;

/// Retries one stream's victims now: its client has taken everything the stream held after a
/// delivery to it was refused (the socket drained), so their parked batches need not wait for
/// the next [`RetryTick`]. Sent by the stream to the victim actor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RetryStream(pub StreamId);

/// Sends a stream's periodic progress requests now.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProgressTick;

/// Expires due leases now, or at the given instant (tests drive time by hand).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LeaseTick(pub Option<Instant>);

// ---- Client operations on the store, one message each with its own reply ----

/// A write (put, delete-range, txn or lease revoke) and where its answer, of the write's own
/// response type, goes: it reaches the store inside a [`SubmitWrites`] and is answered straight
/// to `reply`, which the caller awaits on its own thread.
///
/// An answer through the message's own reply would travel through a future on the store's
/// thread, which cannot run before the turn that committed the write ends, fan-out included;
/// this one reaches the writer as soon as the store answers it. The message itself is answered
/// once the writes are queued, so a full mailbox still pushes back on the caller.
#[derive(Debug)]
pub struct SubmitWrite<W: Write> {
    /// The write.
    pub request: W,
    /// Where its answer goes, after it is durable (on the writer's own thread, with the
    /// other answers of the same commit: `crate::reply_route`).
    pub reply: Reply<Result<W::Response>>,
    /// The auth store its permission check read, for a client's write: refused when applied if
    /// the auth store has changed since (`AuthView::admits`). `None`: no check to keep.
    pub auth: Option<crate::api::auth::AuthStamp>,
}

/// Writes of one caller, or of several submitted together by a client-port thread's outbox
/// (`crate::outbox`): each joins the group commit, in order (`crate::store::queued` makes a
/// [`SubmitWrite`] one of them).
pub struct SubmitWrites(pub Vec<Box<dyn crate::store::PendingWrite>>);

impl std::fmt::Debug for SubmitWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SubmitWrites").field(&self.0.len()).finish()
    }
}

impl Message for SubmitWrites {
    type Result = ();
}

/// A read at a revision.
#[derive(Debug, Message)]
#[rtype(result = "Result<RangeResponse>")]
pub struct Range(pub RangeRequest);

/// A txn that only reads (`!TxnRequest::writes()`): served as a read, beside the group commit.
#[derive(Debug, Message)]
#[rtype(result = "Result<TxnResponse>")]
pub struct ReadTxn(pub TxnRequest);

/// Compacts at `revision`; with `physical`, answers once the rows are gone. Answers with the
/// current revision.
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

/// Returns the bytes the store occupies on disk.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64>")]
pub struct DbSize;

/// Plans a `HashKV` up to a revision (0 = the current one); the caller runs the plan's scan
/// off the store's thread ([`Handle::hash_kv`](crate::Handle::hash_kv)).
#[derive(Debug, Message)]
#[rtype(result = "Result<watchkv::hash::HashKvPlan>")]
pub struct PlanHashKv(pub i64);

/// Takes a snapshot of everything the store holds, with the revision it was taken at, for the
/// whole-store hash ([`Handle::hash`](crate::Handle::hash)).
#[derive(Debug, Message)]
#[rtype(result = "Result<(watchkv::backend::WholeSnapshot, i64)>")]
pub struct SnapshotWholeStore;

/// Lists, raises or clears alarms (etcd `Maintenance.Alarm`); answers the alarms the request
/// is about.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<watchkv::alarm::AlarmMember>>")]
pub enum Alarm {
    /// The active alarms, all (`None`) or of one kind.
    Get(Option<watchkv::alarm::AlarmType>),
    /// Raise one.
    Activate(watchkv::alarm::AlarmMember),
    /// Clear one.
    Deactivate(watchkv::alarm::AlarmMember),
}

/// Changes the auth store (passwords already hashed); the store publishes the new state.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct AuthChange(pub watchkv::auth::AuthOp);

/// A create the transport refused (permission): the stream answers it created+canceled with
/// `reason`, as etcd answers a create that fails its checks.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RejectWatch(pub String);

/// Asks the syncer to drop its history reader (and so its database handle) before the store
/// reopens a failed database; watchers catching up wait meanwhile, unread, until
/// [`UseStorage`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReleaseStorage;

/// Gives the syncer the reopened store's history reader.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UseStorage(pub watchkv::backend::RevisionReader);

/// What `/health` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Active alarms.
    pub alarms: Vec<watchkv::alarm::AlarmMember>,
    /// An earlier storage failure poisoned the store.
    pub poisoned: bool,
    /// The store is closed (the server is stopping).
    pub stopped: bool,
}

/// Returns [`Health`].
#[derive(Debug, Message)]
#[rtype(result = "Health")]
pub struct CheckHealth;

/// Returns a backend handle to defragment on a blocking thread
/// ([`Handle::defragment`](crate::Handle::defragment)).
#[derive(Debug, Message)]
#[rtype(result = "Result<watchkv::backend::Backend>")]
pub struct Defragment;
/// Takes a point-in-time snapshot of the whole store between two write groups; whoever asked
/// encodes it on another thread while the store goes on.
#[derive(Debug, Message)]
#[rtype(result = "Result<watchkv::StoreSnapshot>")]
pub struct TakeSnapshot;

/// Flushes pending writes, syncs and closes the store, and closes every stream (shutdown).
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct Shutdown;

// ---- Client operations on a stream, sent by a transport ----

/// A watch create request, as etcd's `WatchCreateRequest` carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchCreate {
    /// The key, or the start of the range; empty means `"\0"`.
    pub key: Vec<u8>,
    /// Wire `range_end`: empty = single key, `"\0"` = from key.
    pub range_end: Vec<u8>,
    /// 0 = from now; otherwise the first revision wanted.
    pub start_revision: i64,
    /// Periodic progress notifications.
    pub progress_notify: bool,
    /// Event filters.
    pub filters: Filters,
    /// Include `prev_kv` in events.
    pub prev_kv: bool,
    /// 0 = let the server choose.
    pub watch_id: WatchId,
    /// Split large responses.
    pub fragment: bool,
}

impl WatchCreate {
    /// Returns a create request for `range` from `start_revision`.
    #[must_use]
    pub fn new(range: &KeyRange, start_revision: i64) -> Self {
        let (key, range_end) = range.to_wire();
        Self { key, range_end, start_revision, ..Self::default() }
    }
}

/// Creates a watcher; its `created` response (or the failure) goes out through the sink. The
/// result comes once the stream has taken the request: a create from history waits for one of
/// the runtime's [`crate::CREATES_IN_FLIGHT`] slots, and later requests of the stream wait
/// behind it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CreateWatch(pub WatchCreate);

/// Cancels a watcher; answered with `canceled` through the sink, or not at all for an unknown id.
/// The result comes once the stream has taken the request, after the creates waiting before it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CancelWatch(pub WatchId);

/// A client's progress request for the whole stream (answered with watch id -1). It waits for
/// one of the stream's [`crate::PROGRESS_REQUESTS_IN_FLIGHT`] slots at the store; `send` it and
/// await the result to be held back while they are taken (`do_send` queues without bound).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RequestStreamProgress;

// ---- Observable state ----

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
    /// Keys live now (not deleted).
    pub live_keys: usize,
    /// Leases.
    pub leases: usize,
    /// Ranges and read-only txns whose rows were read from a snapshot off the store's thread
    /// (answers of 512 rows or more while a reader was free).
    pub ranges_read_off_thread: u64,
    /// Txns that only read, taken as reads beside the group commit (answered or failed).
    pub read_txns: u64,
    /// Ranges and read-only txns whose walk of the key index took several turns of the store
    /// (more than 4096 keys), with writes between the turns.
    pub ranges_planned_in_parts: u64,
    /// The etcd cluster the store's whole state came from, while it has taken no write of its
    /// own (`watchkv::KvStore::upstream_origin`): the cluster a mirror must follow.
    pub upstream_cluster_id: Option<u64>,
}

/// Returns [`StoreStats`].
#[derive(Debug, Message)]
#[rtype(result = "StoreStats")]
pub struct GetStoreStats;

/// Observable state of the syncer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncerStats {
    /// Watchers in the unsynced group, those waiting to retry a failed read included.
    pub unsynced: usize,
    /// Catch-up passes run.
    pub passes: u64,
    /// Catch-up reads that failed.
    pub failed_reads: u64,
}

/// Returns [`SyncerStats`].
#[derive(Debug, Message)]
#[rtype(result = "SyncerStats")]
pub struct GetSyncerStats;

/// Observable state of the victim actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VictimStats {
    /// Watchers parked.
    pub victims: usize,
    /// Bytes of events they hold (approximate).
    pub parked_bytes: usize,
    /// Retries that delivered.
    pub delivered: u64,
}

/// Returns [`VictimStats`].
#[derive(Debug, Message)]
#[rtype(result = "VictimStats")]
pub struct GetVictimStats;

/// Observable state of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Active watchers.
    pub watchers: usize,
    /// Responses handed to the sink.
    pub responses: u64,
    /// Responses delivered to the stream that its client has not taken yet (the bound of
    /// [`StreamInbox`] applies to them).
    pub buffered: usize,
}

/// Returns [`StreamStats`].
#[derive(Debug, Message)]
#[rtype(result = "StreamStats")]
pub struct GetStreamStats;
