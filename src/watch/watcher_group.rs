//! Owns `WatcherGroup`: a set of watchers indexed by what they watch (etcd `watcherGroup` in
//! `watcher_group.go`, docs/etcd-semantics.md §4 and §6.1). Single-key watchers sit in a hash table
//! keyed by their key; interval and "from key" watchers in a [`RangeIndex`]. The watchers of a key
//! are the table hit plus every stabbed interval.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;
use smallvec::SmallVec;

use super::id_map::IdMap;
use super::range_index::{swap_remove_at, RangeIndex};
use super::watcher::{Watcher, WatcherKey};
use crate::key_range::KeyRange;

/// Where a watcher sits in its [`WatcherGroup`]: cheaper than a [`WatcherKey`] lookup.
///
/// A slot names its watcher only while that watcher stays in the group: once it is removed, the
/// slot may be reused by a later insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatcherSlot(u32);

impl WatcherSlot {
    /// Returns the slot's index: small and dense (slots are reused), so side tables can be
    /// vectors indexed by it.
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The slots of the single-key watchers of one key. Never empty while in the table.
/// Four inline: as small as two (the heap form's pointer and length take as much room).
type SameKey = SmallVec<[u32; 4]>;

/// One entry of the single-key table: the slots of a key's watchers and the key's hash.
///
/// The hash is kept so that growing the table never rehashes a key: without it, a resize
/// hashed every watched key again through the slab (a cache miss and a SipHash each), and the
/// store stalled for a time growing faster than the table while promoted watchers were inserted
/// (measured with `cargo bench -p watchkv-actors --bench watch -- catchup`). It costs 8 bytes
/// per watched key.
#[derive(Debug)]
struct SingleEntry {
    hash: u64,
    slots: SameKey,
}

/// A set of watchers, owned by value and indexed by key range (etcd `watcherGroup`).
///
/// A watcher's `range` is indexed when it is inserted and must not change while it is in the
/// group: through [`get_mut`](Self::get_mut) and [`slot_mut`](Self::slot_mut) only `min_rev` and
/// the other non-range fields may be changed. A watcher on an empty range (`start >= end`) may be
/// inserted but matches no key.
///
/// Memory per watcher is what an idle watch costs the server, so the indexes hold slots, not
/// copies: `by_seq` maps the watcher's process-unique `seq` (not its whole key) to its slot, and
/// `singles` keeps no copy of the watched key (an entry is compared through the key of its first
/// watcher, and keeps only the key's hash).
#[derive(Debug, Default)]
pub struct WatcherGroup {
    /// The watchers, by slot.
    watchers: Slab<Watcher>,
    /// Slot of every watcher, by `key.seq` (unique per watcher in the process).
    by_seq: IdMap<u32>,
    /// Slots of the `KeyRange::Single` watchers, one entry per watched key.
    singles: HashTable<SingleEntry>,
    /// Hashes watched keys for `singles`: keys come from clients, so SipHash with a random key.
    hasher: RandomState,
    /// Slots of the `Interval` and `FromKey` watchers.
    ranges: RangeIndex,
    /// Every occupied slot, densely (so that `take` and `iter` never walk vacant slots), in
    /// the order `take` serves them: a watcher inserted goes behind every one already there,
    /// so a watcher put back after its turn (the syncer's, when a full stream refused its
    /// catch-up) waits behind the others rather than being taken again first. A removal moves
    /// the last watcher into the hole, so a watcher only ever moves forward: each is served
    /// after at most `len` takes.
    live: VecDeque<u32>,
    /// For each occupied slot, its position in `live` plus `popped` (wrapping), so that
    /// positions stay valid when `take` pops from the front.
    live_pos: Vec<u32>,
    /// How many slots `take` has popped from the front of `live` (wrapping).
    popped: u32,
    /// For each occupied slot, its position among its key's slots in `singles` or its
    /// interval's ids in `ranges`, so that removing a watcher of a key or prefix that thousands
    /// watch costs no pass over them (etcd's `watcherSet` is a map for the same reason): closing
    /// the streams of 100k watchers on one key took 1.4 s of the store's thread that way
    /// (`cargo bench --bench watcher_group -- watcher_group_hot`). A removal moves the last
    /// slot of the list into the hole, and its position with it.
    index_pos: Vec<u32>,
}

/// The key a single-key watcher in `slot` watches (empty if there is none: matches no entry,
/// since the group never indexes a single-key watcher before it is in the slab).
fn single_key(watchers: &Slab<Watcher>, slot: u32) -> &[u8] {
    match watchers.get(slot as usize).map(|w| &w.range) {
        Some(KeyRange::Single(k)) => k,
        _ => &[],
    }
}

/// Whether `entry` holds the watchers of `key`, whose hash is `hash`.
fn holds(watchers: &Slab<Watcher>, entry: &SingleEntry, hash: u64, key: &[u8]) -> bool {
    entry.hash == hash && entry.slots.first().is_some_and(|&s| single_key(watchers, s) == key)
}

impl WatcherGroup {
    /// Returns an empty group.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns an empty group with room for `n` watchers before it reallocates (a short-lived
    /// group filled at once, such as the watchers one promotion replays).
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Self {
            watchers: Slab::with_capacity(n),
            by_seq: IdMap::with_capacity_and_hasher(n, Default::default()),
            singles: HashTable::with_capacity(n),
            live: VecDeque::with_capacity(n),
            live_pos: Vec::with_capacity(n),
            index_pos: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    /// Returns the number of watchers in the group.
    #[must_use]
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    /// Returns whether the group holds no watcher.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    fn hash_key(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Looks up a slot by key, checking the whole key (`seq` alone finds it).
    fn find(&self, key: &WatcherKey) -> Option<u32> {
        let slot = *self.by_seq.get(&key.seq)?;
        self.watchers.get(slot as usize).is_some_and(|w| w.key == *key).then_some(slot)
    }

    /// Adds `w` and returns its slot.
    ///
    /// # Errors
    ///
    /// Gives `w` back unchanged when a watcher with the same key (or the same `seq`) is already
    /// in the group (or, theoretically, when the group already holds `u32::MAX - 1` watchers or
    /// intervals).
    pub fn insert(&mut self, w: Watcher) -> Result<WatcherSlot, Watcher> {
        if self.by_seq.contains_key(&w.key.seq) {
            return Err(w);
        }
        let Ok(slot) = u32::try_from(self.watchers.vacant_key()) else {
            return Err(w);
        };
        let Ok(pos) = u32::try_from(self.live.len()) else {
            return Err(w);
        };
        let pos = self.popped.wrapping_add(pos);
        // A fresh slot (its `seq` is not in the group) is on no interval: pushed unchecked.
        let ranged = match &w.range {
            KeyRange::Single(_) => Some(None),
            KeyRange::Interval { start, end } => self.ranges.push(start, Some(end), slot).map(Some),
            KeyRange::FromKey(k) => self.ranges.push(k, None, slot).map(Some),
        };
        let Some(ranged) = ranged else {
            return Err(w);
        };
        let seq = w.key.seq;
        self.watchers.insert(w);
        let index_pos = match ranged {
            Some(at) => at,
            None => {
                // Indexed once the watcher is in the slab: the table reads keys from there.
                let key = single_key(&self.watchers, slot);
                let hash = self.hash_key(key);
                let watchers = &self.watchers;
                let slots = &mut self
                    .singles
                    .entry(hash, |e| holds(watchers, e, hash, key), |e| e.hash)
                    .or_insert_with(|| SingleEntry { hash, slots: SameKey::new() })
                    .into_mut()
                    .slots;
                slots.push(slot);
                // Fits: one key's slots are distinct `u32`s.
                (slots.len() - 1) as u32
            }
        };
        self.by_seq.insert(seq, slot);
        let idx = slot as usize;
        if self.live_pos.len() <= idx {
            self.live_pos.resize(idx + 1, 0);
            self.index_pos.resize(idx + 1, 0);
        }
        self.live_pos[idx] = pos;
        self.index_pos[idx] = index_pos;
        self.live.push_back(slot);
        Ok(WatcherSlot(slot))
    }

    /// Removes and returns the watcher with key `key`.
    pub fn remove(&mut self, key: &WatcherKey) -> Option<Watcher> {
        let slot = self.find(key)?;
        self.remove_slot(WatcherSlot(slot))
    }

    /// Removes and returns the watcher in `slot`.
    pub fn remove_slot(&mut self, slot: WatcherSlot) -> Option<Watcher> {
        let w = self.unlink(slot.0)?;
        if let Some(&pos) = self.live_pos.get(slot.0 as usize) {
            let pos = pos.wrapping_sub(self.popped) as usize;
            if self.live.get(pos) == Some(&slot.0) {
                self.live.swap_remove_back(pos);
                if let Some(&moved) = self.live.get(pos) {
                    if let Some(p) = self.live_pos.get_mut(moved as usize) {
                        *p = self.popped.wrapping_add(pos as u32);
                    }
                }
            }
        }
        Some(w)
    }

    /// Removes the watcher in slot `s` from the slab and the indexes, not from `live`.
    fn unlink(&mut self, s: u32) -> Option<Watcher> {
        let w = self.watchers.get(s as usize)?;
        let at = self.index_pos.get(s as usize).copied().unwrap_or(u32::MAX);
        // Unindexed while still in the slab: the singles table reads keys from there.
        let unindexed = match &w.range {
            KeyRange::Single(k) => {
                let hash = self.hash_key(k);
                let watchers = &self.watchers;
                match self.singles.find_entry(hash, |e| holds(watchers, e, hash, k)) {
                    Ok(mut entry) => {
                        let slots = &mut entry.get_mut().slots;
                        let removed = swap_remove_at(slots, s, at);
                        if slots.is_empty() {
                            entry.remove();
                        }
                        removed
                    }
                    Err(_) => None,
                }
            }
            KeyRange::Interval { start, end } => self.ranges.remove_at(start, Some(end), s, at),
            KeyRange::FromKey(k) => self.ranges.remove_at(k, None, s, at),
        };
        // The slot that filled the hole is there now.
        if let Some((hole, Some(moved))) = unindexed {
            if let Some(p) = self.index_pos.get_mut(moved as usize) {
                *p = hole;
            }
        }
        let w = self.watchers.try_remove(s as usize)?;
        debug_assert!(unindexed.is_some(), "watcher {:?} had its range changed inside a group", w.key);
        self.by_seq.remove(&w.key.seq);
        Some(w)
    }

    /// Returns the slot of the watcher with key `key`.
    #[must_use]
    pub fn slot_of(&self, key: &WatcherKey) -> Option<WatcherSlot> {
        self.find(key).map(WatcherSlot)
    }

    /// Returns the watcher with key `key`.
    #[must_use]
    pub fn get(&self, key: &WatcherKey) -> Option<&Watcher> {
        self.slot(self.slot_of(key)?)
    }

    /// Returns the watcher with key `key` for update. Its `range` (and `key`) must not be
    /// changed: the group indexes them. `min_rev` and the other fields may be.
    pub fn get_mut(&mut self, key: &WatcherKey) -> Option<&mut Watcher> {
        let slot = self.slot_of(key)?;
        self.slot_mut(slot)
    }

    /// Returns the watcher in `slot`.
    #[must_use]
    pub fn slot(&self, slot: WatcherSlot) -> Option<&Watcher> {
        self.watchers.get(slot.0 as usize)
    }

    /// Returns the watcher in `slot` for update. Its `range` (and `key`) must not be changed:
    /// the group indexes them. `min_rev` and the other fields may be.
    pub fn slot_mut(&mut self, slot: WatcherSlot) -> Option<&mut Watcher> {
        self.watchers.get_mut(slot.0 as usize)
    }

    /// Returns whether a watcher with key `key` is in the group.
    #[must_use]
    pub fn contains(&self, key: &WatcherKey) -> bool {
        self.find(key).is_some()
    }

    /// Returns every watcher, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Watcher> + '_ {
        self.live.iter().filter_map(|&s| self.watchers.get(s as usize))
    }

    /// Returns the slot of every watcher, in no particular order.
    #[must_use]
    pub fn slots(&self) -> Vec<WatcherSlot> {
        self.live.iter().map(|&s| WatcherSlot(s)).collect()
    }

    /// Appends to `out` the slot of every watcher whose range contains `key`, each once, in no
    /// particular order. `out` is not cleared first.
    pub fn matching(&self, key: &[u8], out: &mut Vec<WatcherSlot>) {
        if let Some(slots) = self.single_slots(key) {
            out.extend(slots.iter().map(|&s| WatcherSlot(s)));
        }
        self.ranges.stab(key, |s| out.push(WatcherSlot(s)));
    }

    /// The slots of the single-key watchers of `key`.
    fn single_slots(&self, key: &[u8]) -> Option<&SameKey> {
        if self.singles.is_empty() {
            return None;
        }
        let hash = self.hash_key(key);
        self.singles.find(hash, |e| holds(&self.watchers, e, hash, key)).map(|e| &e.slots)
    }

    /// Returns whether any watcher's range contains `key` (a cheap filter for catch-up scans).
    #[must_use]
    pub fn any_matches(&self, key: &[u8]) -> bool {
        self.single_slots(key).is_some() || self.ranges.stabs_any(key)
    }

    /// Removes and returns up to `max` watchers (all of them when there are fewer): those
    /// that have waited longest, about in the order they were inserted (a removal from the
    /// middle moves the newest watcher into its place). Every watcher is taken within `len`
    /// takes of one, however often others are put back (etcd's `watcherGroup.choose` gets the
    /// same from Go's random map order). Costs `O(max)`.
    pub fn take(&mut self, max: usize) -> Vec<Watcher> {
        let n = max.min(self.live.len());
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(s) = self.live.pop_front() else { break };
            self.popped = self.popped.wrapping_add(1);
            // `None` is unreachable while `live` is consistent.
            if let Some(w) = self.unlink(s) {
                out.push(w);
            }
        }
        out
    }

    /// Removes and returns every watcher.
    pub fn drain(&mut self) -> Vec<Watcher> {
        let out = self.watchers.drain().collect();
        self.by_seq.clear();
        self.singles.clear();
        self.ranges.clear();
        self.live.clear();
        self.live_pos.clear();
        self.index_pos.clear();
        self.popped = 0;
        out
    }

    /// Asserts that every watcher's `index_pos` names where it sits in its key's or interval's
    /// list (a stale one would only cost a search, so nothing else would show it).
    #[cfg(test)]
    fn assert_index_positions(&self) {
        for (s, w) in &self.watchers {
            let (s, at) = (s as u32, self.index_pos[s]);
            let there = match &w.range {
                KeyRange::Single(k) => self.single_slots(k).and_then(|slots| slots.get(at as usize).copied()),
                KeyRange::Interval { start, end } => self.ranges.id_at(start, Some(end), at),
                KeyRange::FromKey(k) => self.ranges.id_at(k, None, at),
            };
            assert_eq!(there, Some(s), "watcher {:?} is not at its index position {at}", w.key);
        }
    }

    /// Returns the smallest `min_rev` over the group's watchers, or `None` when it is empty.
    #[must_use]
    pub fn min_rev(&self) -> Option<i64> {
        self.iter().map(|w| w.min_rev).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Event, EventKind, KeyValue};
    use crate::watch::watcher::Filters;
    use std::collections::BTreeMap;

    fn watcher(stream: u64, id: i64, range: KeyRange) -> Watcher {
        Watcher {
            key: WatcherKey { stream, id, seq: stream * 1_000_000 + id as u64 },
            range,
            start_rev: 0,
            min_rev: 0,
            filters: Filters::default(),
            prev_kv: false,
            cancel: crate::watch::watcher::CancelFlag::new(),
        }
    }

    fn matched_keys(g: &WatcherGroup, key: &[u8]) -> Vec<WatcherKey> {
        let mut out = Vec::new();
        g.matching(key, &mut out);
        let mut keys: Vec<WatcherKey> = out.iter().filter_map(|&s| g.slot(s)).map(|w| w.key).collect();
        keys.sort_unstable();
        keys
    }

    // A14: etcd TestNewMapwatcherToEventMap (watcher_group_test.go / watchable_store_test.go).
    #[test]
    fn a14_new_map_watcher_to_event_map() {
        let keys: [&[u8]; 3] = [b"foo0", b"foo1", b"foo2"];
        let ws: Vec<Watcher> =
            keys.iter().enumerate().map(|(i, k)| watcher(1, i as i64, KeyRange::single(*k))).collect();
        let evs: Vec<Event> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Event::new(
                    EventKind::Put,
                    KeyValue { key: k.to_vec(), value: format!("bar{i}").into_bytes(), ..KeyValue::default() },
                    None,
                )
            })
            .collect();
        // (watchers in sync, events, expected watcher -> events)
        type Case = (Vec<usize>, std::ops::Range<usize>, Vec<(usize, Vec<usize>)>);
        let cases: Vec<Case> = vec![
            // No watcher in sync: nothing.
            (vec![], 0..3, vec![]),
            // One watcher, one event on another key: nothing.
            (vec![2], 0..1, vec![]),
            // One watcher, one event on its key.
            (vec![1], 1..2, vec![(1, vec![1])]),
            // Two watchers on different keys, one event matching only one of them.
            (vec![0, 2], 2..3, vec![(2, vec![2])]),
            // Two watchers, two events, each matching one watcher.
            (vec![0, 1], 0..2, vec![(0, vec![0]), (1, vec![1])]),
        ];
        for (i, (sync, ev_range, want)) in cases.into_iter().enumerate() {
            let mut g = WatcherGroup::new();
            for &w in &sync {
                assert!(g.insert(ws[w].clone()).is_ok());
            }
            let mut got: BTreeMap<WatcherKey, Vec<&Event>> = BTreeMap::new();
            let mut out = Vec::new();
            for ev in &evs[ev_range] {
                out.clear();
                g.matching(&ev.kv.key, &mut out);
                for &s in &out {
                    if let Some(w) = g.slot(s) {
                        got.entry(w.key).or_default().push(ev);
                    }
                }
            }
            let want: BTreeMap<WatcherKey, Vec<&Event>> =
                want.into_iter().map(|(w, es)| (ws[w].key, es.iter().map(|&e| &evs[e]).collect())).collect();
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn insert_remove_lookup() {
        let mut g = WatcherGroup::new();
        let a = watcher(1, 0, KeyRange::single("a"));
        let b = watcher(1, 1, KeyRange::interval("a", "c"));
        let c = watcher(2, 0, KeyRange::FromKey(b"b".to_vec()));
        let e = watcher(2, 1, KeyRange::interval("c", "a"));
        let sa = g.insert(a.clone()).ok();
        assert!(sa.is_some());
        assert!(g.insert(b.clone()).is_ok());
        assert!(g.insert(c.clone()).is_ok());
        assert!(g.insert(e.clone()).is_ok());
        assert_eq!(g.insert(a.clone()), Err(a.clone()), "duplicate key");
        assert_eq!(g.len(), 4);
        assert_eq!(matched_keys(&g, b"a"), vec![a.key, b.key]);
        assert_eq!(matched_keys(&g, b"b"), vec![b.key, c.key]);
        assert_eq!(matched_keys(&g, b"c"), vec![c.key]);
        assert_eq!(matched_keys(&g, b"0"), vec![]);
        assert!(g.any_matches(b"a") && g.any_matches(b"zz") && !g.any_matches(b"0"));
        assert_eq!(g.get(&b.key), Some(&b));
        assert_eq!(sa.and_then(|s| g.slot(s)), Some(&a));
        if let Some(w) = g.get_mut(&c.key) {
            w.min_rev = 7;
        }
        assert_eq!(g.min_rev(), Some(0));
        assert_eq!(g.remove(&a.key), Some(a.clone()));
        assert_eq!(g.remove(&a.key), None);
        assert!(sa.and_then(|s| g.remove_slot(s)).is_none());
        assert!(!g.contains(&a.key));
        assert_eq!(matched_keys(&g, b"a"), vec![b.key]);
        assert_eq!(g.iter().count(), 3);
        assert_eq!(g.slots().len(), 3);
        let taken = g.take(2);
        assert_eq!(taken.len(), 2);
        assert_eq!(g.len(), 1);
        let rest = g.drain();
        assert_eq!(rest.len(), 1);
        assert!(g.is_empty());
        assert_eq!(g.min_rev(), None);
        assert!(!g.any_matches(b"b"));
        // Usable again after a drain.
        assert!(g.insert(a.clone()).is_ok());
        assert_eq!(matched_keys(&g, b"a"), vec![a.key]);
        assert_eq!(g.take(10), vec![a]);
    }

    #[test]
    fn take_serves_the_longest_waiting_first_and_a_watcher_put_back_waits_behind_the_rest() {
        let mut g = WatcherGroup::new();
        let ws: Vec<Watcher> = (0..5).map(|i| watcher(i, 0, KeyRange::Single(vec![b'a' + i as u8]))).collect();
        for w in &ws {
            assert!(g.insert(w.clone()).is_ok());
        }
        let keys = |taken: Vec<Watcher>| taken.into_iter().map(|w| w.key).collect::<Vec<_>>();
        assert_eq!(keys(g.take(2)), vec![ws[0].key, ws[1].key]);
        // Put back: behind the three still waiting, however often it comes back.
        assert!(g.insert(ws[0].clone()).is_ok());
        assert!(g.insert(ws[1].clone()).is_ok());
        assert_eq!(keys(g.take(2)), vec![ws[2].key, ws[3].key]);
        assert!(g.insert(ws[2].clone()).is_ok());
        // A removal from the middle keeps every position right.
        assert_eq!(g.remove(&ws[0].key), Some(ws[0].clone()));
        assert_eq!(keys(g.take(10)), vec![ws[4].key, ws[2].key, ws[1].key]);
        assert!(g.is_empty());
        assert!(g.insert(ws[3].clone()).is_ok());
        assert_eq!(matched_keys(&g, b"d"), vec![ws[3].key]);
        assert_eq!(keys(g.take(1)), vec![ws[3].key]);
    }

    struct Xorshift(u64);
    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn key(&mut self) -> Vec<u8> {
            let len = 1 + self.below(3) as usize;
            (0..len).map(|_| b'a' + self.below(4) as u8).collect()
        }
        fn range(&mut self) -> KeyRange {
            match self.below(4) {
                0 | 1 => KeyRange::Single(self.key()),
                2 => KeyRange::Interval { start: self.key(), end: self.key() },
                _ => KeyRange::FromKey(self.key()),
            }
        }
    }

    #[test]
    fn randomized_against_brute_force() {
        let mut rng = Xorshift(0xdead_beef_cafe_f00d);
        let mut g = WatcherGroup::new();
        let mut model: Vec<Watcher> = Vec::new();
        for step in 0..4000 {
            match rng.below(10) {
                0..=5 => {
                    let w = watcher(rng.below(4), rng.below(30) as i64, rng.range());
                    let dup = model.iter().any(|m| m.key == w.key);
                    assert_eq!(g.insert(w.clone()).is_err(), dup);
                    if !dup {
                        model.push(w);
                    }
                }
                6..=8 if !model.is_empty() => {
                    let i = rng.below(model.len() as u64) as usize;
                    let w = model.swap_remove(i);
                    if rng.below(2) == 0 {
                        assert_eq!(g.remove(&w.key), Some(w));
                    } else {
                        let slot = g.slot_of(&w.key);
                        assert_eq!(slot.and_then(|s| g.remove_slot(s)), Some(w));
                    }
                }
                _ => {
                    let taken = g.take(rng.below(3) as usize);
                    for t in taken {
                        let p = model.iter().position(|m| m.key == t.key);
                        assert_eq!(p.map(|p| model.swap_remove(p)), Some(t));
                    }
                }
            }
            assert_eq!(g.len(), model.len());
            g.assert_index_positions();
            for _ in 0..6 {
                let key = rng.key();
                let mut want: Vec<WatcherKey> =
                    model.iter().filter(|w| w.range.contains(&key)).map(|w| w.key).collect();
                want.sort_unstable();
                let mut out = Vec::new();
                g.matching(&key, &mut out);
                let mut slots = out.clone();
                slots.sort_unstable_by_key(|s| s.0);
                slots.dedup();
                assert_eq!(slots.len(), out.len(), "slot reported twice at step {step}");
                assert_eq!(matched_keys(&g, &key), want, "key {key:?} at step {step}");
                assert_eq!(g.any_matches(&key), !want.is_empty());
            }
        }
        let mut all: Vec<WatcherKey> = g.iter().map(|w| w.key).collect();
        all.sort_unstable();
        let mut want: Vec<WatcherKey> = model.iter().map(|w| w.key).collect();
        want.sort_unstable();
        assert_eq!(all, want);
        assert_eq!(g.min_rev(), model.iter().map(|w| w.min_rev).min());
    }
}
