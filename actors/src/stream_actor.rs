//! Owns one client stream (etcd `watchStream` + the gRPC send loop, docs/etcd-semantics.md
//! §6.1, §7.1–§7.4): its watch ids, its buffer of `chan_buf_len` responses (a [`StreamInbox`]),
//! and delivery to the client through a [`WatchSink`]. Deliveries arrive without waiting; while
//! the client is slow this actor waits on the sink, its buffer fills, and further deliveries
//! make victims instead of waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use watchkv::watch::ids::AutoWatchIds;
use watchkv::watch::response::{WatchResponse, INVALID_WATCH_ID};
use watchkv::watch::watcher::{CancelFlag, StreamId, WatchId, Watcher, WatcherKey};
use watchkv::{Error, KeyRange};

use crate::config::ActorsConfig;
use crate::protocol::{
    AddUnsynced, CancelWatch, CancelWatchers, CloseStream, CreateWatch, Deliver, Delivery, GetStreamStats, InboxState,
    ProgressTick, RegisterStream, RejectWatch, RequestProgress, RequestStreamProgress, RetryStream, RevisionClock,
    StreamInbox, StreamStats, UnregisterStream, Watch, WatchCreate, RESPONSE_HEADER_ESTIMATE,
};
use crate::sink::{SinkClosed, SinkSend, WatchSink};

/// What the stream remembers of each of its watchers (kept small: one per watcher). The
/// watcher's key is this stream's id, the map key and `seq`.
#[derive(Debug)]
struct StreamWatch {
    seq: u64,
    cancel: CancelFlag,
    progress_notify: bool,
    fragment: bool,
    /// An event response went out since the last progress tick.
    skip_progress: bool,
}

/// The responses of one handler turn, in order. Deliveries come merged: the store gives each
/// watcher one response per group commit and per ring replay, the victim actor one per parked
/// batch, the syncer one per pass. What is left to merge here is a response that follows its
/// watcher's previous one directly (`WatchResponse::merge` within `WatchConfig::batch_limits`:
/// at most `watch_batch_max_revs` revisions and `max_batch_bytes`, never splitting a revision),
/// so the per-response work is a comparison, not a lookup; events never move past another
/// response. The turn's responses then go to the sink; from the first send that has to wait,
/// the rest wait behind it, and so does every later message (see `StreamActor::finish`).
#[derive(Default)]
struct Outbox {
    queued: Vec<WatchResponse>,
    /// The encoded length of the last queued response, once a merge has needed it.
    last_len: Option<usize>,
    /// The last queued response is a piece of a split one, which takes nothing more: its last
    /// piece looks like a plain events response, but the client joins the pieces under the
    /// first piece's header (etcd: api/v3rpc/watch.go sendFragments splits one response).
    last_is_piece: bool,
}

/// The messages a stream sends the runtime's actors; one set, shared by every stream.
pub struct StreamPeers {
    /// Where a new stream registers, in this order: the victim actor, the syncer, the store
    /// (see `StreamActor::started`).
    pub register: [Recipient<RegisterStream>; 3],
    /// The syncer: watchers that start in history.
    pub add_unsynced: Recipient<AddUnsynced>,
    /// The store: watchers that start now or in the future.
    pub watch: Recipient<Watch>,
    /// The store: cancelled watchers (it forwards them to the syncer and the victim actor).
    pub cancel: Recipient<CancelWatchers>,
    /// The store: progress requests.
    pub progress: Recipient<RequestProgress>,
    /// The store: the stream has ended (forwarded like cancels).
    pub unregister: Recipient<UnregisterStream>,
    /// The victim actor: the stream's socket drained after a delivery to it was refused.
    pub retry_victims: Recipient<RetryStream>,
}

/// How many responses a stream holds that its client has not taken yet
/// ([`StreamStats::buffered`]), read without asking the stream.
#[derive(Debug, Clone)]
pub struct BufferedResponses(Arc<InboxState>);

impl BufferedResponses {
    /// Returns the current count.
    #[must_use]
    pub fn get(&self) -> usize {
        self.0.queued()
    }
}

/// One client stream.
pub struct StreamActor {
    id: StreamId,
    peers: Arc<StreamPeers>,
    sink: Arc<dyn WatchSink>,
    /// Auto ids; the ids in use are the keys of `watches` and the members of `ended`.
    ids: AutoWatchIds,
    /// Fx, not SipHash: looked up once per delivered response; the ids are the client's own, so
    /// colliding ids could slow only its own stream.
    watches: FxHashMap<WatchId, StreamWatch>,
    /// Watchers the server ended (compaction, slow consumer) whose ids the client has not
    /// cancelled yet. As in etcd the id stays taken and the client's cancel is answered; unlike
    /// etcd's compacted watcher it is no longer a watcher, so progress requests on the stream
    /// keep being answered (docs/etcd-semantics.md, "Compacted-watch response").
    ended: FxHashSet<WatchId>,
    config: Arc<ActorsConfig>,
    clock: Arc<RevisionClock>,
    seq: Arc<AtomicU64>,
    responses: u64,
    /// Responses delivered to this stream that its client has not taken yet (see
    /// [`StreamInbox`]): counted up by whoever delivers, down here once the sink has them.
    inbox: Arc<InboxState>,
    /// The stream's slots for stream-wide progress requests at the store
    /// ([`PROGRESS_REQUESTS_IN_FLIGHT`]); made at the first such request.
    progress_slots: Option<Arc<Semaphore>>,
    /// The stream's slots for new watchers on their way to the store or the syncer
    /// ([`CREATES_IN_FLIGHT`]); made at the first create.
    create_slots: Option<Arc<Semaphore>>,
}

/// A stream's stream-wide progress requests at the store at once, as etcd's reader blocks on
/// its 16-slot `ctrlStream` (etcd: v3rpc/watch.go `ctrlStreamBufLen`). Each lists every watcher
/// of the stream; without this bound a client sending them back to back queued them in the
/// store's mailbox (2000 watchers, 100k requests in one body: 270–400 MiB peak RSS,
/// `actors/tests/progress_flood.rs`). A [`RequestStreamProgress`] beyond it waits for a slot
/// before it is answered, so a sender that awaits it (the transports' readers, then HTTP/2 flow
/// control; [`crate::WatchStream::request_progress`]) is held back.
pub const PROGRESS_REQUESTS_IN_FLIGHT: usize = 16;

/// A stream's new watchers not yet taken by the store or the syncer. A create from history goes
/// to the syncer without waiting for an answer, and the syncer runs at the idle scheduling
/// class, so on a saturated machine it can be starved for a while: without this bound a client
/// repeating create-from-history and cancel queued a watcher and a cancel per pair in its
/// mailbox for as long as that lasted (etcd takes both under its store's mutex, so its client
/// waits instead). A create beyond it waits, as a progress request beyond
/// [`PROGRESS_REQUESTS_IN_FLIGHT`] does, and with it every later message of the stream, until
/// the syncer takes one; a client creating a few hundred watchers at once does not notice.
pub const CREATES_IN_FLIGHT: usize = 256;

impl StreamActor {
    /// Returns a stream actor delivering to `sink`.
    pub fn new(
        id: StreamId,
        peers: Arc<StreamPeers>,
        sink: Arc<dyn WatchSink>,
        config: Arc<ActorsConfig>,
        clock: Arc<RevisionClock>,
        seq: Arc<AtomicU64>,
    ) -> Self {
        Self {
            id,
            peers,
            sink,
            ids: AutoWatchIds::new(),
            watches: FxHashMap::default(),
            ended: FxHashSet::default(),
            config,
            clock,
            seq,
            responses: 0,
            inbox: Arc::new(InboxState::default()),
            progress_slots: None,
            create_slots: None,
        }
    }

    /// Returns a reader of how many responses this stream holds for its client, which works
    /// while the actor is busy waiting on a slow client (a [`GetStreamStats`] waits for it).
    #[must_use]
    pub fn buffered_gauge(&self) -> BufferedResponses {
        BufferedResponses(Arc::clone(&self.inbox))
    }

    /// Sends responses to the client in order (see [`Outbox`]).
    fn emit(&mut self, ctx: &mut Context<Self>, responses: Vec<WatchResponse>) {
        let mut outbox = Outbox::default();
        for r in responses {
            self.push(&mut outbox, r);
        }
        self.finish(ctx, outbox, (0, 0));
    }

    /// Queues one response of this turn, merging it into the previous one when that is its
    /// watcher's.
    fn push(&mut self, outbox: &mut Outbox, response: WatchResponse) {
        let mut response = response;
        let last = outbox.queued.last_mut().filter(|last| !outbox.last_is_piece && last.watch_id == response.watch_id);
        if let Some(last) = last {
            let len = *outbox.last_len.get_or_insert_with(|| last.encoded_len(RESPONSE_HEADER_ESTIMATE));
            let limits = self.config.watch().batch_limits();
            match last.merge(response, len, limits.max_revs, limits.max_bytes) {
                Ok(merged_len) => {
                    outbox.last_len = Some(merged_len);
                    return;
                }
                Err(unmerged) => response = unmerged,
            }
        }
        outbox.last_len = None;
        outbox.last_is_piece = false;
        outbox.queued.push(response);
    }

    /// Queues the pieces a `fragment` watcher's response came to: a response sent whole is
    /// pushed as any other; the pieces of a split one are queued apart, none merged into what
    /// precedes nor anything into them, so the client reassembles exactly that response.
    fn push_pieces(&mut self, outbox: &mut Outbox, pieces: Vec<WatchResponse>) {
        if pieces.len() < 2 {
            pieces.into_iter().for_each(|piece| self.push(outbox, piece));
            return;
        }
        outbox.last_len = None;
        outbox.last_is_piece = true;
        outbox.queued.extend(pieces);
    }

    /// Ends a handler's turn: hands its responses to the sink at once while the client keeps
    /// up; from the first send that has to wait, the rest wait behind it and every other
    /// message waits until the client has taken all of them, so responses keep their order and
    /// the buffer fills while the client is slow. A closed client stops the stream.
    /// `delivered` responses of the inbox's count are released once the client has them.
    fn finish(&mut self, ctx: &mut Context<Self>, outbox: Outbox, delivered: (usize, usize)) {
        self.responses += outbox.queued.len() as u64;
        let mut responses = outbox.queued.into_iter();
        let mut waiting = None;
        for response in responses.by_ref() {
            match self.sink.start_send(response) {
                SinkSend::Done(Ok(())) => {}
                SinkSend::Done(Err(SinkClosed)) => {
                    ctx.stop();
                    return;
                }
                SinkSend::Pending(fut) => {
                    waiting = Some(fut);
                    break;
                }
            }
        }
        let Some(first) = waiting else {
            if self.inbox.release(delivered) {
                self.peers.retry_victims.do_send(RetryStream(self.id));
            }
            return;
        };
        let rest: Vec<WatchResponse> = responses.collect();
        let sink = Arc::clone(&self.sink);
        let inbox = Arc::clone(&self.inbox);
        let (retry_victims, id) = (self.peers.retry_victims.clone(), self.id);
        let fut = async move {
            first.await?;
            for r in rest {
                sink.send(r).await?;
            }
            // The socket took everything: victims made while it was full go now.
            if inbox.release(delivered) {
                retry_victims.do_send(RetryStream(id));
            }
            Ok::<(), SinkClosed>(())
        };
        ctx.wait(fut.into_actor(self).map(|result, _, ctx| {
            if result.is_err() {
                ctx.stop();
            }
        }));
    }

    /// Forgets a watcher that never started (the runtime stopped while it was created).
    fn forget(&mut self, id: WatchId) {
        if let Some(w) = self.watches.remove(&id) {
            w.cancel.cancel();
        }
    }

    /// Ends a watcher the server cancelled (compaction, slow consumer, unreadable history): it
    /// gets nothing more, and its id stays taken until the client cancels it.
    fn end(&mut self, id: WatchId) {
        if let Some(w) = self.watches.remove(&id) {
            w.cancel.cancel();
            self.ended.insert(id);
        }
    }

    /// The process-wide key of this stream's watcher `id`.
    fn key(&self, id: WatchId, w: &StreamWatch) -> WatcherKey {
        WatcherKey { stream: self.id, id, seq: w.seq }
    }

    fn validate(&self, req: &WatchCreate) -> Result<KeyRange, Error> {
        if req.start_revision < 0 {
            return Err(Error::NegativeStartRevision);
        }
        // etcd: an empty key watches "\0", the smallest key.
        let key: &[u8] = if req.key.is_empty() { &[0] } else { &req.key };
        let range = KeyRange::from_wire(key, &req.range_end);
        if range.is_empty() {
            return Err(Error::EmptyWatcherRange);
        }
        // Ended ids count: the client holds them until it cancels them.
        if self.watches.len() + self.ended.len() >= self.config.max_watchers_per_stream() {
            return Err(Error::TooManyWatchers);
        }
        Ok(range)
    }
}

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The real bound is in responses (the inbox's); the mailbox's, in messages, only matters
        // for deliveries of one response each.
        ctx.set_mailbox_capacity(self.config.watch().chan_buf_len());
        let addr = ctx.address();
        let chan_buf_len = self.config.watch().chan_buf_len();
        let inbox = StreamInbox::new(
            addr.clone().recipient(),
            Arc::clone(&self.inbox),
            chan_buf_len,
            self.config.stream_buffer_bytes(),
        );
        let register = RegisterStream { stream: self.id, inbox, close: addr.recipient() };
        // Sent by the stream itself to every actor that may hold its watchers, before anything
        // else: watches from history go straight to the syncer (`CreateWatch`), which may park
        // them with the victim actor, and every such message is sent after these, so each
        // actor knows the stream before any of its watchers reaches it.
        let [victims, syncer, store] = &self.peers.register;
        victims.do_send(register.clone());
        syncer.do_send(register.clone());
        store.do_send(register);
        if !self.config.manual_ticks() {
            // etcd: one interval per stream with jitter in [0, interval/10).
            let base = self.config.watch().progress_notify_interval();
            let jitter = base.mul_f64(rand::random::<f64>() / 10.0);
            ctx.run_interval(base + jitter, |_, ctx| ctx.notify(ProgressTick));
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        let watchers: Vec<WatcherKey> = self.watches.iter().map(|(&id, w)| self.key(id, w)).collect();
        for w in self.watches.values() {
            w.cancel.cancel();
        }
        self.watches.clear();
        self.peers.unregister.do_send(UnregisterStream { stream: self.id, watchers });
        Running::Stop
    }
}

impl Handler<CreateWatch> for StreamActor {
    type Result = ();

    fn handle(&mut self, msg: CreateWatch, ctx: &mut Self::Context) {
        let started = Instant::now();
        let slots = Arc::clone(self.create_slots.get_or_insert_with(|| Arc::new(Semaphore::new(CREATES_IN_FLIGHT))));
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => self.create_watch(msg.0, slot, ctx),
            // Every slot rides with a watcher the store or the syncer has not taken yet: wait
            // for one, handling nothing else meanwhile, so requests keep their order and the
            // client is held back by this mailbox's bound and then by its transport.
            Err(_) => {
                let req = msg.0;
                ctx.wait(async move { slots.acquire_owned().await.ok() }.into_actor(self).map(
                    move |slot, act, ctx| {
                        // The semaphore is never closed, so a slot always comes.
                        if let Some(slot) = slot {
                            act.create_watch(req, slot, ctx);
                        }
                    },
                ));
            }
        }
        crate::sched::yield_after_burst(started);
    }
}

impl StreamActor {
    /// Creates one watcher (docs/etcd-semantics.md §6.2): validates, allocates its id, and
    /// places it with the store (synced) or the syncer (from history); `slot` goes with it.
    fn create_watch(&mut self, req: WatchCreate, slot: OwnedSemaphorePermit, ctx: &mut Context<Self>) {
        let range = match self.validate(&req) {
            Ok(r) => r,
            Err(e) => return self.emit(ctx, vec![WatchResponse::create_failed(e.to_string(), self.clock.current())]),
        };
        let (watches, ended) = (&self.watches, &self.ended);
        let id = match self.ids.allocate(req.watch_id, |id| watches.contains_key(&id) || ended.contains(&id)) {
            Ok(id) => id,
            Err(e) => return self.emit(ctx, vec![WatchResponse::create_failed(e.to_string(), self.clock.current())]),
        };
        let key = WatcherKey { stream: self.id, id, seq: self.seq.fetch_add(1, Ordering::Relaxed) };
        let cancel = CancelFlag::new();
        self.watches.insert(
            id,
            StreamWatch {
                seq: key.seq,
                cancel: cancel.clone(),
                progress_notify: req.progress_notify,
                fragment: req.fragment,
                skip_progress: false,
            },
        );
        let mut watcher = Watcher {
            key,
            range,
            start_rev: req.start_revision,
            min_rev: 0,
            filters: req.filters,
            prev_kv: req.prev_kv,
            cancel,
        };
        let current = self.clock.current();
        if watcher.start_rev != 0 && watcher.start_rev <= current {
            // Behind the store already: the store would only hand it on to the syncer
            // (docs/etcd-semantics.md §6.2 step 4; `current` never goes backwards, so it decides
            // the same way later), so it goes there itself, and a burst of watchers created from
            // history costs the writers nothing. Sent before the created response is queued, and
            // events for it can only come after that (they are later messages to this actor).
            watcher.min_rev = watcher.start_rev;
            // `do_send`, as the store did: a burst of creates must not fail on the syncer's
            // mailbox capacity.
            let response = if self.peers.add_unsynced.connected() {
                self.peers.add_unsynced.do_send(AddUnsynced { watchers: vec![watcher], slot: Some(slot) });
                WatchResponse::created(id, current)
            } else {
                // The runtime has shut down: fail as a create through the store does then.
                self.forget(id);
                WatchResponse::create_failed(Error::Stopped.to_string(), current)
            };
            self.emit(ctx, vec![response]);
            return;
        }
        let registered = self.peers.watch.send(Watch { watcher, slot: Some(slot) });
        let sink = Arc::clone(&self.sink);
        let clock = Arc::clone(&self.clock);
        self.responses += 1;
        // Wait for the store before anything else: the created response must precede every
        // event of this watcher, and events already queued wait behind it (case X18).
        ctx.wait(
            async move {
                let (response, failed) = match registered.await {
                    Ok(revision) => (WatchResponse::created(id, revision), false),
                    Err(_) => (WatchResponse::create_failed(Error::Stopped.to_string(), clock.current()), true),
                };
                (sink.send(response).await, failed)
            }
            .into_actor(self)
            .map(move |(sent, failed), act, ctx| {
                // A watcher that never was frees its id, as a create refused up front does.
                if failed {
                    act.forget(id);
                }
                if sent.is_err() {
                    ctx.stop();
                }
            }),
        );
    }
}

impl Handler<RejectWatch> for StreamActor {
    type Result = ();

    fn handle(&mut self, msg: RejectWatch, ctx: &mut Self::Context) {
        self.emit(ctx, vec![WatchResponse::create_failed(msg.0, self.clock.current())]);
    }
}

impl Handler<CancelWatch> for StreamActor {
    type Result = ();

    fn handle(&mut self, msg: CancelWatch, ctx: &mut Self::Context) {
        // etcd: a watcher the server ended is cancelled like a live one (its cancel func is
        // still on the stream: v3rpc/watch.go recvLoop, mvcc/watcher.go Cancel).
        if self.ended.remove(&msg.0) {
            return self.emit(ctx, vec![WatchResponse::canceled(msg.0, self.clock.current(), "")]);
        }
        // etcd: an unknown or already cancelled id gets no response at all (case X6).
        let Some(w) = self.watches.remove(&msg.0) else { return };
        w.cancel.cancel();
        self.peers.cancel.do_send(CancelWatchers(vec![self.key(msg.0, &w)]));
        self.emit(ctx, vec![WatchResponse::canceled(msg.0, self.clock.current(), "")]);
    }
}

impl Handler<RequestStreamProgress> for StreamActor {
    type Result = ResponseActFuture<Self, ()>;

    /// Takes one of the stream's progress slots, waiting for one while all are at the store
    /// (other messages go on meanwhile), and resolves once the request is on its way.
    fn handle(&mut self, _: RequestStreamProgress, _: &mut Self::Context) -> Self::Result {
        let slots = Arc::clone(
            self.progress_slots.get_or_insert_with(|| Arc::new(Semaphore::new(PROGRESS_REQUESTS_IN_FLIGHT))),
        );
        if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            self.request_stream_progress(slot);
            return Box::pin(actix::fut::ready(()));
        }
        Box::pin(async move { slots.acquire_owned().await.ok() }.into_actor(self).map(|slot, act, _| {
            // The semaphore is never closed, so a slot always comes.
            if let Some(slot) = slot {
                act.request_stream_progress(slot);
            }
        }))
    }
}

impl StreamActor {
    /// Asks the store for a stream-wide progress answer; `slot` goes with the request and is
    /// given back once the store has handled it.
    fn request_stream_progress(&mut self, slot: tokio::sync::OwnedSemaphorePermit) {
        // etcd: a stream with no watchers gets no answer (case X7).
        if self.watches.is_empty() {
            return;
        }
        // The answer comes back keyed by the first watcher: make it the newest, so that `Deliver`
        // can tell whether a watcher was created after this request (the rest stay unsorted: the
        // store checks every one alike).
        let mut watchers: Vec<WatcherKey> = self.watches.iter().map(|(&id, w)| self.key(id, w)).collect();
        if let Some(newest) = (0..watchers.len()).max_by_key(|&i| watchers[i].seq) {
            watchers.swap(0, newest);
        }
        self.peers.progress.do_send(RequestProgress {
            stream: self.id,
            watchers,
            watch_id: INVALID_WATCH_ID,
            slot: Some(slot),
        });
    }
}

impl Handler<ProgressTick> for StreamActor {
    type Result = ();

    fn handle(&mut self, _: ProgressTick, _: &mut Self::Context) {
        for (&id, w) in self.watches.iter_mut().filter(|(_, w)| w.progress_notify) {
            // etcd: a tick right after an event response is skipped (case X17).
            if std::mem::take(&mut w.skip_progress) {
                continue;
            }
            let key = WatcherKey { stream: self.id, id, seq: w.seq };
            self.peers.progress.do_send(RequestProgress {
                stream: self.id,
                watchers: vec![key],
                watch_id: id,
                slot: None,
            });
        }
    }
}

impl Handler<Deliver> for StreamActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let started = Instant::now();
        let catch_up = msg.catch_up;
        let delivered = msg.weight();
        let mut out = Outbox::default();
        for Delivery { key, response } in msg.entries {
            if response.watch_id == INVALID_WATCH_ID {
                // A stream-wide progress speaks for the watchers of its request only, and `key`
                // is the newest of them. A watcher created since may still be catching up from
                // an older revision: clients apply a -1 progress to every watcher of the stream
                // (etcd's Go client broadcasts it and resumes from it), so it would break
                // Bookmarkable for that one. Drop it; the client asks again.
                if !self.watches.is_empty() && self.watches.values().all(|w| w.seq <= key.seq) {
                    self.push(&mut out, response);
                }
                continue;
            }
            // Cancel wins: nothing for a cancelled (or reused) id reaches the client.
            if key.stream != self.id {
                continue;
            }
            let Some(w) = self.watches.get_mut(&key.id).filter(|w| w.seq == key.seq) else { continue };
            if response.canceled {
                // A compaction notice or a server-side cancel (slow consumer, unreadable history)
                // ends the watcher here too, so progress requests on this stream keep working
                // (docs/etcd-semantics.md §10 quirk 4); its id waits for the client's cancel.
                self.end(key.id);
                self.push(&mut out, response);
            } else if response.events.is_empty() {
                self.push(&mut out, response);
            } else {
                w.skip_progress = true;
                if w.fragment {
                    let max_bytes = self.config.watch().max_response_bytes();
                    self.push_pieces(&mut out, response.into_fragments(max_bytes, RESPONSE_HEADER_ESTIMATE));
                } else {
                    self.push(&mut out, response);
                }
            }
        }
        self.finish(ctx, out, delivered);
        if catch_up {
            crate::sched::yield_after_burst(started);
        }
    }
}

impl Handler<CloseStream> for StreamActor {
    type Result = ();

    fn handle(&mut self, _: CloseStream, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<GetStreamStats> for StreamActor {
    type Result = MessageResult<GetStreamStats>;

    fn handle(&mut self, _: GetStreamStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(StreamStats {
            watchers: self.watches.len(),
            responses: self.responses,
            buffered: self.inbox.queued(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use watchkv::{Event, EventKind, KeyValue};

    use super::*;
    use crate::response_queue::{response_queue, QueueReceiver};

    /// Stands in for the store, the syncer and the victim actor: takes what a stream sends and
    /// keeps its progress requests and its watchers from history, with their slots, until the
    /// test lets one go.
    #[derive(Default)]
    struct Peer {
        held: Arc<Mutex<Vec<RequestProgress>>>,
        unsynced: Arc<Mutex<Vec<AddUnsynced>>>,
    }

    impl Actor for Peer {
        type Context = Context<Self>;
    }

    /// Implements a handler that takes the message and does nothing.
    macro_rules! ignore {
        ($($msg:ty),*) => {$(
            impl Handler<$msg> for Peer {
                type Result = ();
                fn handle(&mut self, _: $msg, _: &mut Self::Context) {}
            }
        )*};
    }
    ignore!(RegisterStream, CancelWatchers, UnregisterStream, RetryStream);

    impl Handler<AddUnsynced> for Peer {
        type Result = ();
        fn handle(&mut self, msg: AddUnsynced, _: &mut Self::Context) {
            self.unsynced.lock().expect("not poisoned").push(msg);
        }
    }

    impl Handler<Watch> for Peer {
        type Result = i64;
        fn handle(&mut self, _: Watch, _: &mut Self::Context) -> i64 {
            1
        }
    }

    impl Handler<RequestProgress> for Peer {
        type Result = ();
        fn handle(&mut self, msg: RequestProgress, _: &mut Self::Context) {
            self.held.lock().expect("not poisoned").push(msg);
        }
    }

    fn held_count<T>(held: &Mutex<Vec<T>>) -> usize {
        held.lock().expect("not poisoned").len()
    }

    /// Every peer of a stream is `peer`.
    fn peers_at(peer: &Addr<Peer>) -> Arc<StreamPeers> {
        Arc::new(StreamPeers {
            register: [peer.clone().recipient(), peer.clone().recipient(), peer.clone().recipient()],
            add_unsynced: peer.clone().recipient(),
            watch: peer.clone().recipient(),
            cancel: peer.clone().recipient(),
            progress: peer.clone().recipient(),
            unregister: peer.clone().recipient(),
            retry_victims: peer.clone().recipient(),
        })
    }

    /// Takes every response the stream has queued for its client so far.
    fn drain(rx: &mut QueueReceiver) -> Vec<WatchResponse> {
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        let mut out = Vec::new();
        while let std::task::Poll::Ready(Some(r)) = rx.poll_recv(&mut cx) {
            out.push(r);
        }
        out
    }

    /// A delete event of `key` at `rev` whose previous value is `value_len` bytes.
    fn delete_event(key: &str, rev: i64, value_len: usize) -> Arc<Event> {
        let kv = KeyValue { key: key.into(), mod_revision: rev, ..KeyValue::default() };
        let prev = KeyValue {
            key: key.into(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: vec![b'v'; value_len],
            lease: 0,
        };
        Arc::new(Event::new(EventKind::Delete, kv, Some(prev)))
    }

    /// A fragmented sequence is one original response split (etcd: api/v3rpc/watch.go
    /// sendFragments; clientv3 joins the pieces under the first piece's header), so a later
    /// revision must not be merged into its last piece, though that piece alone looks like a
    /// plain events response under the merge limit.
    #[actix_rt::test]
    async fn a_later_revision_is_not_merged_into_the_last_piece_of_a_split_response() {
        let peer = Peer::default().start();
        let (tx, mut rx) = response_queue(16);
        let config = Arc::new(ActorsConfig::new("unused"));
        let max_response = config.watch().max_response_bytes();
        let stream = StreamActor::new(
            1,
            peers_at(&peer),
            Arc::new(tx),
            config,
            Arc::new(RevisionClock::new(1, 0)),
            Arc::new(AtomicU64::new(1)),
        )
        .start();
        let create = WatchCreate { fragment: true, prev_kv: true, ..WatchCreate::new(&KeyRange::prefix("k"), 0) };
        stream.send(CreateWatch(create)).await.expect("stream runs");
        let created = drain(&mut rx);
        assert!(created.len() == 1 && created[0].created, "{created:?}");
        let id = created[0].watch_id;
        let key = WatcherKey { stream: 1, id, seq: 1 };

        // One group commit: a put at 9, a DeleteRange of 21 keys with 100 KiB values at 10
        // (over `max_response_bytes` with their prev_kv, so it goes in two pieces), puts at 11
        // and 12, which still merge with each other.
        let put = |rev: i64| {
            let kv = KeyValue {
                key: b"k-small".to_vec(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: b"x".to_vec(),
                lease: 0,
            };
            WatchResponse::event(id, rev, Arc::new(Event::new(EventKind::Put, kv, None)), true)
        };
        let deletes = (0..21).map(|i| delete_event(&format!("k{i:02}"), 10, 100 * 1024)).collect();
        let big = WatchResponse::events(id, 10, deletes, true);
        assert!(big.encoded_len(RESPONSE_HEADER_ESTIMATE) > max_response);
        let entries = [put(9), big, put(11), put(12)].into_iter().map(|response| Delivery { key, response }).collect();
        stream.send(Deliver::live(entries)).await.expect("stream runs");

        let got = drain(&mut rx);
        let shape: Vec<(i64, bool, Vec<i64>)> =
            got.iter().map(|r| (r.revision, r.fragment, r.events.iter().map(|e| e.revision()).collect())).collect();
        let expected =
            vec![(9, false, vec![9]), (10, true, vec![10; 20]), (10, false, vec![10]), (12, false, vec![11, 12])];
        assert_eq!(shape, expected);
    }

    #[actix_rt::test]
    async fn a_progress_request_beyond_the_streams_slots_waits_until_the_store_lets_one_go() {
        let held = Arc::new(Mutex::new(Vec::new()));
        let peer = Peer { held: Arc::clone(&held), ..Peer::default() }.start();
        let peers = peers_at(&peer);
        let (tx, _rx) = response_queue(16);
        let stream = StreamActor::new(
            1,
            peers,
            Arc::new(tx),
            Arc::new(ActorsConfig::new("unused")),
            Arc::new(RevisionClock::new(1, 0)),
            Arc::new(AtomicU64::new(1)),
        )
        .start();
        stream.send(CreateWatch(WatchCreate::new(&KeyRange::single(b"k".to_vec()), 0))).await.expect("stream runs");

        for _ in 0..PROGRESS_REQUESTS_IN_FLIGHT {
            stream.send(RequestStreamProgress).await.expect("a free slot answers at once");
        }
        let mut waiting = Box::pin(stream.send(RequestStreamProgress));
        assert!(futures::poll!(&mut waiting).is_pending());
        // Every message the stream handled before this one has reached the peer.
        stream.send(GetStreamStats).await.expect("stream runs");
        peer.send(RetryStream(0)).await.expect("peer runs");
        assert_eq!(held_count(&held), PROGRESS_REQUESTS_IN_FLIGHT, "the 17th request is held at the stream");
        assert!(futures::poll!(&mut waiting).is_pending());

        // The store handles one: its slot comes back and the waiting request goes on.
        drop(held.lock().expect("not poisoned").pop());
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the waiting request got the freed slot")
            .expect("stream runs");
        peer.send(RetryStream(0)).await.expect("peer runs");
        assert_eq!(held_count(&held), PROGRESS_REQUESTS_IN_FLIGHT);
        if let Some(last) = held.lock().expect("not poisoned").last() {
            assert_eq!(last.watch_id, INVALID_WATCH_ID);
            assert_eq!(last.watchers.len(), 1);
        }

        // A request still waiting when the stream closes fails rather than waiting for ever.
        let mut waiting = Box::pin(stream.send(RequestStreamProgress));
        assert!(futures::poll!(&mut waiting).is_pending());
        stream.do_send(CloseStream);
        let closed = tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("the closed stream answered");
        assert!(closed.is_err(), "a request waiting on a closed stream fails");
    }

    #[actix_rt::test]
    async fn a_create_from_history_beyond_the_streams_slots_waits_until_the_syncer_takes_one() {
        let unsynced = Arc::new(Mutex::new(Vec::new()));
        let peer = Peer { unsynced: Arc::clone(&unsynced), ..Peer::default() }.start();
        let (tx, mut rx) = response_queue(2 * CREATES_IN_FLIGHT);
        let stream = StreamActor::new(
            1,
            peers_at(&peer),
            Arc::new(tx),
            Arc::new(ActorsConfig::new("unused")),
            Arc::new(RevisionClock::new(5, 0)),
            Arc::new(AtomicU64::new(1)),
        )
        .start();
        let from_history = || CreateWatch(WatchCreate::new(&KeyRange::prefix("k"), 1));
        for _ in 0..CREATES_IN_FLIGHT {
            stream.send(from_history()).await.expect("stream runs");
        }
        // One more create takes the stream's turn until a slot is free: what follows it waits.
        stream.send(from_history()).await.expect("stream runs");
        let mut stats = Box::pin(stream.send(GetStreamStats));
        assert!(futures::poll!(&mut stats).is_pending());
        peer.send(RetryStream(0)).await.expect("peer runs");
        assert_eq!(held_count(&unsynced), CREATES_IN_FLIGHT, "the create beyond the slots is held at the stream");
        assert!(futures::poll!(&mut stats).is_pending());
        assert_eq!(drain(&mut rx).len(), CREATES_IN_FLIGHT, "one created response per watcher sent on");

        // The syncer takes one watcher: its slot comes back and the waiting create goes on.
        let taken = unsynced.lock().expect("not poisoned").remove(0);
        assert!(taken.slot.is_some() && taken.watchers.len() == 1, "{taken:?}");
        drop(taken);
        let stats = tokio::time::timeout(Duration::from_secs(30), stats)
            .await
            .expect("the stream went on once a slot was free")
            .expect("stream runs");
        assert_eq!(stats.watchers, CREATES_IN_FLIGHT + 1);
        peer.send(RetryStream(0)).await.expect("peer runs");
        assert_eq!(held_count(&unsynced), CREATES_IN_FLIGHT);
        let created = drain(&mut rx);
        assert!(created.len() == 1 && created[0].created && !created[0].canceled, "{created:?}");
        let newest = unsynced.lock().expect("not poisoned").last().map(|m| m.watchers[0].key.id);
        assert_eq!(newest, Some(created[0].watch_id), "the waiting create went to the syncer");
    }

    /// Stands in for a store that has stopped: started, it stops at once.
    struct StoppedStore;

    impl Actor for StoppedStore {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Self::Context) {
            ctx.stop();
        }
    }

    impl Handler<Watch> for StoppedStore {
        type Result = i64;
        fn handle(&mut self, _: Watch, _: &mut Self::Context) -> i64 {
            1
        }
    }

    #[actix_rt::test]
    async fn a_create_the_stopped_store_could_not_take_frees_its_watch_id() {
        let peer = Peer::default().start();
        let stopped = StoppedStore.start();
        let deadline = Instant::now() + Duration::from_secs(30);
        while stopped.connected() {
            assert!(Instant::now() < deadline, "the stand-in store did not stop");
            tokio::task::yield_now().await;
        }
        let peers = Arc::new(StreamPeers {
            register: [peer.clone().recipient(), peer.clone().recipient(), peer.clone().recipient()],
            add_unsynced: peer.clone().recipient(),
            watch: stopped.recipient(),
            cancel: peer.clone().recipient(),
            progress: peer.clone().recipient(),
            unregister: peer.clone().recipient(),
            retry_victims: peer.clone().recipient(),
        });
        let (tx, mut rx) = response_queue(16);
        let stream = StreamActor::new(
            1,
            peers,
            Arc::new(tx),
            Arc::new(ActorsConfig::new("unused")),
            Arc::new(RevisionClock::new(5, 0)),
            Arc::new(AtomicU64::new(1)),
        )
        .start();
        // The same id twice: were the first failure to keep it taken, the second would be
        // refused as a duplicate.
        for _ in 0..2 {
            let create = WatchCreate { watch_id: 7, ..WatchCreate::new(&KeyRange::single(b"k".to_vec()), 0) };
            stream.send(CreateWatch(create)).await.expect("stream runs");
        }
        let stats = stream.send(GetStreamStats).await.expect("stream runs");
        assert_eq!(stats.watchers, 0);
        let got: Vec<(bool, bool, String, i64)> =
            drain(&mut rx).into_iter().map(|r| (r.created, r.canceled, r.cancel_reason, r.revision)).collect();
        assert_eq!(got, vec![(true, true, Error::Stopped.to_string(), 5); 2]);
    }
}
