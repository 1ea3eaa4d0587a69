//! Owns `RangeIndex`: a dynamic interval index from half-open key intervals `[start, end)` (with
//! `end` possibly +∞, "from key") to sets of `u32` ids, answering "which ids contain this key?"
//! (etcd `pkg/adt/interval_tree.go` as used by `watcher_group.go`, docs/etcd-semantics.md §4).
//!
//! The index is a treap (a binary search tree keyed by `(start, end)`, heap-ordered by random
//! priorities, so it stays balanced in expectation whatever the insertion order) whose nodes live
//! in an arena addressed by `u32`. Each node also names the node of its subtree with the greatest
//! `end`, so that a stab can skip every subtree that ends at or before the key and every right
//! subtree that starts after it.

use std::cmp::Ordering;
use std::ops::ControlFlow;

use smallvec::SmallVec;

/// "No node".
const NIL: u32 = u32::MAX;

/// Removes `id` from `ids`, looked for at `pos` first and searched for only if not there; the
/// last id moves into the hole. Returns where `id` was and which id took its place (none when
/// it was last), or `None` when `id` is not in `ids`. A watcher group's lists (an interval's
/// ids here, a key's slots in `watcher_group`) remove through it, keeping each id's position.
pub(crate) fn swap_remove_at<A: smallvec::Array<Item = u32>>(
    ids: &mut SmallVec<A>,
    id: u32,
    pos: u32,
) -> Option<(u32, Option<u32>)> {
    let at = if ids.get(pos as usize) == Some(&id) { pos as usize } else { ids.iter().position(|&x| x == id)? };
    ids.swap_remove(at);
    // `at` indexes a list of `u32` ids, which fits.
    Some((at as u32, ids.get(at).copied()))
}

/// One distinct interval and the ids registered on it.
#[derive(Debug)]
struct Node {
    /// Inclusive lower bound.
    start: Box<[u8]>,
    /// Exclusive upper bound; `None` is +∞.
    end: Option<Box<[u8]>>,
    /// The ids on this interval; never empty while the node is in the tree.
    ids: SmallVec<[u32; 2]>,
    /// Left child (smaller `(start, end)`), or `NIL`.
    left: u32,
    /// Right child (greater `(start, end)`), or `NIL`.
    right: u32,
    /// The node of this subtree (itself included) whose `end` is the greatest.
    max: u32,
    /// Treap priority: a parent's priority is `>=` its children's.
    prio: u32,
}

/// A dynamic interval index: half-open byte-string intervals `[start, end)` (`end = None` is
/// +∞) mapped to sets of `u32` ids.
///
/// Identical intervals share one node holding their ids. An interval with `start >= end` may be
/// inserted and removed like any other but contains no key, so no stab ever reports it.
/// Stabbing costs `O(log n)` expected plus the matches' share of the tree.
#[derive(Debug)]
pub struct RangeIndex {
    /// Node arena; vacant nodes are listed in `free`.
    nodes: Vec<Node>,
    /// Vacant arena slots.
    free: Vec<u32>,
    /// Root of the treap, or `NIL`.
    root: u32,
    /// Number of ids over all intervals.
    len: usize,
    /// Xorshift state for node priorities (deterministic).
    rng: u64,
}

impl Default for RangeIndex {
    fn default() -> Self {
        Self::new()
    }
}

/// Orders interval ends: `None` (+∞) is greater than every key.
fn cmp_end(a: Option<&[u8]>, b: Option<&[u8]>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

/// Returns whether an interval ending at `end` still contains keys greater than or equal to
/// `key`, i.e. `key < end`.
fn ends_after(end: Option<&[u8]>, key: &[u8]) -> bool {
    match end {
        None => true,
        Some(end) => key < end,
    }
}

impl RangeIndex {
    /// Returns an empty index.
    #[must_use]
    pub fn new() -> Self {
        Self { nodes: Vec::new(), free: Vec::new(), root: NIL, len: 0, rng: 0x9E37_79B9_7F4A_7C15 }
    }

    /// Returns the number of ids in the index, over all intervals.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns whether the index holds no id.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every interval and id.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.free.clear();
        self.root = NIL;
        self.len = 0;
    }

    /// Adds `id` to the interval `[start, end)` (`end = None`: every key `>= start`).
    ///
    /// Returns `false` and changes nothing when `id` is already registered on exactly that
    /// interval, or when the index already holds `u32::MAX - 1` distinct intervals.
    pub fn insert(&mut self, start: &[u8], end: Option<&[u8]>, id: u32) -> bool {
        if let Some(i) = self.find(start, end) {
            let ids = &mut self.nodes[i as usize].ids;
            if ids.contains(&id) {
                return false;
            }
            ids.push(id);
            self.len += 1;
            return true;
        }
        let Some(n) = self.alloc(start, end, id) else {
            return false;
        };
        self.root = self.insert_node(self.root, n, start, end);
        self.len += 1;
        true
    }

    /// Adds `id` to the interval `[start, end)` without looking for it among the interval's ids
    /// (the caller knows it is not there: a watcher group indexes each slot once), and returns
    /// its position among them, for [`remove_at`](Self::remove_at). [`insert`](Self::insert)'s
    /// check costs a pass over the interval's ids, which made filling one hot prefix with
    /// watchers quadratic. `None`, changing nothing, when the index already holds
    /// `u32::MAX - 1` distinct intervals.
    pub fn push(&mut self, start: &[u8], end: Option<&[u8]>, id: u32) -> Option<u32> {
        if let Some(i) = self.find(start, end) {
            let ids = &mut self.nodes[i as usize].ids;
            debug_assert!(!ids.contains(&id), "id {id} pushed twice on one interval");
            let pos = u32::try_from(ids.len()).ok()?;
            ids.push(id);
            self.len += 1;
            return Some(pos);
        }
        let n = self.alloc(start, end, id)?;
        self.root = self.insert_node(self.root, n, start, end);
        self.len += 1;
        Some(0)
    }

    /// Removes `id` from the interval `[start, end)`; the interval's node goes when its last id
    /// does. Returns whether `id` was registered on exactly that interval.
    pub fn remove(&mut self, start: &[u8], end: Option<&[u8]>, id: u32) -> bool {
        self.remove_at(start, end, id, u32::MAX).is_some()
    }

    /// [`remove`](Self::remove) of an `id` expected at position `pos` among the interval's ids
    /// (as [`push`](Self::push) returned it, or a later removal moved it): checked there first,
    /// so the removal costs no pass over the interval's ids; searched for if not there. The
    /// interval's last id moves into the hole. Returns `None` when `id` is not on exactly that
    /// interval, else where it was and which id took its place (none when it was last).
    pub fn remove_at(&mut self, start: &[u8], end: Option<&[u8]>, id: u32, pos: u32) -> Option<(u32, Option<u32>)> {
        let i = self.find(start, end)?;
        let ids = &mut self.nodes[i as usize].ids;
        let removed = swap_remove_at(ids, id, pos)?;
        self.len -= 1;
        if ids.is_empty() {
            self.root = self.erase(self.root, start, end);
            self.release(i);
        }
        Some(removed)
    }

    /// Calls `f` once for every id whose interval contains `key` (`start <= key < end`), in no
    /// particular order.
    pub fn stab(&self, key: &[u8], mut f: impl FnMut(u32)) {
        let _ = self.visit(key, |ids| {
            ids.iter().for_each(|&id| f(id));
            ControlFlow::<()>::Continue(())
        });
    }

    /// The id at position `pos` among the ids of exactly `[start, end)`, for tests of
    /// [`push`](Self::push) and [`remove_at`](Self::remove_at) positions.
    #[cfg(test)]
    pub(crate) fn id_at(&self, start: &[u8], end: Option<&[u8]>, pos: u32) -> Option<u32> {
        self.find(start, end).and_then(|i| self.node(i).ids.get(pos as usize).copied())
    }

    /// Returns whether any interval contains `key`; stops at the first one found.
    #[must_use]
    pub fn stabs_any(&self, key: &[u8]) -> bool {
        self.visit(key, |_| ControlFlow::Break(())).is_some()
    }

    /// Walks every node whose interval contains `key`, passing its ids to `f` until it breaks.
    fn visit<B>(&self, key: &[u8], mut f: impl FnMut(&[u32]) -> ControlFlow<B>) -> Option<B> {
        // Depth-first with an explicit stack: a treap of a million nodes is ~40 deep in
        // expectation, and the stack holds at most one pending right child per level plus one.
        let mut stack: SmallVec<[u32; 64]> = SmallVec::new();
        if self.root != NIL {
            stack.push(self.root);
        }
        while let Some(t) = stack.pop() {
            let n = self.node(t);
            // Nothing in this subtree ends after `key`.
            if !ends_after(self.node(n.max).end.as_deref(), key) {
                continue;
            }
            if n.start.as_ref() <= key {
                if ends_after(n.end.as_deref(), key) {
                    if let ControlFlow::Break(b) = f(&n.ids) {
                        return Some(b);
                    }
                }
                // The right subtree starts at or after `n.start`: only worth a look when
                // `n.start <= key`.
                if n.right != NIL {
                    stack.push(n.right);
                }
            }
            if n.left != NIL {
                stack.push(n.left);
            }
        }
        None
    }

    fn node(&self, i: u32) -> &Node {
        &self.nodes[i as usize]
    }

    /// Compares the interval `(start, end)` with node `i`'s.
    fn cmp_node(&self, start: &[u8], end: Option<&[u8]>, i: u32) -> Ordering {
        let n = self.node(i);
        start.cmp(&n.start).then_with(|| cmp_end(end, n.end.as_deref()))
    }

    /// Returns the node holding exactly `[start, end)`.
    fn find(&self, start: &[u8], end: Option<&[u8]>) -> Option<u32> {
        let mut t = self.root;
        while t != NIL {
            t = match self.cmp_node(start, end, t) {
                Ordering::Equal => return Some(t),
                Ordering::Less => self.node(t).left,
                Ordering::Greater => self.node(t).right,
            };
        }
        None
    }

    /// Returns the next priority (xorshift64).
    fn next_prio(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        // The high half is the better-mixed one.
        (x >> 32) as u32
    }

    /// Takes a vacant node for `[start, end)` holding `id`, not yet linked into the tree.
    fn alloc(&mut self, start: &[u8], end: Option<&[u8]>, id: u32) -> Option<u32> {
        let prio = self.next_prio();
        let mut ids = SmallVec::new();
        ids.push(id);
        let make =
            |i: u32| Node { start: start.into(), end: end.map(Into::into), ids, left: NIL, right: NIL, max: i, prio };
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = make(i);
            return Some(i);
        }
        let i = u32::try_from(self.nodes.len()).ok().filter(|&i| i != NIL)?;
        self.nodes.push(make(i));
        Some(i)
    }

    /// Returns an unlinked node to the free list, dropping its keys.
    fn release(&mut self, i: u32) {
        let n = &mut self.nodes[i as usize];
        n.start = Box::default();
        n.end = None;
        n.ids = SmallVec::new();
        n.left = NIL;
        n.right = NIL;
        n.max = i;
        self.free.push(i);
    }

    /// Recomputes node `i`'s `max` from itself and its children.
    fn update(&mut self, i: u32) {
        let n = self.node(i);
        let mut best = i;
        for c in [n.left, n.right] {
            if c != NIL {
                let m = self.node(c).max;
                let ord = cmp_end(self.node(m).end.as_deref(), self.node(best).end.as_deref());
                if ord == Ordering::Greater {
                    best = m;
                }
            }
        }
        self.nodes[i as usize].max = best;
    }

    /// Splits subtree `t` into the nodes less than `(start, end)` and the rest.
    fn split(&mut self, t: u32, start: &[u8], end: Option<&[u8]>) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.cmp_node(start, end, t) == Ordering::Greater {
            let (l, r) = self.split(self.node(t).right, start, end);
            self.nodes[t as usize].right = l;
            self.update(t);
            (t, r)
        } else {
            let (l, r) = self.split(self.node(t).left, start, end);
            self.nodes[t as usize].left = r;
            self.update(t);
            (l, t)
        }
    }

    /// Joins subtrees `a` and `b`, every interval of `a` being less than every one of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.node(a).prio > self.node(b).prio {
            let r = self.merge(self.node(a).right, b);
            self.nodes[a as usize].right = r;
            self.update(a);
            a
        } else {
            let l = self.merge(a, self.node(b).left);
            self.nodes[b as usize].left = l;
            self.update(b);
            b
        }
    }

    /// Links the fresh node `n` (interval `(start, end)`, not present in `t`) into subtree `t`;
    /// returns the subtree's new root.
    fn insert_node(&mut self, t: u32, n: u32, start: &[u8], end: Option<&[u8]>) -> u32 {
        if t == NIL {
            return n;
        }
        if self.node(n).prio > self.node(t).prio {
            let (l, r) = self.split(t, start, end);
            let node = &mut self.nodes[n as usize];
            node.left = l;
            node.right = r;
            self.update(n);
            return n;
        }
        if self.cmp_node(start, end, t) == Ordering::Less {
            let c = self.insert_node(self.node(t).left, n, start, end);
            self.nodes[t as usize].left = c;
        } else {
            let c = self.insert_node(self.node(t).right, n, start, end);
            self.nodes[t as usize].right = c;
        }
        self.update(t);
        t
    }

    /// Unlinks the node holding `(start, end)` from subtree `t`; returns the new root.
    fn erase(&mut self, t: u32, start: &[u8], end: Option<&[u8]>) -> u32 {
        if t == NIL {
            return NIL;
        }
        match self.cmp_node(start, end, t) {
            Ordering::Equal => {
                let n = self.node(t);
                self.merge(n.left, n.right)
            }
            Ordering::Less => {
                let c = self.erase(self.node(t).left, start, end);
                self.nodes[t as usize].left = c;
                self.update(t);
                t
            }
            Ordering::Greater => {
                let c = self.erase(self.node(t).right, start, end);
                self.nodes[t as usize].right = c;
                self.update(t);
                t
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl RangeIndex {
        /// Checks order, heap and `max` invariants and the id count; returns the tree height.
        fn check(&self) -> usize {
            let mut ids = 0;
            let mut height = 0;
            // (node, depth, lower bound node, upper bound node)
            let mut stack = vec![(self.root, 1usize, NIL, NIL)];
            while let Some((t, depth, lo, hi)) = stack.pop() {
                if t == NIL {
                    continue;
                }
                height = height.max(depth);
                let n = self.node(t);
                assert!(!n.ids.is_empty(), "empty node in tree");
                ids += n.ids.len();
                let (s, e) = (n.start.as_ref(), n.end.as_deref());
                if lo != NIL {
                    assert_eq!(self.cmp_node(s, e, lo), Ordering::Greater);
                }
                if hi != NIL {
                    assert_eq!(self.cmp_node(s, e, hi), Ordering::Less);
                }
                let mut want = e;
                for c in [n.left, n.right] {
                    if c != NIL {
                        assert!(self.node(c).prio <= n.prio, "heap order");
                        let m = self.node(self.node(c).max).end.as_deref();
                        if cmp_end(m, want) == Ordering::Greater {
                            want = m;
                        }
                    }
                }
                assert_eq!(self.node(n.max).end.as_deref(), want, "max end");
                stack.push((n.left, depth + 1, lo, t));
                stack.push((n.right, depth + 1, t, hi));
            }
            assert_eq!(ids, self.len);
            height
        }
    }

    fn stabbed(ix: &RangeIndex, key: &[u8]) -> Vec<u32> {
        let mut got = Vec::new();
        ix.stab(key, |id| got.push(id));
        got.sort_unstable();
        got
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
        /// A key of 0..=3 bytes over `a`..=`d` (plus the odd `\0` / `\xff`).
        fn key(&mut self) -> Vec<u8> {
            let len = self.below(4) as usize;
            (0..len)
                .map(|_| match self.below(12) {
                    0 => 0,
                    1 => 0xff,
                    x => b'a' + (x % 4) as u8,
                })
                .collect()
        }
    }

    #[test]
    fn randomized_against_brute_force() {
        let mut rng = Xorshift(0x1234_5678_9abc_def1);
        let mut ix = RangeIndex::new();
        // The model: a set of (start, end, id) triples.
        let mut model: Vec<(Vec<u8>, Option<Vec<u8>>, u32)> = Vec::new();
        for step in 0..5000 {
            let remove_existing = !model.is_empty() && rng.below(3) == 0;
            if remove_existing {
                let i = rng.below(model.len() as u64) as usize;
                let (s, e, id) = model.swap_remove(i);
                assert!(ix.remove(&s, e.as_deref(), id));
                assert!(!ix.remove(&s, e.as_deref(), id), "removed twice");
            } else {
                let s = rng.key();
                let e = if rng.below(5) == 0 { None } else { Some(rng.key()) };
                let id = rng.below(40) as u32;
                let op_insert = rng.below(4) != 0;
                let present = model.iter().position(|(ms, me, mid)| *ms == s && *me == e && *mid == id);
                if op_insert {
                    assert_eq!(ix.insert(&s, e.as_deref(), id), present.is_none());
                    if present.is_none() {
                        model.push((s, e, id));
                    }
                } else {
                    assert_eq!(ix.remove(&s, e.as_deref(), id), present.is_some());
                    if let Some(p) = present {
                        model.swap_remove(p);
                    }
                }
            }
            assert_eq!(ix.len(), model.len());
            if step % 50 == 0 {
                ix.check();
            }
            for _ in 0..8 {
                let key = rng.key();
                let mut want: Vec<u32> = model
                    .iter()
                    .filter(|(s, e, _)| s.as_slice() <= key.as_slice() && ends_after(e.as_deref(), &key))
                    .map(|&(_, _, id)| id)
                    .collect();
                want.sort_unstable();
                assert_eq!(stabbed(&ix, &key), want, "key {key:?} at step {step}");
                assert_eq!(ix.stabs_any(&key), !want.is_empty());
            }
        }
        ix.check();
        // Drain everything: the tree must end up empty and every node free.
        for (s, e, id) in model.drain(..) {
            assert!(ix.remove(&s, e.as_deref(), id));
        }
        assert!(ix.is_empty());
        assert_eq!(ix.root, NIL);
        assert_eq!(ix.free.len(), ix.nodes.len());
    }

    #[test]
    fn push_reports_positions_and_remove_at_names_the_id_that_fills_the_hole() {
        let mut ix = RangeIndex::new();
        for id in 10..15 {
            assert_eq!(ix.push(b"/p/", Some(b"/p0"), id), Some(id - 10));
        }
        assert_eq!(ix.push(b"/p/", None, 20), Some(0), "another interval starts its own list");
        // The last id moves into the hole.
        assert_eq!(ix.remove_at(b"/p/", Some(b"/p0"), 11, 1), Some((1, Some(14))));
        assert_eq!(ix.id_at(b"/p/", Some(b"/p0"), 1), Some(14));
        // A stale position is searched past; the last id leaves no hole to fill.
        assert_eq!(ix.remove_at(b"/p/", Some(b"/p0"), 13, 0), Some((3, None)));
        assert_eq!(ix.remove_at(b"/p/", Some(b"/p0"), 13, 3), None, "removed already");
        assert_eq!(ix.remove_at(b"/p/", None, 10, 0), None, "not on that interval");
        let mut left = stabbed(&ix, b"/p/x");
        left.sort_unstable();
        assert_eq!(left, vec![10, 12, 14, 20]);
        assert_eq!(ix.len(), 4);
        ix.check();
    }

    #[test]
    fn empty_intervals_never_match() {
        let mut ix = RangeIndex::new();
        assert!(ix.insert(b"b", Some(b"a"), 1));
        assert!(ix.insert(b"b", Some(b"b"), 2));
        assert!(ix.insert(b"", Some(b""), 3));
        for key in [&b""[..], b"a", b"a\0", b"b", b"b\0", b"c", b"\xff\xff"] {
            assert!(stabbed(&ix, key).is_empty(), "{key:?}");
            assert!(!ix.stabs_any(key));
        }
        assert_eq!(ix.len(), 3);
        assert!(ix.remove(b"b", Some(b"b"), 2));
        assert!(!ix.remove(b"b", Some(b"b"), 2));
        assert_eq!(ix.len(), 2);
        ix.check();
    }

    #[test]
    fn boundaries_are_half_open() {
        let mut ix = RangeIndex::new();
        ix.insert(b"b", Some(b"d"), 1);
        ix.insert(b"d", None, 2);
        ix.insert(b"b", Some(b"d"), 3);
        ix.insert(b"a", Some(b"b"), 4);
        ix.insert(b"", None, 5);
        assert_eq!(stabbed(&ix, b""), vec![5]);
        assert_eq!(stabbed(&ix, b"a"), vec![4, 5]);
        assert_eq!(stabbed(&ix, b"a\xff"), vec![4, 5]);
        assert_eq!(stabbed(&ix, b"b"), vec![1, 3, 5]);
        assert_eq!(stabbed(&ix, b"c\xff\xff"), vec![1, 3, 5]);
        assert_eq!(stabbed(&ix, b"d"), vec![2, 5]);
        assert_eq!(stabbed(&ix, b"\xff\xff\xff"), vec![2, 5]);
        // Identical intervals share one node.
        assert_eq!(ix.nodes.len() - ix.free.len(), 4);
        assert!(!ix.insert(b"b", Some(b"d"), 3), "duplicate id");
        assert!(ix.remove(b"b", Some(b"d"), 1));
        assert_eq!(stabbed(&ix, b"b"), vec![3, 5]);
        assert!(!ix.remove(b"b", None, 3), "different interval");
        ix.check();
    }

    #[test]
    fn stays_balanced_under_sequential_inserts_and_removes() {
        let mut ix = RangeIndex::new();
        let n = 100_000u32;
        for i in 0..n {
            let k = i.to_be_bytes();
            let e = (i + 1).to_be_bytes();
            assert!(ix.insert(&k, Some(&e), i));
        }
        let h = ix.check();
        assert!(h < 80, "height {h}");
        // Remove every other one, front to back.
        for i in (0..n).step_by(2) {
            let k = i.to_be_bytes();
            let e = (i + 1).to_be_bytes();
            assert!(ix.remove(&k, Some(&e), i));
        }
        let h = ix.check();
        assert!(h < 80, "height {h}");
        assert_eq!(stabbed(&ix, &7u32.to_be_bytes()), vec![7]);
        assert!(stabbed(&ix, &8u32.to_be_bytes()).is_empty());
        assert_eq!(ix.len(), (n / 2) as usize);
        ix.clear();
        assert!(ix.is_empty());
        assert!(!ix.stabs_any(b""));
    }
}
