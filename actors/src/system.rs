//! Owns start-up and shutdown order: [`start`] opens the store and starts the actors, each on a
//! thread of its own, every one built with the recipients of the messages it sends; the
//! `Handle` it returns (`handle.rs`) stops them again in order.

use std::sync::Arc;

use actix::dev::channel;
use actix::prelude::*;
use watchkv::backend::RevisionReader;
use watchkv::{Error, KvStore, Result};

use crate::api::auth::{Auth, AuthView};
use crate::auto_compactor::AutoCompactorActor;
use crate::config::ActorsConfig;
use crate::handle::Handle;
use crate::integrity_checker::IntegrityChecker;
use crate::protocol::{Counters, RevisionClock};
use crate::sched;
use crate::store::{StoreActor, StorePeers};
use crate::stream_actor::StreamPeers;
use crate::syncer_actor::{HistoryReader, SyncerActor, SyncerPeers};
use crate::thread_name;
use crate::victim_actor::VictimActor;

/// The actor system's pieces a [`Handle`] keeps.
pub(crate) struct Runtime {
    pub(crate) store: Addr<StoreActor>,
    pub(crate) syncer: Addr<SyncerActor>,
    pub(crate) victims: Addr<VictimActor>,
    pub(crate) stream_peers: Arc<StreamPeers>,
    pub(crate) clock: Arc<RevisionClock>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) auth: Arc<Auth>,
    /// Counts the store's releases of its database before a reopen (`StorePeers`).
    pub(crate) storage_releases: Arc<tokio::sync::watch::Sender<u64>>,
    /// Turns true when [`Handle::shutdown`] starts (`Handle::shutting_down`).
    pub(crate) shutting_down: tokio::sync::watch::Sender<bool>,
}

/// Maps a failed join or send to `Stopped`: the runtime is gone.
pub(crate) fn stopped<E>(_: E) -> Error {
    Error::Stopped
}

/// Opens the store and starts the actors, each on an arbiter of its own: the victim actor, the
/// syncer (at [`ActorsConfig::catch_up_priority`]) and the store (it blocks on disk). Must run
/// inside an actix system.
///
/// # Errors
/// Fails if the store cannot be opened.
pub async fn start(config: ActorsConfig) -> Result<Handle> {
    start_with_history_reader(config, |reader| Box::new(reader)).await
}

/// [`start`], with the syncer reading history through what `reader` makes of the store's own
/// reader (tests make reads fail through it).
///
/// # Errors
/// Fails if the store cannot be opened.
pub(crate) async fn start_with_history_reader(
    config: ActorsConfig,
    reader: impl FnOnce(RevisionReader) -> Box<dyn HistoryReader>,
) -> Result<Handle> {
    let config = Arc::new(config);
    let store_config = config.store().clone();
    let kv_store = actix_rt::task::spawn_blocking(move || KvStore::open(store_config)).await.map_err(stopped)??;
    crate::idle_poll::set_window(config.idle_poll());
    let clock = Arc::new(RevisionClock::new(kv_store.current_rev(), kv_store.compact_rev()));
    let counters = Arc::new(Counters::default());
    let reader = reader(kv_store.reader());
    let auth_view = Arc::new(AuthView::new(kv_store.auth().clone()));
    let auth = Arc::new(Auth::new(Arc::clone(&auth_view), config.auth_token_ttl(), config.bcrypt_cost()));

    // The syncer's scans at catch-up priority; the victim actor on a thread of its own, so
    // that retries to slow clients (and the slow-consumer policy) never wait for a scan.
    let syncer_arbiter = Arbiter::new();
    let priority = config.catch_up_priority();
    syncer_arbiter.spawn_fn(move || {
        sched::set_catch_up_priority(priority);
        thread_name::name_current_thread(thread_name::SYNCER);
    });
    let victim_arbiter = Arbiter::new();
    victim_arbiter.spawn_fn(|| thread_name::name_current_thread(thread_name::VICTIMS));
    let store_arbiter = Arbiter::new();
    store_arbiter.spawn_fn(|| thread_name::name_current_thread(thread_name::STORE));
    if let Some(slice) = config.store_time_slice() {
        store_arbiter.spawn_fn(move || sched::set_time_slice(slice));
    }
    // The store's mailbox exists before the store does, so that its peers get its address in
    // their constructors; messages sent to it wait there until it starts.
    let (store_tx, store_rx) = channel::channel::<StoreActor>(config.store_mailbox());
    let store = Addr::new(store_tx);
    let victims = {
        let (config, clock, counters) = (Arc::clone(&config), Arc::clone(&clock), Arc::clone(&counters));
        let promote = store.clone().recipient();
        VictimActor::start_in_arbiter(&victim_arbiter.handle(), move |_| {
            VictimActor::new(promote, config, clock, counters)
        })
    };
    let syncer = {
        let (config, clock, counters) = (Arc::clone(&config), Arc::clone(&clock), Arc::clone(&counters));
        let peers = SyncerPeers { promote: store.clone().recipient(), park_victims: victims.clone().recipient() };
        SyncerActor::start_in_arbiter(&syncer_arbiter.handle(), move |_| {
            SyncerActor::new(reader, peers, config, clock, counters)
        })
    };
    let storage_releases = Arc::new(tokio::sync::watch::Sender::new(0));
    {
        let peers = StorePeers {
            add_unsynced: syncer.clone().recipient(),
            park_victims: victims.clone().recipient(),
            cancel: [syncer.clone().recipient(), victims.clone().recipient()],
            unregister: [syncer.clone().recipient(), victims.clone().recipient()],
            auth: auth_view,
            release_storage: syncer.clone().recipient(),
            use_storage: syncer.clone().recipient(),
            storage_releases: Arc::clone(&storage_releases),
        };
        let actor = StoreActor::new(kv_store, Arc::clone(&config), Arc::clone(&clock), Arc::clone(&counters), peers);
        store_arbiter.spawn_fn(move || {
            Context::with_receiver(store_rx).run(actor);
        });
    }
    if let Some(policy) = config.auto_compaction() {
        let (compact, clock) = (store.clone().recipient(), Arc::clone(&clock));
        let revision_interval = config.revision_compaction_interval();
        // Beside the victim actor: it wakes a few times per period and only sends a message.
        AutoCompactorActor::start_in_arbiter(&victim_arbiter.handle(), move |_| {
            AutoCompactorActor::new(policy, compact, clock).with_revision_interval(revision_interval)
        });
    }
    if let Some(interval) = config.integrity_check_interval() {
        let (store, clock, member) = (store.clone(), Arc::clone(&clock), config.store().member_id());
        IntegrityChecker::start_in_arbiter(&victim_arbiter.handle(), move |_| {
            IntegrityChecker::new(store, clock, interval, member)
        });
    }
    let stream_peers = Arc::new(StreamPeers {
        register: [victims.clone().recipient(), syncer.clone().recipient(), store.clone().recipient()],
        add_unsynced: syncer.clone().recipient(),
        watch: store.clone().recipient(),
        cancel: store.clone().recipient(),
        progress: store.clone().recipient(),
        unregister: store.clone().recipient(),
        retry_victims: victims.clone().recipient(),
        create_slots: Arc::new(tokio::sync::Semaphore::new(crate::stream_actor::CREATES_IN_FLIGHT)),
    });
    Ok(Handle::new(
        config,
        Runtime {
            store,
            syncer,
            victims,
            stream_peers,
            clock,
            counters,
            auth,
            storage_releases,
            shutting_down: tokio::sync::watch::Sender::new(false),
        },
        vec![syncer_arbiter, victim_arbiter, store_arbiter],
    ))
}
