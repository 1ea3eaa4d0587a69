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
        let (mut needing_gap, waiting): (Vec<_>, Vec<_>) =
            self.synced.drain().into_iter().partition(|w| w.min_rev <= msg.revision);
        for w in &mut needing_gap {
            // A watcher waiting for R itself needed R's deletes too, which the import cannot
            // give (it has the live keys only): below the compact revision, it gets the notice
            // rather than R's puts alone.
            w.min_rev = w.min_rev.min(msg.revision - 1);
        }
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
        self.peers.add_unsynced.do_send(AddUnsynced::new(needing_gap));
        Ok(imported)
    }
}

#[cfg(test)]
mod tests {
    use watchkv::{KeyRange, KeyValue, PutRequest};

    use crate::testing::{self, RecordedStream};

    /// Every watcher that needed a revision up to R, R included, gets the compaction notice;
    /// one waiting for a later revision stays and gets it live.
    #[actix_rt::test]
    async fn watchers_that_needed_a_revision_up_to_r_get_the_compaction_notice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let handle = crate::start(testing::config(dir.path(), false)).await.expect("start");
        let s = RecordedStream::open(&handle);
        let before_r = s.watch(KeyRange::single("k"), 0).await; // from revision 2
        let at_r = s.watch(KeyRange::single("k"), 3).await;
        let after_r = s.watch(KeyRange::single("k"), 4).await;
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 3,
            mod_revision: 3,
            version: 1,
            value: b"upstream".to_vec(),
            lease: 0,
        };
        handle.reimport_upstream(3, vec![kv]).await.expect("re-import at 3");
        let notice = |id: i64| {
            move |r: &[watchkv::watch::response::WatchResponse]| {
                r.iter().any(|x| x.watch_id == id && x.compact_revision == 3)
            }
        };
        s.wait_for("the notice of the watcher from 2", notice(before_r)).await;
        s.wait_for("the notice of the watcher from 3", notice(at_r)).await;
        let rev = handle.put(PutRequest::new("k", "local")).await.expect("put").revision;
        assert_eq!(rev, 4);
        s.fence(&handle).await;
        assert!(s.events_of(at_r).is_empty(), "R's puts alone went to a watcher that needed R");
        let live: Vec<i64> = s.events_of(after_r).into_iter().map(|(rev, _, _)| rev).collect();
        assert_eq!(live, vec![4]);
        handle.shutdown().await.expect("shutdown");
    }
}
