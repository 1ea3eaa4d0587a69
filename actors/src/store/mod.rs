//! Owns `StoreActor`: the `KvStore`, the synced watcher group and the recent-revision ring.
//! Every write, read, compaction and lease call goes through it, and it notifies synced
//! watchers when a write commits (etcd `watchable_store.go notify`, docs/etcd-semantics.md
//! §6.4). It is the only place that moves the current revision and the only one that adds to
//! `synced`, so the hand-off from catch-up to live delivery happens at a revision boundary with
//! no event able to fall between.
//!
//! This file holds the actor, its state and its small handlers; the group commit is in
//! `commit.rs`, the fan-out in `fanout.rs`, the ring and promotion in `promote.rs`, leases in
//! `leases.rs`, ranges in `reads.rs`, recovery from storage failures in `recovery.rs`, a mirror's re-bootstrap in
//! `reimport.rs`.

mod commit;
mod fanout;
mod leases;
mod promote;
mod reads;
mod recovery;
mod reimport;

pub(crate) use commit::queued;
pub use commit::PendingWrite;
pub use reimport::ReimportUpstream;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use watchkv::alarm::AlarmMember;
use watchkv::watch::id_map::IdMap;
use watchkv::watch::response::{CommitEvents, WatchResponse};
use watchkv::watch::watcher::{starts_in_history, StreamId, Watcher, WatcherKey};
use watchkv::watch::watcher_group::{WatcherGroup, WatcherSlot};
use watchkv::{Error, KvStore, Result};

use crate::config::ActorsConfig;
use crate::protocol::{
    AddUnsynced, Alarm, AuthChange, CancelWatchers, CheckHealth, CloseStream, Compact, Counters, DbSize, Defragment,
    Deliver, Delivery, GetStoreStats, Health, LeaseTick, ParkVictims, PlanHashKv, RegisterStream, ReleaseStorage,
    RequestProgress, RevisionClock, Shutdown, SnapshotWholeStore, StoreStats, StreamInbox, TakeSnapshot,
    UnregisterStream, UseStorage, Watch,
};

/// A map keyed by stream id (ids come from a process counter, so [`IdMap`]'s cheap hash fits).
pub type StreamMap<V> = IdMap<V>;

/// One turn's deliveries, by stream, each stream's in the order they must reach it.
type PerStream = StreamMap<Vec<Delivery>>;

/// The messages the store sends its peers.
pub struct StorePeers {
    /// The syncer: watchers to catch up from storage.
    pub add_unsynced: Recipient<AddUnsynced>,
    /// The victim actor: watchers whose stream's mailbox was full.
    pub park_victims: Recipient<ParkVictims>,
    /// The syncer and the victim actor, which may hold a cancelled watcher too.
    pub cancel: [Recipient<CancelWatchers>; 2],
    /// The syncer and the victim actor, which may hold a closed stream's watchers too.
    pub unregister: [Recipient<UnregisterStream>; 2],
    /// Where the store publishes the auth store after each change, for the transports' checks.
    pub auth: Arc<crate::api::auth::AuthView>,
    /// The syncer: let go of the database before the store reopens it (`recovery.rs`).
    pub release_storage: Recipient<ReleaseStorage>,
    /// The syncer: the reopened store's reader.
    pub use_storage: Recipient<UseStorage>,
    /// Counts the store's releases of its database (`recovery.rs`): snapshot streams end at
    /// one ([`crate::snapshot_stream::SnapshotChunks`]), so their views let go of it.
    pub storage_releases: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Sends `msg` to both recipients (the syncer and the victim actor).
fn forward<M>(to: &[Recipient<M>; 2], msg: M)
where
    M: Message<Result = ()> + Clone + Send + 'static,
{
    to[0].do_send(msg.clone());
    to[1].do_send(msg);
}

/// The store actor. Runs on its own arbiter: writes block it on disk, nothing else waits.
pub struct StoreActor {
    store: Option<KvStore>,
    /// A storage failure being recovered from (`recovery.rs`).
    failure: Option<recovery::Failure>,
    config: Arc<ActorsConfig>,
    synced: WatcherGroup,
    streams: StreamMap<StreamInbox>,
    /// How to close each stream on shutdown.
    closers: HashMap<StreamId, Recipient<CloseStream>>,
    /// The last revisions' events, oldest first, for replaying to promoted watchers: each
    /// revision's range of the group commit's shared batch.
    ring: VecDeque<(i64, CommitEvents, std::ops::Range<usize>)>,
    pending: Vec<Box<dyn PendingWrite>>,
    flush_scheduled: bool,
    /// Promoted watchers not yet placed, in arrival order (a bounded number per turn).
    promoting: VecDeque<Watcher>,
    place_scheduled: bool,
    clock: Arc<RevisionClock>,
    counters: Arc<Counters>,
    peers: StorePeers,
    /// Reused buffer for matching.
    matched: Vec<WatcherSlot>,
    /// Merges a group commit's revisions into one response per synced watcher.
    turn_marks: fanout::TurnMarks,
    /// Slots for reading large ranges off this thread (`reads.rs`).
    range_readers: Arc<tokio::sync::Semaphore>,
    /// Ranges and read-only txns read off this thread so far.
    ranges_read_off_thread: u64,
    /// Read-only txns taken as reads so far, answered or failed (`reads.rs`).
    read_txns: u64,
    /// Reads (ranges, read-only txns) whose walk of the key index goes on over several turns,
    /// oldest first (`reads.rs`).
    planning: VecDeque<Box<dyn reads::InPlanning + Send>>,
    plan_scheduled: bool,
    /// Ranges and read-only txns planned over several turns so far.
    ranges_planned_in_parts: u64,
}

impl StoreActor {
    /// Wraps an open store.
    #[must_use]
    pub fn new(
        store: KvStore,
        config: Arc<ActorsConfig>,
        clock: Arc<RevisionClock>,
        counters: Arc<Counters>,
        peers: StorePeers,
    ) -> Self {
        Self {
            store: Some(store),
            failure: None,
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
            peers,
            matched: Vec::new(),
            turn_marks: fanout::TurnMarks::new(config.watch().batch_limits()),
            range_readers: reads::range_readers(),
            ranges_read_off_thread: 0,
            read_txns: 0,
            planning: VecDeque::new(),
            plan_scheduled: false,
            ranges_planned_in_parts: 0,
            config,
        }
    }

    fn store(&mut self) -> Result<&mut KvStore> {
        let unavailable = self.unavailable();
        self.store.as_mut().ok_or(unavailable)
    }

    /// Why there is no store: between dropping a failed store and reopening it (`recovery.rs`)
    /// `Poisoned`, which clients and a mirror's follower retry; after `Shutdown`, `Stopped`.
    fn unavailable(&self) -> Error {
        if self.failure.is_some() {
            Error::Poisoned
        } else {
            Error::Stopped
        }
    }

    /// Publishes the store's current and compact revisions to every reader of the clock.
    fn publish(&self) {
        if let Some(store) = &self.store {
            self.clock.publish(store.current_rev(), store.compact_rev());
        }
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The mailbox's capacity (`store_mailbox`) is set where it is made, in `system::start`.
        self.publish();
        if let Some(period) = self.config.lease_tick() {
            ctx.run_interval(period, |_, ctx| ctx.notify(LeaseTick(None)));
        }
        // Storage failures outside a group commit (compaction markers, lease records).
        ctx.run_interval(recovery::RECOVERY_RETRY, |act, ctx| act.check_storage(ctx));
    }
}

impl Handler<Compact> for StoreActor {
    type Result = ResponseFuture<Result<i64>>;

    fn handle(&mut self, msg: Compact, _: &mut Self::Context) -> Self::Result {
        // A range's walk of the key index must not span a compaction above its revision.
        self.finish_planning();
        // Publish the compact revision before the physical compaction can delete a row: the
        // syncer reads it after taking its snapshot, so a snapshot that misses compacted rows
        // always comes with a compact revision that sends the watchers needing them a notice.
        if let Some(store) = &self.store {
            if store.would_compact(msg.revision) {
                self.clock.publish_compact(msg.revision);
            }
        }
        let result = self.store().and_then(|s| s.compact(msg.revision).map(|t| (t, s.current_rev())));
        self.publish();
        // Watchers behind the new compact revision get their notice on the next pass.
        self.peers.add_unsynced.do_send(AddUnsynced::new(Vec::new()));
        Box::pin(async move {
            let (ticket, rev) = result?;
            if msg.physical {
                actix_rt::task::spawn_blocking(move || ticket.wait()).await.map_err(|_| Error::Stopped)??;
            }
            Ok(rev)
        })
    }
}

impl Handler<RegisterStream> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: RegisterStream, _: &mut Self::Context) {
        // The stream registers with the syncer and the victim actor itself
        // (`StreamActor::started`).
        if self.store.is_none() && self.failure.is_none() {
            // Shut down: the stream ends at once. (Between a failed store's drop and its
            // reopening there is no store either; a stream opened then registers, as a watch
            // created then does, and resumes with the store.)
            msg.close.do_send(CloseStream);
            return;
        }
        self.closers.insert(msg.stream, msg.close);
        self.streams.insert(msg.stream, msg.inbox);
    }
}

impl Handler<UnregisterStream> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: UnregisterStream, _: &mut Self::Context) {
        let UnregisterStream { stream, watchers } = msg;
        let watchers = self.remove_synced(watchers);
        self.streams.remove(&stream);
        self.closers.remove(&stream);
        self.turn_marks.forget_stream(stream);
        forward(&self.peers.unregister, UnregisterStream { stream, watchers });
    }
}

impl Handler<Watch> for StoreActor {
    type Result = MessageResult<Watch>;

    fn handle(&mut self, msg: Watch, _: &mut Self::Context) -> Self::Result {
        let mut w = msg.0;
        let current = self.clock.current();
        // etcd watchStream.Watch (docs/etcd-semantics.md §6.2 step 4): start 0 or in the future
        // is synced, from history (including start == current) unsynced.
        if !starts_in_history(w.start_rev, current) {
            w.min_rev = (current + 1).max(w.start_rev);
            if !w.is_cancelled() {
                let _ = self.synced.insert(w);
            }
        } else {
            w.min_rev = w.start_rev;
            self.peers.add_unsynced.do_send(AddUnsynced::new(vec![w]));
        }
        // docs/etcd-semantics.md §10 quirk 1, the better behaviour: exactly `min_rev - 1` for start 0.
        MessageResult(current)
    }
}

impl Handler<CancelWatchers> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: CancelWatchers, _: &mut Self::Context) {
        let elsewhere = self.remove_synced(msg.0);
        if !elsewhere.is_empty() {
            forward(&self.peers.cancel, CancelWatchers(elsewhere));
        }
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
            // A full mailbox drops the notification, as etcd does (docs/etcd-semantics.md §10
            // quirk 5).
            let _ = recipient.try_deliver(Deliver::live(vec![delivery]));
        }
    }
}

impl Handler<Shutdown> for StoreActor {
    type Result = Result<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.finish_planning();
        self.flush();
        let result = match self.store.as_mut() {
            Some(store) => store.sync(),
            None => Ok(()),
        };
        // Dropping the store stops the compactor between batches and closes the database. A
        // recovery in progress ends here: its next attempt finds no failure and leaves the
        // store closed.
        self.store = None;
        self.failure = None;
        // Every stream ends, each response sent before it first: a gRPC client gets
        // `Unavailable` (`server stopped`) and resumes elsewhere, a gateway client the end of
        // its response.
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

impl Handler<PlanHashKv> for StoreActor {
    type Result = Result<watchkv::hash::HashKvPlan>;

    fn handle(&mut self, msg: PlanHashKv, _: &mut Self::Context) -> Self::Result {
        self.store()?.hash_kv_plan(msg.0)
    }
}

impl Handler<SnapshotWholeStore> for StoreActor {
    type Result = Result<(watchkv::backend::WholeSnapshot, i64)>;

    fn handle(&mut self, _: SnapshotWholeStore, _: &mut Self::Context) -> Self::Result {
        Ok(self.store()?.whole_snapshot())
    }
}

impl Handler<Alarm> for StoreActor {
    type Result = Result<Vec<AlarmMember>>;

    fn handle(&mut self, msg: Alarm, _: &mut Self::Context) -> Self::Result {
        let failure_alarm = self.failure_alarm();
        let store = self.store()?;
        Ok(match msg {
            Alarm::Get(kind) => {
                let mut alarms = store.alarms(kind);
                alarms.extend(failure_alarm.filter(|a| kind.is_none_or(|k| k == a.alarm) && !alarms.contains(a)));
                alarms
            }
            Alarm::Activate(alarm) => {
                store.activate_alarm(alarm)?;
                vec![alarm]
            }
            // etcd answers a deactivate of an alarm that is not raised with no alarms.
            Alarm::Deactivate(alarm) => {
                if store.deactivate_alarm(alarm)? {
                    vec![alarm]
                } else {
                    Vec::new()
                }
            }
        })
    }
}

impl Handler<AuthChange> for StoreActor {
    type Result = Result<()>;

    fn handle(&mut self, msg: AuthChange, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        store.apply_auth(msg.0)?;
        let state = store.auth().clone();
        self.peers.auth.publish(state);
        Ok(())
    }
}

impl StoreActor {
    /// Removes the cancelled watchers `keys` held in the synced group and returns the others,
    /// for the syncer and the victim actor. A watcher found here is nowhere else
    /// (docs/design.md, invariant 1), so cancelling synced watchers costs those two nothing and
    /// queues nothing in the mailbox of a syncer starved at the idle class.
    fn remove_synced(&mut self, keys: Vec<WatcherKey>) -> Vec<WatcherKey> {
        keys.into_iter().filter(|key| self.synced.remove(key).is_none()).collect()
    }

    /// The `NOSPACE` alarm a full disk raises while the store recovers from it (in memory: the
    /// disk cannot take it, and recovery clears it).
    fn failure_alarm(&self) -> Option<AlarmMember> {
        let full = self.failure.is_some_and(|f| f.no_space)
            || self.store.as_ref().is_some_and(KvStore::is_poisoned_by_no_space);
        full.then(|| AlarmMember {
            member_id: self.config.store().member_id(),
            alarm: watchkv::alarm::AlarmType::NoSpace,
        })
    }
}

impl Handler<CheckHealth> for StoreActor {
    type Result = MessageResult<CheckHealth>;

    fn handle(&mut self, _: CheckHealth, _: &mut Self::Context) -> Self::Result {
        let mut alarms = self.store.as_ref().map(|s| s.alarms(None)).unwrap_or_default();
        alarms.extend(self.failure_alarm());
        MessageResult(match (&self.store, &self.failure) {
            (_, Some(_)) => Health { alarms, poisoned: true, stopped: false },
            (Some(store), None) => Health { alarms, poisoned: store.is_poisoned(), stopped: false },
            (None, None) => Health { alarms, poisoned: false, stopped: true },
        })
    }
}

impl Handler<Defragment> for StoreActor {
    type Result = Result<watchkv::backend::Backend>;

    fn handle(&mut self, _: Defragment, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        // After a storage failure the flush a defragment starts fails too; the store reopens
        // (and can be defragmented) once the disk has room again.
        if store.is_poisoned() {
            return Err(Error::Poisoned);
        }
        Ok(store.backend_handle())
    }
}

impl Handler<TakeSnapshot> for StoreActor {
    type Result = Result<watchkv::StoreSnapshot>;

    /// A counter read: every group commit is persisted within the turn that applies it, so
    /// between messages the disk holds exactly what writers were told, and nothing more.
    fn handle(&mut self, _: TakeSnapshot, _: &mut Self::Context) -> Self::Result {
        self.store()?.snapshot()
    }
}

impl Handler<GetStoreStats> for StoreActor {
    type Result = MessageResult<GetStoreStats>;

    fn handle(&mut self, _: GetStoreStats, _: &mut Self::Context) -> Self::Result {
        let (indexed_keys, live_keys, leases, upstream_cluster_id) = self.store.as_ref().map_or((0, 0, 0, None), |s| {
            let st = s.stats();
            (st.indexed_keys, st.live_keys, st.leases, s.upstream_origin().map(|o| o.cluster_id))
        });
        MessageResult(StoreStats {
            synced: self.synced.len(),
            promoting: self.promoting.len(),
            streams: self.streams.len(),
            current_rev: self.clock.current(),
            compact_rev: self.clock.compact(),
            ring_revisions: self.ring.len(),
            indexed_keys,
            live_keys,
            leases,
            ranges_read_off_thread: self.ranges_read_off_thread,
            read_txns: self.read_txns,
            ranges_planned_in_parts: self.ranges_planned_in_parts,
            upstream_cluster_id,
        })
    }
}
