//! Owns `KeyRange`: a single key, `[start, end)`, a prefix or "from key", with etcd's wire rules
//! (docs/etcd-semantics.md §4). Used alike by range, delete_range, compares and watches.

use std::ops::Bound;

/// A set of keys, as etcd's `(key, range_end)` pair describes it (docs/etcd-semantics.md §4).
///
/// Comparison is plain byte-wise lexicographic. An `Interval` whose `start >= end` is empty:
/// range and delete_range return nothing for it, while a watch on it is an error
/// (`mvcc: watcher range is empty`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyRange {
    /// Exactly one key (wire: `range_end` empty or absent).
    Single(Vec<u8>),
    /// Every key `k` with `start <= k < end` (wire: `range_end = end`).
    Interval {
        /// Inclusive lower bound.
        start: Vec<u8>,
        /// Exclusive upper bound.
        end: Vec<u8>,
    },
    /// Every key `>= start` (wire: `range_end = "\0"`). `FromKey(b"\0")` is "all keys".
    FromKey(Vec<u8>),
}

impl KeyRange {
    /// Returns the range that etcd's wire pair `(key, range_end)` names: an empty `range_end` is
    /// a single key, `"\0"` is "from key", anything else the half-open interval `[key, range_end)`.
    #[must_use]
    pub fn from_wire(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => Self::Single(key.to_vec()),
            [0] => Self::FromKey(key.to_vec()),
            end => Self::Interval { start: key.to_vec(), end: end.to_vec() },
        }
    }

    /// Returns the single key `key`.
    #[must_use]
    pub fn single(key: impl Into<Vec<u8>>) -> Self {
        Self::Single(key.into())
    }

    /// Returns `[start, end)`.
    #[must_use]
    pub fn interval(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self::Interval { start: start.into(), end: end.into() }
    }

    /// Returns every key that starts with `prefix`, as etcd's client computes it
    /// (`client/v3/op.go getPrefix`): `[prefix, prefix_end(prefix))`, or "from key" when the
    /// prefix has no end (all bytes `0xff`), or all keys for an empty prefix.
    #[must_use]
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Self::all();
        }
        match prefix_end(&prefix) {
            Some(end) => Self::Interval { start: prefix, end },
            None => Self::FromKey(prefix),
        }
    }

    /// Returns every key (wire: `key = "\0", range_end = "\0"`).
    #[must_use]
    pub fn all() -> Self {
        Self::FromKey(vec![0])
    }

    /// Returns the etcd wire pair `(key, range_end)` for this range.
    #[must_use]
    pub fn to_wire(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            Self::Single(k) => (k.clone(), Vec::new()),
            Self::Interval { start, end } => (start.clone(), end.clone()),
            Self::FromKey(k) => (k.clone(), vec![0]),
        }
    }

    /// Returns the inclusive lower bound of the range.
    #[must_use]
    pub fn start(&self) -> &[u8] {
        match self {
            Self::Single(k) | Self::FromKey(k) => k,
            Self::Interval { start, .. } => start,
        }
    }

    /// Returns the range as bounds for an ordered map over keys.
    #[must_use]
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        match self {
            Self::Single(k) => (Bound::Included(k), Bound::Included(k)),
            Self::Interval { start, end } => (Bound::Included(start), Bound::Excluded(end)),
            Self::FromKey(k) => (Bound::Included(k), Bound::Unbounded),
        }
    }

    /// Returns whether the range contains no key at all (`start >= end`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Interval { start, end } if start >= end)
    }

    /// Returns whether `key` lies in the range.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            Self::Single(k) => k.as_slice() == key,
            Self::Interval { start, end } => start.as_slice() <= key && key < end.as_slice(),
            Self::FromKey(k) => k.as_slice() <= key,
        }
    }

    /// Returns whether the two ranges share at least one key.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        match (self, other) {
            (Self::Single(k), r) | (r, Self::Single(k)) => r.contains(k),
            _ => {
                // Both are [a, b) with b possibly +inf: they overlap iff each starts before the
                // other ends.
                let ends_after = |r: &Self, key: &[u8]| match r {
                    Self::Interval { end, .. } => key < end.as_slice(),
                    _ => true,
                };
                ends_after(self, other.start()) && ends_after(other, self.start())
            }
        }
    }
}

/// Returns the smallest key greater than every key that starts with `prefix`
/// (etcd `client/v3/op.go getPrefix`): drop trailing `0xff` bytes, increment the last byte.
/// Returns `None` when no such key exists (the prefix is empty or all `0xff`).
#[must_use]
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b < 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    // X20: prefix end computation.
    #[test]
    fn x20_prefix_end() {
        assert_eq!(prefix_end(b"foo"), Some(b"fop".to_vec()));
        assert_eq!(prefix_end(b"aa"), Some(b"ab".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(KeyRange::prefix(b"\xff\xff".to_vec()).to_wire(), (b"\xff\xff".to_vec(), vec![0]));
        assert_eq!(KeyRange::prefix(Vec::new()).to_wire(), (vec![0], vec![0]));
    }

    #[test]
    fn wire_rules() {
        assert_eq!(KeyRange::from_wire(b"foo", b""), KeyRange::single("foo"));
        assert_eq!(KeyRange::from_wire(b"foo", b"\0"), KeyRange::FromKey(b"foo".to_vec()));
        assert_eq!(KeyRange::from_wire(b"\0", b"\0"), KeyRange::all());
        assert!(KeyRange::from_wire(b"b", b"a").is_empty());
        assert!(KeyRange::from_wire(b"a", b"a").is_empty());
        assert!(!KeyRange::from_wire(b"a", b"b").is_empty());
        let all = KeyRange::all();
        assert!(all.contains(b"\0") && all.contains(b"zzz") && !all.contains(b""));
    }

    #[test]
    fn overlaps_is_symmetric_and_exact() {
        let cases = [
            (KeyRange::single("b"), KeyRange::interval("a", "c"), true),
            (KeyRange::single("c"), KeyRange::interval("a", "c"), false),
            (KeyRange::interval("a", "c"), KeyRange::interval("c", "d"), false),
            (KeyRange::interval("a", "c"), KeyRange::interval("b", "d"), true),
            (KeyRange::FromKey(b"x".to_vec()), KeyRange::interval("a", "x"), false),
            (KeyRange::FromKey(b"x".to_vec()), KeyRange::interval("a", "y"), true),
            (KeyRange::FromKey(b"x".to_vec()), KeyRange::FromKey(b"a".to_vec()), true),
            (KeyRange::interval("b", "a"), KeyRange::all(), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.overlaps(&b), want, "{a:?} vs {b:?}");
            assert_eq!(b.overlaps(&a), want, "{b:?} vs {a:?}");
        }
    }
}
