//! Owns one client stream (etcd `watchStream` + the gRPC send loop, docs/etcd-semantics.md
//! §6.1, §7.1–§7.4): its watch ids, its buffer of `chan_buf_len` responses (a [`StreamInbox`]),
//! and delivery to the client through a [`WatchSink`]. Deliveries arrive without waiting; while
//! the client is slow this actor waits on the sink, its buffer fills, and further deliveries
//! make victims instead of waiting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use watchkv::watch::ids::AutoWatchIds;
use watchkv::watch::response::{WatchResponse, INVALID_WATCH_ID};
use watchkv::watch::watcher::{starts_in_history, CancelFlag, StreamId, WatchId, Watcher, WatcherKey};
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
    /// The store: cancelled watchers (it forwards those it does not hold to the syncer and the
    /// victim actor).
    pub cancel: Recipient<CancelWatchers>,
    /// The store: progress requests.
    pub progress: Recipient<RequestProgress>,
    /// The store: the stream has ended (forwarded like cancels).
    pub unregister: Recipient<UnregisterStream>,
    /// The victim actor: the stream's socket drained after a delivery to it was refused.
    pub retry_victims: Recipient<RetryStream>,
    /// The runtime's create slots ([`CREATES_IN_FLIGHT`]), one per new watcher from history
    /// that the syncer has not taken yet, whichever stream created it.
    pub create_slots: Arc<Semaphore>,
}

/// A client's request on a stream, as it waits behind a create from history that waits for a
/// create slot ([`CREATES_IN_FLIGHT`]).
#[derive(Debug)]
enum ClientRequest {
    Create(WatchCreate),
    Cancel(WatchId),
    Progress,
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
    /// The client's requests waiting, in order, behind a create from history that waits for a
    /// create slot, each with what tells its sender it was taken. Deliveries go on meanwhile.
    backlog: VecDeque<(ClientRequest, oneshot::Sender<()>)>,
    /// A progress request waits for one of the stream's progress slots, and the client's later
    /// requests wait in the backlog behind it.
    progress_waiting: bool,
}

/// A stream's stream-wide progress requests at the store at once, as etcd's reader blocks on
/// its 16-slot `ctrlStream` (etcd: v3rpc/watch.go `ctrlStreamBufLen`). Each lists every watcher
/// of the stream; without this bound a client sending them back to back queued them in the
/// store's mailbox (2000 watchers, 100k requests in one body: 270–400 MiB peak RSS,
/// `actors/tests/watch_request_floods.rs`). A [`RequestStreamProgress`] beyond it waits for a slot
/// before it is answered, so a sender that awaits it (the transports' readers, then HTTP/2 flow
/// control; [`crate::WatchStream::request_progress`]) is held back.
pub const PROGRESS_REQUESTS_IN_FLIGHT: usize = 16;

/// New watchers from history on their way to the syncer, all streams together. Such a create
/// goes to the syncer without waiting for an answer, and the syncer runs at the idle scheduling
/// class, so on a saturated machine it can be starved for a while: without this bound a client
/// repeating create-from-history and cancel queued a watcher and a cancel per pair in its
/// mailbox for as long as that lasted, and more so over many streams or streams opened and
/// closed in turn (etcd takes both under its store's mutex, so its client waits instead). A
/// create beyond it waits at its stream for a slot, and the stream's later requests wait behind
/// it; the transports' readers await each request, so the client is held back by its transport.
/// Deliveries go on meanwhile. Queued, a watcher takes about 200 bytes and its key and range end.
/// Slots go to the waiting streams first come, first served, one stream waiting for one at a
/// time; a stream whose client stopped reading keeps a slot it was given until its client reads
/// or goes.
pub const CREATES_IN_FLIGHT: usize = 4096;

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
            backlog: VecDeque::new(),
            progress_waiting: false,
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
    type Result = ActorResponse<Self, ()>;

    /// Resolves once the create is taken: at once, or when a create slot is free for it and
    /// for the creates from history before it.
    fn handle(&mut self, msg: CreateWatch, ctx: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let taken = self.take_request(ClientRequest::Create(msg.0), ctx);
        crate::sched::yield_after_burst(started);
        taken
    }
}

impl StreamActor {
    /// Handles a client's request now, unless requests wait already or it is a create from
    /// history with no create slot free: then it waits in the backlog, and the returned future
    /// resolves when it has been taken.
    fn take_request(&mut self, req: ClientRequest, ctx: &mut Context<Self>) -> ActorResponse<Self, ()> {
        let req = if self.backlog.is_empty() && !self.progress_waiting {
            match self.try_request(req, None, ctx) {
                // Answered in this turn: a future would be answered only after the mailbox.
                Ok(None) => return ActorResponse::reply(()),
                Ok(Some(answered)) => {
                    self.progress_waiting = true;
                    return ActorResponse::r#async(answered.map(|(), act, ctx| act.request_taken(ctx)));
                }
                Err(req) => {
                    self.wait_for_slot(ctx);
                    req
                }
            }
        } else {
            req
        };
        let (done, taken) = oneshot::channel();
        self.backlog.push_back((req, done));
        // An error means the stream stopped with the request still waiting: nothing to answer.
        ActorResponse::r#async(async move { taken.await.unwrap_or(()) }.into_actor(self))
    }

    /// Handles `req`, a create from history with `spare` as its slot if given, else with a free
    /// one; returns it when it needs a slot and none is free, and a future when it is a progress
    /// request, which resolves once that request is on its way.
    fn try_request(
        &mut self,
        req: ClientRequest,
        spare: Option<OwnedSemaphorePermit>,
        ctx: &mut Context<Self>,
    ) -> Result<Option<ResponseActFuture<Self, ()>>, ClientRequest> {
        match req {
            ClientRequest::Create(create) => {
                let current = self.clock.current();
                let slot = if starts_in_history(create.start_revision, current) {
                    match spare.map_or_else(|| Arc::clone(&self.peers.create_slots).try_acquire_owned(), Ok) {
                        Ok(slot) => Some(slot),
                        Err(_) => return Err(ClientRequest::Create(create)),
                    }
                } else {
                    None
                };
                self.create_watch(create, current, slot, ctx);
                Ok(None)
            }
            ClientRequest::Cancel(id) => {
                self.cancel_watch(id, ctx);
                Ok(None)
            }
            ClientRequest::Progress => Ok(self.request_progress()),
        }
    }

    /// Waits for a create slot for the backlog's first request without holding back anything
    /// else this actor handles.
    fn wait_for_slot(&mut self, ctx: &mut Context<Self>) {
        let slots = Arc::clone(&self.peers.create_slots);
        // The runtime never closes the semaphore, so a slot always comes.
        ctx.spawn(
            async move { slots.acquire_owned().await.ok() }
                .into_actor(self)
                .map(|slot, act, ctx| act.take_backlog(slot, ctx)),
        );
    }

    /// Takes the backlog's next request in a later turn of this actor, after any wait the
    /// previous one began (a create through the store waits for its answer before anything
    /// else of the stream).
    fn continue_backlog(&mut self, ctx: &mut Context<Self>) {
        if !self.backlog.is_empty() {
            ctx.spawn(actix::fut::ready(()).map(|(), act: &mut Self, ctx| act.take_backlog(None, ctx)));
        }
    }

    /// A progress request that waited for one of the stream's progress slots is on its way:
    /// the requests after it can go.
    fn request_taken(&mut self, ctx: &mut Context<Self>) {
        self.progress_waiting = false;
        self.continue_backlog(ctx);
    }

    /// Takes the backlog's first request, with `slot` if it needs one.
    fn take_backlog(&mut self, slot: Option<OwnedSemaphorePermit>, ctx: &mut Context<Self>) {
        // This runs as a spawned future. actix polls one such future between a handler that
        // begins a wait (responses of a delivery waiting for the client) and that wait; a
        // response sent now would overtake those, so the request waits until they are out.
        if ctx.waiting() {
            ctx.spawn(actix::fut::ready(()).map(move |(), act: &mut Self, ctx| act.take_backlog(slot, ctx)));
            return;
        }
        let Some((req, done)) = self.backlog.pop_front() else { return };
        match self.try_request(req, slot, ctx) {
            Err(req) => {
                self.backlog.push_front((req, done));
                self.wait_for_slot(ctx);
            }
            Ok(Some(answered)) => {
                self.progress_waiting = true;
                ctx.spawn(answered.map(move |(), act, ctx| {
                    let _ = done.send(());
                    act.request_taken(ctx);
                }));
            }
            Ok(None) => {
                let _ = done.send(());
                self.continue_backlog(ctx);
            }
        }
    }

    /// Creates one watcher (docs/etcd-semantics.md §6.2): validates, allocates its id, and
    /// places it with the store (synced) or the syncer (from history, as of `current`, with its
    /// create `slot`).
    fn create_watch(
        &mut self,
        req: WatchCreate,
        current: i64,
        slot: Option<OwnedSemaphorePermit>,
        ctx: &mut Context<Self>,
    ) {
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
        if starts_in_history(watcher.start_rev, current) {
            // Behind the store already: the store would only hand it on to the syncer
            // (docs/etcd-semantics.md §6.2 step 4; `current` never goes backwards, so it decides
            // the same way later), so it goes there itself, and a burst of watchers created from
            // history costs the writers nothing. Sent before the created response is queued, and
            // events for it can only come after that (they are later messages to this actor).
            watcher.min_rev = watcher.start_rev;
            // `do_send`, as the store did: a burst of creates must not fail on the syncer's
            // mailbox capacity.
            let response = if self.peers.add_unsynced.connected() {
                self.peers.add_unsynced.do_send(AddUnsynced { watchers: vec![watcher], slot });
                WatchResponse::created(id, current)
            } else {
                // The runtime has shut down: fail as a create through the store does then.
                self.forget(id);
                WatchResponse::create_failed(Error::Stopped.to_string(), current)
            };
            self.emit(ctx, vec![response]);
            return;
        }
        let registered = self.peers.watch.send(Watch(watcher));
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
    type Result = ActorResponse<Self, ()>;

    /// Resolves once the cancel is taken: at once, or after the creates waiting before it.
    fn handle(&mut self, msg: CancelWatch, ctx: &mut Self::Context) -> Self::Result {
        self.take_request(ClientRequest::Cancel(msg.0), ctx)
    }
}

impl StreamActor {
    /// Cancels the watcher `id` (docs/etcd-semantics.md §6.10).
    fn cancel_watch(&mut self, id: WatchId, ctx: &mut Context<Self>) {
        // etcd: a watcher the server ended is cancelled like a live one (its cancel func is
        // still on the stream: v3rpc/watch.go recvLoop, mvcc/watcher.go Cancel).
        if self.ended.remove(&id) {
            return self.emit(ctx, vec![WatchResponse::canceled(id, self.clock.current(), "")]);
        }
        // etcd: an unknown or already cancelled id gets no response at all (case X6).
        let Some(w) = self.watches.remove(&id) else { return };
        w.cancel.cancel();
        self.peers.cancel.do_send(CancelWatchers(vec![self.key(id, &w)]));
        self.emit(ctx, vec![WatchResponse::canceled(id, self.clock.current(), "")]);
    }
}

impl Handler<RequestStreamProgress> for StreamActor {
    type Result = ActorResponse<Self, ()>;

    /// Resolves once the request is on its way: after the creates waiting before it, and once
    /// it has one of the stream's progress slots.
    fn handle(&mut self, _: RequestStreamProgress, ctx: &mut Self::Context) -> Self::Result {
        self.take_request(ClientRequest::Progress, ctx)
    }
}

impl StreamActor {
    /// Takes one of the stream's progress slots and sends the request; while all are at the
    /// store, returns a future that waits for one (other messages go on meanwhile) and resolves
    /// once the request is on its way.
    fn request_progress(&mut self) -> Option<ResponseActFuture<Self, ()>> {
        let slots = Arc::clone(
            self.progress_slots.get_or_insert_with(|| Arc::new(Semaphore::new(PROGRESS_REQUESTS_IN_FLIGHT))),
        );
        if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            self.request_stream_progress(slot);
            return None;
        }
        Some(Box::pin(async move { slots.acquire_owned().await.ok() }.into_actor(self).map(|slot, act, _| {
            // The semaphore is never closed, so a slot always comes.
            if let Some(slot) = slot {
                act.request_stream_progress(slot);
            }
        })))
    }

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
    use crate::response_queue::{response_queue, QueueReceiver, QueueSender};

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
        peers_with(peer, peer.clone().recipient(), CREATES_IN_FLIGHT)
    }

    /// Every peer of a stream is `peer` but the store's `watch`, with `create_slots` slots.
    fn peers_with(peer: &Addr<Peer>, watch: Recipient<Watch>, create_slots: usize) -> Arc<StreamPeers> {
        Arc::new(StreamPeers {
            register: [peer.clone().recipient(), peer.clone().recipient(), peer.clone().recipient()],
            add_unsynced: peer.clone().recipient(),
            watch,
            cancel: peer.clone().recipient(),
            progress: peer.clone().recipient(),
            unregister: peer.clone().recipient(),
            retry_victims: peer.clone().recipient(),
            create_slots: Arc::new(Semaphore::new(create_slots)),
        })
    }

    /// Starts stream 1 over `peers`, delivering to `sink`, with the revision clock at `current`.
    fn start_stream(
        peers: Arc<StreamPeers>,
        sink: QueueSender,
        config: impl Into<Arc<ActorsConfig>>,
        current: i64,
    ) -> Addr<StreamActor> {
        let clock = Arc::new(RevisionClock::new(current, 0));
        StreamActor::new(1, peers, Arc::new(sink), config.into(), clock, Arc::new(AtomicU64::new(1))).start()
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
        let stream = start_stream(peers_at(&peer), tx, config, 1);
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
        let stream = start_stream(peers, tx, ActorsConfig::new("unused"), 1);
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
    async fn a_create_from_history_beyond_the_slots_waits_for_the_syncer_and_deliveries_go_on() {
        const SLOTS: usize = 4;
        let (held, unsynced) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let peer = Peer { held: Arc::clone(&held), unsynced: Arc::clone(&unsynced) }.start();
        let (tx, mut rx) = response_queue(64);
        let peers = peers_with(&peer, peer.clone().recipient(), SLOTS);
        let stream = start_stream(Arc::clone(&peers), tx, ActorsConfig::new("unused"), 5);
        let from_history =
            |watch_id| CreateWatch(WatchCreate { watch_id, ..WatchCreate::new(&KeyRange::prefix("k"), 1) });
        for id in 1..=SLOTS {
            stream.send(from_history(id as i64)).await.expect("stream runs");
        }
        assert_eq!(drain(&mut rx).len(), SLOTS, "one created response per watcher sent on");

        // One more waits for a slot; a progress request and a cancel of it, sent after it, wait
        // behind it in order.
        let waiting_id = SLOTS as i64 + 1;
        let mut waiting = Box::pin(stream.send(from_history(waiting_id)));
        let mut progress = Box::pin(stream.send(RequestStreamProgress));
        assert!(futures::poll!(&mut progress).is_pending());
        stream.do_send(CancelWatch(waiting_id));
        // Deliveries go on meanwhile: an event for the first watcher reaches the client.
        let key = WatcherKey { stream: 1, id: 1, seq: 1 };
        let kv =
            KeyValue { key: b"k1".to_vec(), create_revision: 6, mod_revision: 6, version: 1, ..KeyValue::default() };
        let event = WatchResponse::event(1, 6, Arc::new(Event::new(EventKind::Put, kv, None)), false);
        let deliver = stream.send(Deliver::live(vec![Delivery { key, response: event }]));
        tokio::time::timeout(Duration::from_secs(30), deliver)
            .await
            .expect("the delivery went on while a create waited")
            .expect("stream runs");
        let delivered = drain(&mut rx);
        assert!(delivered.len() == 1 && delivered[0].watch_id == 1 && delivered[0].revision == 6, "{delivered:?}");
        peer.send(RetryStream(0)).await.expect("peer runs");
        assert_eq!(held_count(&unsynced), SLOTS, "the create beyond the slots is held at the stream");
        assert_eq!(held_count(&held), 0, "the progress request waits behind the create");
        assert!(futures::poll!(&mut waiting).is_pending());

        // The syncer takes one watcher: its slot comes back, and the waiting create goes on,
        // then the cancel behind it.
        let taken = unsynced.lock().expect("not poisoned").remove(0);
        assert!(taken.slot.is_some() && taken.watchers.len() == 1, "{taken:?}");
        drop(taken);
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the create went on once a slot was free")
            .expect("stream runs");
        tokio::time::timeout(Duration::from_secs(30), progress)
            .await
            .expect("the progress request went on after the create")
            .expect("stream runs");
        let stats = stream.send(GetStreamStats).await.expect("stream runs");
        assert_eq!(stats.watchers, SLOTS, "the waiting watcher was created, then cancelled");
        assert_eq!(peers.create_slots.available_permits(), 0, "the freed slot went with the waiting create");
        let got: Vec<(i64, bool, bool)> = drain(&mut rx).iter().map(|r| (r.watch_id, r.created, r.canceled)).collect();
        assert_eq!(got, vec![(waiting_id, true, false), (waiting_id, false, true)]);
        peer.send(RetryStream(0)).await.expect("peer runs");
        let newest = unsynced.lock().expect("not poisoned").last().map(|m| (m.watchers[0].key.id, m.slot.is_some()));
        assert_eq!(newest, Some((waiting_id, true)), "the waiting create went to the syncer with its slot");
        let listed: Vec<usize> = held.lock().expect("not poisoned").iter().map(|r| r.watchers.len()).collect();
        assert_eq!(listed, vec![SLOTS + 1], "the progress request came after the create, before the cancel");
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
        let peers = peers_with(&peer, stopped.recipient(), CREATES_IN_FLIGHT);
        let (tx, mut rx) = response_queue(16);
        let stream = start_stream(peers, tx, ActorsConfig::new("unused"), 5);
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
