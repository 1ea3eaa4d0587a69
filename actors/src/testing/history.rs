//! Owns [`History`]: the store's history as a checker needs it, every committed revision with
//! its events and the state of each key after each revision, replayed from the events and
//! checked to be a possible history on the way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use watchkv::watch::response::WatchResponse;
use watchkv::{Event, EventKind, KeyValue};

/// The store's history: committed revisions with their events, and each key's states.
///
/// Build it from the events a never-slow watcher on all keys received
/// ([`History::from_responses`]) or from a hand-made list ([`History::from_events`]). It must
/// start at the store's creation: the state before its first event is "no keys".
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every event, in commit order.
    events: Vec<Arc<Event>>,
    /// Revision -> `events[start..end]`.
    revisions: BTreeMap<i64, (usize, usize)>,
    /// Key -> (revision, state after it), ascending; `None` = deleted.
    versions: HashMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
}

impl History {
    /// Builds a history from events in commit order, starting at the store's creation.
    ///
    /// # Errors
    /// The events are not a possible history: a revision goes backwards, a revision's events
    /// are not adjacent, a (revision, key) repeats, a PUT's create revision or version does not
    /// follow from the key's previous state, a DELETE removes an absent key or carries fields.
    pub fn from_events<E: Into<Arc<Event>>>(events: impl IntoIterator<Item = E>) -> Result<Self, String> {
        let mut h = Self::default();
        let mut seen: HashSet<(i64, Vec<u8>)> = HashSet::new();
        for (i, e) in events.into_iter().map(Into::into).enumerate() {
            let rev = e.kv.mod_revision;
            let last = h.events.last().map_or(0, |l| l.kv.mod_revision);
            if rev <= 0 {
                return Err(format!("history: event {i} has revision {rev}"));
            }
            if rev < last {
                return Err(format!("history: event {i} at revision {rev} follows revision {last}"));
            }
            if !seen.insert((rev, e.kv.key.clone())) {
                return Err(format!("history: key {} twice at revision {rev}", show(&e.kv.key)));
            }
            let prev = h.state_before(&e.kv.key, rev).cloned();
            check_transition(&e, prev.as_ref()).map_err(|m| format!("history: event {i}: {m}"))?;
            let state = match e.kind {
                EventKind::Put => Some(e.kv.clone()),
                EventKind::Delete => None,
            };
            h.versions.entry(e.kv.key.clone()).or_default().push((rev, state));
            let n = h.events.len();
            h.revisions.entry(rev).and_modify(|r| r.1 = n + 1).or_insert((n, n + 1));
            h.events.push(e);
        }
        Ok(h)
    }

    /// Builds a history from the responses of one watcher on all keys that started at the
    /// store's creation (every event of every response, in order).
    ///
    /// # Errors
    /// As [`Self::from_events`].
    pub fn from_responses(responses: &[WatchResponse]) -> Result<Self, String> {
        Self::from_events(responses.iter().flat_map(|r| r.events.iter().cloned()))
    }

    /// Returns the last revision with events (0 if none).
    #[must_use]
    pub fn last_revision(&self) -> i64 {
        self.revisions.keys().next_back().copied().unwrap_or(0)
    }

    /// Returns the first revision with events (0 if none).
    #[must_use]
    pub fn first_revision(&self) -> i64 {
        self.revisions.keys().next().copied().unwrap_or(0)
    }

    /// Returns every event, in commit order.
    #[must_use]
    pub fn events(&self) -> &[Arc<Event>] {
        &self.events
    }

    /// Returns the events of one revision (empty if it has none).
    #[must_use]
    pub fn events_at(&self, rev: i64) -> &[Arc<Event>] {
        self.revisions.get(&rev).map_or(&[], |&(s, e)| &self.events[s..e])
    }

    /// Returns the revisions that have events, ascending.
    pub fn revisions(&self) -> impl Iterator<Item = i64> + '_ {
        self.revisions.keys().copied()
    }

    /// Returns the key's state after revision `rev` (`None`: absent).
    #[must_use]
    pub fn state_at(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        let versions = self.versions.get(key)?;
        let i = versions.partition_point(|(r, _)| *r <= rev);
        i.checked_sub(1).and_then(|i| versions[i].1.as_ref())
    }

    /// Returns the key's state just before revision `rev`.
    #[must_use]
    pub fn state_before(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        self.state_at(key, rev - 1)
    }

    /// Returns every live key's state after revision `rev`.
    #[must_use]
    pub fn snapshot_at(&self, rev: i64) -> BTreeMap<Vec<u8>, KeyValue> {
        self.versions.keys().filter_map(|k| self.state_at(k, rev).map(|kv| (k.clone(), kv.clone()))).collect()
    }

    /// Checks that every revision in `[from, to]` has events (a complete history has no holes:
    /// every committed revision changes at least one key).
    ///
    /// # Errors
    /// Names the first revision without events.
    pub fn check_contiguous(&self, from: i64, to: i64) -> Result<(), String> {
        let mut want = from;
        for rev in self.revisions.range(from..=to).map(|(r, _)| *r) {
            if rev != want {
                return Err(format!("history: no events at revision {want} (next is {rev})"));
            }
            want = rev + 1;
        }
        if want <= to {
            return Err(format!("history: no events from revision {want} to {to}"));
        }
        Ok(())
    }

    /// Returns the history's event at (revision, key).
    pub(super) fn find(&self, rev: i64, key: &[u8]) -> Option<&Arc<Event>> {
        self.events_at(rev).iter().find(|e| e.kv.key == key)
    }
}

/// Checks one event against the key's previous state (IsCreate, version, DELETE shape).
pub(super) fn check_transition(e: &Event, prev: Option<&KeyValue>) -> Result<(), String> {
    let rev = e.kv.mod_revision;
    let key = show(&e.kv.key);
    match (e.kind, prev) {
        (EventKind::Put, None) => {
            if e.kv.create_revision != rev || e.kv.version != 1 {
                return Err(format!(
                    "PUT {key}@{rev} of an absent key is not a create (create_revision {}, version {})",
                    e.kv.create_revision, e.kv.version
                ));
            }
        }
        (EventKind::Put, Some(p)) => {
            if e.kv.create_revision == rev {
                return Err(format!("PUT {key}@{rev} claims to create a key that exists since {}", p.create_revision));
            }
            if e.kv.create_revision != p.create_revision || e.kv.version != p.version + 1 {
                return Err(format!(
                    "PUT {key}@{rev}: create_revision {} version {} do not follow the previous state \
                     (create_revision {} version {})",
                    e.kv.create_revision, e.kv.version, p.create_revision, p.version
                ));
            }
        }
        (EventKind::Delete, None) => return Err(format!("DELETE {key}@{rev} of an absent key")),
        (EventKind::Delete, Some(_)) => {
            let kv = &e.kv;
            if kv.create_revision != 0 || kv.version != 0 || !kv.value.is_empty() || kv.lease != 0 {
                return Err(format!("DELETE {key}@{rev} carries more than key and mod_revision: {kv:?}"));
            }
        }
    }
    Ok(())
}

/// One response on one line.
#[must_use]
pub fn show_response(r: &WatchResponse) -> String {
    let mut s = format!("id {} rev {}", r.watch_id, r.revision);
    if r.created {
        s.push_str(" created");
    }
    if r.canceled {
        s.push_str(" canceled");
    }
    if r.compact_revision != 0 {
        let _ = write!(s, " compact_revision {}", r.compact_revision);
    }
    if !r.cancel_reason.is_empty() {
        let _ = write!(s, " reason {:?}", r.cancel_reason);
    }
    if r.fragment {
        s.push_str(" fragment");
    }
    if r.is_progress_notify() {
        s.push_str(" progress");
    }
    if !r.events.is_empty() {
        let evs: Vec<String> = r.events.iter().map(|e| show_event(e)).collect();
        let _ = write!(s, " [{}]", evs.join(", "));
    }
    s
}

pub(super) fn show_event(e: &Event) -> String {
    let kind = match e.kind {
        EventKind::Put => "PUT",
        EventKind::Delete => "DEL",
    };
    format!("{kind} {}@{}", show(&e.kv.key), e.kv.mod_revision)
}

pub(super) fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}
