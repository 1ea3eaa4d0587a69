//! Owns a mirror's re-bootstrap at the store: upstream compacted history the mirror had not
//! applied yet, so the follower read upstream's whole keyspace again at a new revision R
//! (`crate::mirror`), and the store replaces its state with it ([`ReimportUpstream`]). R becomes
//! the current and compact revision. Every watcher that still needed a revision up to R can no
//! longer get it: synced ones go to the syncer, which answers each with etcd's compaction
//! notice (`compact_revision` R), as it does for a watcher behind a local compaction; unsynced
//! ones get theirs on its next pass. Watchers waiting for a revision above R stay where they are.

use actix::prelude::*;
use watchkv::{Error, ImportedSnapshot, KeyValue, Result};

use super::StoreActor;
use crate::protocol::AddUnsynced;

/// Replaces the store's state with upstream's key-values at `revision` (in key order).
#[derive(Debug, Message)]
#[rtype(result = "Result<ImportedSnapshot>")]
pub struct ReimportUpstream {
    /// Upstream's revision the key-values were read at: above the store's current revision.
    pub revision: i64,
    /// Upstream's live key-values at `revision`, in key order.
    pub kvs: Vec<KeyValue>,
}

impl Handler<ReimportUpstream> for StoreActor {
    type Result = Result<ImportedSnapshot>;

    fn handle(&mut self, msg: ReimportUpstream, _: &mut Self::Context) -> Self::Result {
        // Writes already queued go first, at their own revisions (a mirror has none but the
        // follower's, which waits for its answers before it re-imports).
        self.flush();
        // The key index is about to be rebuilt: ranges walking it finish first.
        self.finish_planning();
        let store = self.store()?;
        if msg.revision <= store.current_rev() {
            return Err(Error::Import(format!(
                "cannot re-import at revision {}: the store is already at revision {}",
                msg.revision,
                store.current_rev()
            )));
        }
        // Published before any row goes, as a compaction is: a catch-up pass reading the
        // store meanwhile answers its watchers with the notice instead of reading a gap.
        self.clock.publish_compact(msg.revision);
        let store = self.store()?;
        let imported = store.import_snapshot_over(msg.revision, msg.kvs);
        // The ring's events are the old history: no promoted watcher may be replayed from it.
        self.ring.clear();
        self.publish();
        let imported = imported?;
        let (needing_gap, waiting): (Vec<_>, Vec<_>) =
            self.synced.drain().into_iter().partition(|w| w.min_rev <= msg.revision);
        for w in waiting {
            // Cannot fail: they were in the group a moment ago.
            let _ = self.synced.insert(w);
        }
        tracing::warn!(
            revision = imported.revision,
            keys = imported.keys,
            watchers_notified = needing_gap.len(),
            "mirror: re-imported upstream's keyspace; watchers that needed the compacted history get a compaction notice"
        );
        self.peers.add_unsynced.do_send(AddUnsynced(needing_gap));
        Ok(imported)
    }
}
