//! Owns the store's recovery from a storage failure without a restart. A failed persist poisons
//! the store (fjall poisons its database too): writes are refused with `Poisoned`, `/health` is
//! false and a full disk shows as the `NOSPACE` alarm. Every second the store tries to come back:
//! the syncer lets go of its history reader, the store drops its `KvStore` (its compactor and
//! every database handle with it), opens the data directory again (fjall replays its journal)
//! and hands the syncer a new reader. While the cause lasts (the disk is still full) the open
//! or the first persist fails again and the store stays down; once it is gone the store serves
//! again. Watchers stay where they are: the synced ones resume at the revision they had reached,
//! and if the reopened store holds revisions no watcher was told about (written before the
//! failed sync), they go to the syncer, which reads them from the store.

use std::time::{Duration, Instant};

use actix::prelude::*;
use watchkv::KvStore;

use super::StoreActor;
use crate::protocol::{AddUnsynced, ReleaseStorage, UseStorage};

/// How long the store waits between attempts to reopen.
pub const RECOVERY_RETRY: Duration = Duration::from_secs(1);

/// Free space the data directory's file system needs before the store reopens after a full
/// disk: with less, the first writes would fill it again at once.
pub const RECOVERY_MIN_FREE_BYTES: u64 = 4 << 20;

/// A storage failure the store is recovering from.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    /// It was a full disk.
    pub no_space: bool,
    /// When it was noticed.
    pub since: Instant,
    /// Reopen attempts so far.
    pub attempts: u32,
}

impl StoreActor {
    /// Notices a poisoned store and starts recovering from it.
    pub(super) fn check_storage(&mut self, ctx: &mut Context<Self>) {
        if self.failure.is_some() {
            return;
        }
        let Some(store) = &self.store else { return };
        if !store.is_poisoned() {
            return;
        }
        let no_space = store.is_poisoned_by_no_space();
        tracing::error!(
            no_space,
            "storage failure: writes are refused until the store reopens; retrying every {RECOVERY_RETRY:?}"
        );
        self.failure = Some(Failure { no_space, since: Instant::now(), attempts: 0 });
        ctx.run_later(RECOVERY_RETRY, |act, ctx| act.try_recover(ctx));
    }

    /// One attempt: the syncer and the range readers let go of the database first, then the
    /// store reopens it. After a
    /// full disk, not before the file system has [`RECOVERY_MIN_FREE_BYTES`] free.
    fn try_recover(&mut self, ctx: &mut Context<Self>) {
        if self.failure.is_none() {
            // Shut down meanwhile.
            return;
        }
        if self.failure.is_some_and(|f| f.no_space) {
            let free = rustix::fs::statvfs(self.config.store().path())
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                .unwrap_or(0);
            if free < RECOVERY_MIN_FREE_BYTES {
                ctx.run_later(RECOVERY_RETRY, |act, ctx| act.try_recover(ctx));
                return;
            }
        }
        // Ranges walking the key index finish on the failed store (its index is sound), since
        // the reopened one has an index of its own; their snapshots go with them.
        self.finish_planning();
        // Snapshot streams end and drop their views (each holds a database handle).
        self.peers.storage_releases.send_modify(|n| *n += 1);
        let released = self.peers.release_storage.send(ReleaseStorage);
        // Range readers hold snapshots, so handles, too: wait for every one in flight and keep
        // their slots until the store is open again.
        let readers = std::sync::Arc::clone(&self.range_readers);
        let quiet = async move {
            let _ = released.await;
            readers.acquire_many_owned(super::reads::RANGE_READERS).await.ok()
        };
        ctx.wait(quiet.into_actor(self).map(|slots, act, ctx| {
            act.reopen(ctx);
            drop(slots);
        }));
    }

    fn reopen(&mut self, ctx: &mut Context<Self>) {
        let Some(failure) = self.failure.as_mut() else { return };
        failure.attempts += 1;
        let attempts = failure.attempts;
        // Our handles go first: fjall locks its directory while any handle lives.
        self.store = None;
        match KvStore::open(self.config.store().clone()).and_then(|mut store| {
            // A store that cannot write yet is not recovered.
            store.sync().map(|()| store)
        }) {
            Ok(store) => self.recovered(store, attempts),
            Err(e) => {
                tracing::warn!(attempts, error = %e, "the store is still failing; retrying");
                ctx.run_later(RECOVERY_RETRY, |act, ctx| act.try_recover(ctx));
            }
        }
    }

    fn recovered(&mut self, store: KvStore, attempts: u32) {
        let notified = self.clock.current();
        let reopened = store.current_rev();
        let reader = store.reader();
        self.store = Some(store);
        if reopened != notified {
            // The ring ends at the last revision watchers were told of, and the next commit
            // follows the reopened store's: replaying from it would skip what lies between
            // (or repeat what the reopened store lost). Watchers behind go through the syncer,
            // which reads the reopened store.
            self.ring.clear();
        }
        // Published before the syncer gets its reader and the watchers, so that its first
        // read of the reopened store reaches the reopened store's revision.
        self.publish();
        self.peers.use_storage.do_send(UseStorage(reader));
        if reopened > notified {
            // Revisions written before the failed sync survived; no watcher heard of them.
            let watchers = self.synced.drain();
            tracing::warn!(
                notified,
                reopened,
                watchers = watchers.len(),
                "revisions no watcher was told about survived; the syncer replays them"
            );
            self.peers.add_unsynced.do_send(AddUnsynced::new(watchers));
        } else if reopened < notified {
            tracing::error!(notified, reopened, "the reopened store is behind what watchers were told");
        }
        let since = self.failure.take().map(|f| f.since.elapsed());
        tracing::info!(attempts, down_for = ?since, revision = reopened, "the store recovered from its storage failure");
    }
}
