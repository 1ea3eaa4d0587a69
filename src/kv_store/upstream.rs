//! Owns applying an upstream etcd's revisions to a mirror's store (mirror mode,
//! docs/etcd-semantics.md "Mirror mode"): [`UpstreamRevision`], a write that takes upstream's
//! revision number, create and mod revisions, versions and lease ids as upstream sent them
//! instead of computing its own, checked against the mirror's state before anything changes, and
//! answered with the events it produced exactly as a local write's.

use std::collections::HashSet;

use super::write::{sealed, Write};
use super::{Committed, KvStore};
use crate::codec;
use crate::error::{Error, Result};
use crate::kv::{Event, EventKind, KeyValue};
use crate::revision::Revision;

/// One change of an upstream revision, as an upstream watch event carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamChange {
    /// The key as upstream wrote it (etcd `mvccpb.Event` PUT: the whole key-value).
    Put(KeyValue),
    /// The key upstream deleted (etcd `mvccpb.Event` DELETE).
    Delete(Vec<u8>),
}

impl UpstreamChange {
    /// The key changed.
    #[must_use]
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put(kv) => &kv.key,
            Self::Delete(key) => key,
        }
    }
}

/// Every change one upstream revision made to the keys a mirror holds, in upstream's order
/// (the order of its watch events): applied as one write with upstream's revision number. A
/// [`Write`], so it joins a group commit like a local write, and its events reach the mirror's
/// watchers the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRevision {
    /// The revision the store must be at: the last upstream revision the mirror applied
    /// before this one. A chain, so that once a revision is refused every later one queued
    /// behind it is refused too, and nothing is applied past a gap.
    pub after: i64,
    /// Upstream's revision: above the store's current one, not necessarily the next (upstream
    /// revisions that touched only keys outside a prefix mirror never reach it).
    pub revision: i64,
    /// The changes, each key at most once (etcd: one txn never writes a key twice).
    pub changes: Vec<UpstreamChange>,
}

impl sealed::Sealed for UpstreamRevision {}

impl Write for UpstreamRevision {
    /// The revision applied.
    type Response = i64;

    fn apply_to(self, store: &mut KvStore, _: sealed::Token) -> Result<Committed<i64>> {
        store.apply_upstream_revision(self)
    }
}

impl KvStore {
    /// Applies one upstream revision and makes it durable (mirror mode): each put is stored with
    /// upstream's create revision, mod revision (= `revision`), version and lease id, each
    /// delete as a tombstone, the `n`-th change at sub revision `n`; the store's revision becomes
    /// `revision`. Returns the events, with `prev_kv` filled where the key existed, as a local
    /// write does. The lessor is never consulted: leases live upstream.
    ///
    /// A revision whose `after` is not the current revision is refused, so nothing is ever
    /// applied past a refused one. A revision at or below the current one is refused, not
    /// skipped: the mirror resumes its upstream watch at current + 1, so one can only arrive
    /// through a bug, and a silent skip would hide it.
    ///
    /// # Errors
    /// `Error::Upstream` (nothing changed) for a revision at or below the current one or whose
    /// `after` is not the current one, one with no change, a key twice, or a change that does
    /// not continue the store's state (a put whose create revision or version is not the next of
    /// the key's local life, a delete of a key that is not live); a storage error.
    pub fn apply_upstream(&mut self, revision: UpstreamRevision) -> Result<Committed<i64>> {
        self.write(revision)
    }

    fn apply_upstream_revision(&mut self, up: UpstreamRevision) -> Result<Committed<i64>> {
        self.check_writable()?;
        self.check_upstream(&up)?;
        let mut events = Vec::with_capacity(up.changes.len());
        let mark = self.group.mark();
        for (sub, change) in up.changes.into_iter().enumerate() {
            let rev = Revision::new(up.revision, i64::try_from(sub).unwrap_or(i64::MAX));
            let applied = match change {
                UpstreamChange::Put(kv) => self.upstream_put(rev, kv),
                UpstreamChange::Delete(key) => self.upstream_delete(rev, key),
            };
            match applied {
                Ok(event) => events.push(event),
                Err(e) => {
                    // Checked beforehand, so the index is half updated by a storage failure; the
                    // revision's rows so far must not reach the disk.
                    self.group.roll_back(mark);
                    self.poison(&e);
                    return Err(e);
                }
            }
        }
        self.current_rev = up.revision;
        Ok(Committed { response: up.revision, events })
    }

    /// Checks a whole revision against the store before any change, so a refused revision
    /// leaves no trace.
    fn check_upstream(&self, up: &UpstreamRevision) -> Result<()> {
        let refuse = |why: String| Err(Error::Upstream(format!("upstream revision {}: {why}", up.revision)));
        if up.revision <= self.current_rev {
            return refuse(format!("not after the applied revision {}", self.current_rev));
        }
        if up.after != self.current_rev || up.after >= up.revision {
            return refuse(format!("follows revision {} but the mirror is at {}", up.after, self.current_rev));
        }
        if up.changes.is_empty() {
            return refuse("no change".into());
        }
        let mut seen = HashSet::with_capacity(up.changes.len());
        for change in &up.changes {
            let key = change.key();
            let name = String::from_utf8_lossy(key);
            if key.is_empty() {
                return refuse("empty key".into());
            }
            if !seen.insert(key) {
                return refuse(format!("key {name:?} changed twice"));
            }
            let live = self.index.latest(key);
            match (change, live) {
                (UpstreamChange::Put(kv), _) if kv.mod_revision != up.revision => {
                    return refuse(format!("key {name:?} has mod revision {}", kv.mod_revision));
                }
                (UpstreamChange::Put(kv), Some(v))
                    if kv.create_revision != v.created.main || kv.version != v.version + 1 =>
                {
                    return refuse(format!(
                        "key {name:?} has create revision {} and version {}, the mirror expected {} and {}",
                        kv.create_revision,
                        kv.version,
                        v.created.main,
                        v.version + 1
                    ));
                }
                (UpstreamChange::Put(kv), None) if kv.create_revision != up.revision || kv.version != 1 => {
                    return refuse(format!(
                        "key {name:?} is new to the mirror but has create revision {} and version {}",
                        kv.create_revision, kv.version
                    ));
                }
                (UpstreamChange::Delete(_), None) => {
                    return refuse(format!("key {name:?} is deleted but the mirror does not hold it"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Stores upstream's key-value as it is at `rev` (etcd `storeTxnWrite.put` with upstream's
    /// numbers, which the check found equal to the ones the index computes).
    fn upstream_put(&mut self, rev: Revision, kv: KeyValue) -> Result<Event> {
        let prev_version = self.index.put(&kv.key, rev);
        let prev_kv = match prev_version {
            Some(v) => Some(self.read_kv(v.modified)?),
            None => None,
        };
        self.group.push(rev.to_key(false), codec::encode_row(&kv, prev_version.map(|v| v.modified)));
        Ok(Event::new(EventKind::Put, kv, prev_kv))
    }

    /// Stores a tombstone for `key` at `rev` (etcd `storeTxnWrite.delete`).
    fn upstream_delete(&mut self, rev: Revision, key: Vec<u8>) -> Result<Event> {
        let Some(v) = self.index.latest(&key) else {
            return Err(Error::Internal(format!("upstream delete of {:?}: not live after the check", key)));
        };
        let prev = self.read_kv(v.modified)?;
        let stored = KeyValue { key: key.clone(), ..KeyValue::default() };
        self.group.push(rev.to_key(true), codec::encode_row(&stored, Some(v.modified)));
        self.index.tombstone(&key, rev);
        let tomb = KeyValue { key, mod_revision: rev.main, ..KeyValue::default() };
        Ok(Event::new(EventKind::Delete, tomb, Some(prev)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::kv_store::import::tests::kv;
    use crate::request::{PutRequest, RangeRequest};
    use crate::KeyRange;

    fn put(key: &str, value: &str, create: i64, modified: i64, version: i64, lease: i64) -> UpstreamChange {
        UpstreamChange::Put(kv(key, value, create, modified, version, lease))
    }

    fn delete(key: &str) -> UpstreamChange {
        UpstreamChange::Delete(key.into())
    }

    fn rev(after: i64, revision: i64, changes: Vec<UpstreamChange>) -> UpstreamRevision {
        UpstreamRevision { after, revision, changes }
    }

    fn tomb(key: &str, revision: i64) -> KeyValue {
        KeyValue { key: key.into(), mod_revision: revision, ..KeyValue::default() }
    }

    /// Every live key at `revision` (0 = current).
    fn all_at(store: &KvStore, revision: i64) -> Result<Vec<KeyValue>> {
        let mut req = RangeRequest::new(KeyRange::FromKey(vec![0]));
        req.revision = revision;
        store.range(&req).map(|r| r.kvs)
    }

    /// `(kind, kv, prev_kv)` of each event.
    fn shape(events: &[Event]) -> Vec<(EventKind, KeyValue, Option<KeyValue>)> {
        events.iter().map(|e| (e.kind, e.kv.clone(), e.prev_kv.clone())).collect()
    }

    #[test]
    fn upstream_revisions_apply_with_upstreams_numbers_and_local_events() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path());
        let mut store = KvStore::open(config.clone()).expect("open");

        // Revision 5 (2 to 4 touched keys a prefix mirror does not hold): a new key with an
        // upstream lease id that no local lease knows.
        let first = store.apply_upstream(rev(1, 5, vec![put("a", "a1", 5, 5, 1, 0x77)])).expect("apply 5");
        assert_eq!(first.response, 5);
        assert_eq!(shape(&first.events), vec![(EventKind::Put, kv("a", "a1", 5, 5, 1, 0x77), None)]);
        assert_eq!(store.current_rev(), 5);

        // Revision 9, one upstream txn: an overwrite and a new key, in upstream's order.
        let txn = store.apply_upstream(rev(5, 9, vec![put("b", "b1", 9, 9, 1, 0), put("a", "a2", 5, 9, 2, 0)]));
        let txn = txn.expect("apply 9");
        assert_eq!(
            shape(&txn.events),
            vec![
                (EventKind::Put, kv("b", "b1", 9, 9, 1, 0), None),
                (EventKind::Put, kv("a", "a2", 5, 9, 2, 0), Some(kv("a", "a1", 5, 5, 1, 0x77))),
            ]
        );
        assert_eq!(
            txn.events.iter().map(Event::revision).collect::<Vec<_>>(),
            vec![9, 9],
            "one revision, several subs"
        );

        // Revision 10: deletes are tombstones with the deleted key-value as prev_kv.
        let del = store.apply_upstream(rev(9, 10, vec![delete("a"), delete("b")])).expect("apply 10");
        assert_eq!(
            shape(&del.events),
            vec![
                (EventKind::Delete, tomb("a", 10), Some(kv("a", "a2", 5, 9, 2, 0))),
                (EventKind::Delete, tomb("b", 10), Some(kv("b", "b1", 9, 9, 1, 0))),
            ]
        );

        // Revision 12: the key comes back with a new life.
        store.apply_upstream(rev(10, 12, vec![put("a", "a3", 12, 12, 1, 0)])).expect("apply 12");
        assert_eq!(all_at(&store, 0).expect("range"), vec![kv("a", "a3", 12, 12, 1, 0)]);
        assert_eq!(all_at(&store, 9).expect("range at 9"), vec![kv("a", "a2", 5, 9, 2, 0), kv("b", "b1", 9, 9, 1, 0)]);
        assert_eq!(all_at(&store, 10).expect("range at 10"), Vec::new());
        assert_eq!(all_at(&store, 11).expect("range at 11, a revision the mirror never saw"), Vec::new());
        drop(store);

        let reopened = KvStore::open(config).expect("reopen");
        assert_eq!(reopened.current_rev(), 12);
        assert_eq!(all_at(&reopened, 0).expect("range"), vec![kv("a", "a3", 12, 12, 1, 0)]);
        assert_eq!(all_at(&reopened, 5).expect("range at 5"), vec![kv("a", "a1", 5, 5, 1, 0x77)]);
        assert_eq!(
            all_at(&reopened, 9).expect("range at 9"),
            vec![kv("a", "a2", 5, 9, 2, 0), kv("b", "b1", 9, 9, 1, 0)]
        );
    }

    #[test]
    fn revisions_that_do_not_continue_the_mirror_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = KvStore::open(StoreConfig::new(dir.path())).expect("open");
        store.apply_upstream(rev(1, 4, vec![put("a", "a1", 4, 4, 1, 0)])).expect("apply 4");
        let cases = [
            (rev(4, 4, vec![put("b", "b", 4, 4, 1, 0)]), "not after the applied revision 4"),
            (rev(4, 3, vec![put("b", "b", 3, 3, 1, 0)]), "not after the applied revision 4"),
            (rev(4, 6, Vec::new()), "no change"),
            (rev(3, 6, vec![put("b", "b", 6, 6, 1, 0)]), "follows revision 3 but the mirror is at 4"),
            (rev(6, 7, vec![put("b", "b", 7, 7, 1, 0)]), "follows revision 6 but the mirror is at 4"),
            (rev(4, 6, vec![put("b", "b", 6, 5, 1, 0)]), "mod revision 5"),
            (rev(4, 6, vec![put("a", "a2", 6, 6, 1, 0)]), "expected 4 and 2"),
            (rev(4, 6, vec![put("a", "a2", 4, 6, 3, 0)]), "expected 4 and 2"),
            (rev(4, 6, vec![put("b", "b", 5, 6, 1, 0)]), "new to the mirror"),
            (rev(4, 6, vec![put("b", "b", 6, 6, 1, 0), delete("c")]), "does not hold it"),
            (rev(4, 6, vec![put("b", "b", 6, 6, 1, 0), delete("b")]), "changed twice"),
            (rev(4, 6, vec![put("", "b", 6, 6, 1, 0)]), "empty key"),
        ];
        for (up, why) in cases {
            let err = store.apply_upstream(up).expect_err(why);
            assert!(matches!(err, Error::Upstream(_)) && err.to_string().contains(why), "{why}: {err}");
            assert!(!err.is_client_error());
        }
        assert_eq!(store.current_rev(), 4);
        assert_eq!(all_at(&store, 0).expect("range"), vec![kv("a", "a1", 4, 4, 1, 0)]);
        // Nothing was half applied: the next good revision goes in.
        let next = store.apply_upstream(rev(4, 6, vec![put("a", "a2", 4, 6, 2, 0)])).expect("apply 6");
        assert_eq!(next.events[0].prev_kv, Some(kv("a", "a1", 4, 4, 1, 0)));
    }

    #[test]
    fn an_imported_store_follows_upstream_from_r() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path());
        let mut store = KvStore::open(config.clone()).expect("open");
        let at_r = vec![kv("a", "a3", 2, 9, 3, 0), kv("t/1", "one", 12, 12, 1, 0), kv("t/2", "two", 7, 12, 2, 0)];
        store.import_snapshot(20, at_r).expect("import");
        let applied = store
            .apply_upstream(rev(
                20,
                23,
                vec![put("a", "a4", 2, 23, 4, 0), delete("t/2"), put("n", "new", 23, 23, 1, 9)],
            ))
            .expect("apply 23");
        assert_eq!(
            shape(&applied.events),
            vec![
                (EventKind::Put, kv("a", "a4", 2, 23, 4, 0), Some(kv("a", "a3", 2, 9, 3, 0))),
                (EventKind::Delete, tomb("t/2", 23), Some(kv("t/2", "two", 7, 12, 2, 0))),
                (EventKind::Put, kv("n", "new", 23, 23, 1, 9), None),
            ]
        );
        drop(store);
        let reopened = KvStore::open(config).expect("reopen");
        assert_eq!((reopened.current_rev(), reopened.compact_rev()), (23, 20));
        assert_eq!(
            all_at(&reopened, 0).expect("range"),
            vec![kv("a", "a4", 2, 23, 4, 0), kv("n", "new", 23, 23, 1, 9), kv("t/1", "one", 12, 12, 1, 0)]
        );
        assert_eq!(all_at(&reopened, 20).expect("range at R").len(), 3);
    }

    #[test]
    fn several_upstream_revisions_share_one_group_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path());
        let mut store = KvStore::open(config.clone()).expect("open");
        let mut group = store.group();
        let a = group.apply(rev(1, 3, vec![put("k", "1", 3, 3, 1, 0)]));
        let b = group.apply(rev(3, 7, vec![put("k", "2", 3, 7, 2, 0)]));
        let stale = group.apply(rev(3, 7, vec![put("j", "x", 7, 7, 1, 0)]));
        // A refused revision breaks the chain: the one queued behind it is refused too.
        let bad = group.apply(rev(7, 8, vec![delete("missing")]));
        let behind = group.apply(rev(8, 9, vec![put("k", "3", 3, 9, 3, 0)]));
        let persisted = group.persist();
        assert_eq!(a.settle(&persisted).expect("3").events[0].kv, kv("k", "1", 3, 3, 1, 0));
        let b = b.settle(&persisted).expect("7");
        assert_eq!(b.events[0].prev_kv, Some(kv("k", "1", 3, 3, 1, 0)), "reads the group's own earlier row");
        assert!(matches!(stale.settle(&persisted), Err(Error::Upstream(_))));
        assert!(matches!(bad.settle(&persisted), Err(Error::Upstream(_))));
        let behind = behind.settle(&persisted).expect_err("behind a refused revision");
        assert!(behind.to_string().contains("follows revision 8 but the mirror is at 7"), "{behind}");
        drop(store);
        let reopened = KvStore::open(config).expect("reopen");
        assert_eq!(reopened.current_rev(), 7);
        assert_eq!(all_at(&reopened, 0).expect("range"), vec![kv("k", "2", 3, 7, 2, 0)]);
    }

    #[test]
    fn a_local_write_after_upstream_revisions_takes_the_next_revision() {
        // Not what a mirror does (it refuses local writes), but the store stays consistent.
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = KvStore::open(StoreConfig::new(dir.path())).expect("open");
        store.apply_upstream(rev(1, 40, vec![put("k", "v", 40, 40, 1, 0)])).expect("apply 40");
        let local = store.put(PutRequest::new("k", "w")).expect("put");
        assert_eq!(local.response.revision, 41);
        assert_eq!(local.events[0].kv, kv("k", "w", 40, 41, 2, 0));
    }
}
