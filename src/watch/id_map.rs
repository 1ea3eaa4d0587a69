//! Owns `IdHasher` and `IdMap`: hash maps keyed by integer ids the process hands out itself
//! (stream ids, watcher sequence numbers), hashed with one multiply instead of SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a `u64` id with one multiply (Fibonacci hashing). Only for ids the process chooses
/// (sequential counters): SipHash's resistance to chosen keys buys nothing there, and its cost
/// shows on paths that look an id up once per delivered event.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The rotation brings the well-mixed high bits of the product down to where hashbrown
        // takes its bucket index from, and leaves others for its control byte.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(26);
    }
}

/// A `HashMap` keyed by a process-chosen `u64` id.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_and_round_trip() {
        let mut m: IdMap<u64> = IdMap::default();
        for i in 0..10_000u64 {
            m.insert(i, i * 2);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u64).all(|i| m.get(&i) == Some(&(i * 2))));
        assert_eq!(m.remove(&17), Some(34));
        assert!(!m.contains_key(&17));
    }
}
