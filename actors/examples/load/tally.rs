//! The exactly-once check of the gRPC scenarios: each watcher must receive every acknowledged put
//! of its key exactly once, in revision order, and nothing else.

use crate::grpc_watch::StreamResult;

/// Counts how many times one watcher got one put (`delivered`): right when an acknowledged put
/// came exactly once. A put that was not acknowledged but applied anyway is not an error, but
/// counted as unexpected; delivered more than once, it is a duplicate like any other. Shared by
/// the gateway and gRPC fan-outs.
pub fn count_put(delivered: u64, acked: bool, missing: &mut u64, duplicates: &mut u64, unexpected: &mut u64) -> bool {
    match (acked, delivered) {
        (true, 0) => {
            *missing += 1;
            false
        }
        (true, 1) => true,
        (true, n) => {
            *duplicates += n - 1;
            false
        }
        (false, 0) => true,
        (false, 1) => {
            *unexpected += 1;
            true
        }
        (false, n) => {
            *unexpected += 1;
            *duplicates += n - 1;
            false
        }
    }
}

/// Every watcher's findings, summed over the streams.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Watchers that got exactly their key's acknowledged puts, in revision order.
    pub watchers_exact: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Events no watcher should have had (wrong key, unknown watch id, unparsable value), and
    /// unacknowledged puts that were applied anyway (not an error, but counted).
    pub unexpected: u64,
    pub canceled: u64,
    pub first_error: Option<String>,
}

impl Tally {
    /// Adds one stream's findings. Watcher `w` of a stream watches key `k = (first_key + w) %
    /// keys`, whose puts are the sequence numbers `seq` with `seq % keys == k`; its counts are
    /// indexed by `seq / keys`. `acked[seq]` is whether put `seq` was acknowledged.
    pub fn add(&mut self, mut r: StreamResult, acked: &[bool], keys: usize) {
        let keys = keys.max(1);
        self.unexpected += r.unexpected;
        self.canceled += r.canceled;
        if self.first_error.is_none() {
            self.first_error = r.error.take();
        }
        // Events of an unknown watch id belong to no watcher: none of the stream's is exact.
        let attributed = r.unattributed == 0;
        for (w, (counts, &ooo)) in r.counts.iter().zip(&r.out_of_order).enumerate() {
            self.out_of_order += ooo;
            let foreign = r.foreign.get(w).copied().unwrap_or(0);
            let mut exact = attributed && ooo == 0 && foreign == 0;
            for (slot, &c) in counts.iter().enumerate() {
                let acked = acked.get(slot * keys + (r.first_key + w) % keys).copied().unwrap_or(false);
                exact &= count_put(u64::from(c), acked, &mut self.missing, &mut self.duplicates, &mut self.unexpected);
            }
            if exact {
                self.watchers_exact += 1;
            }
        }
    }
}

/// Events the watchers should get: for each watcher, the puts to its key that `counted` (acked,
/// or sent) says count. `streams[s]` is stream `s`'s first key index and how many watchers it
/// created (watcher `w` on key `(first + w) % keys`).
pub fn events_for(streams: &[(usize, usize)], counted: &[bool], keys: usize) -> u64 {
    let keys = keys.max(1);
    let mut per_key = vec![0u64; keys];
    for (seq, _) in counted.iter().enumerate().filter(|(_, &c)| c) {
        per_key[seq % keys] += 1;
    }
    streams.iter().map(|&(first, n)| (0..n).map(|w| per_key[(first + w) % keys]).sum::<u64>()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One stream of two watchers on one key, both given puts 0 and 1 once.
    fn stream() -> StreamResult {
        StreamResult {
            first_key: 0,
            counts: vec![vec![1, 1], vec![1, 1]],
            out_of_order: vec![0, 0],
            foreign: vec![0, 0],
            ..StreamResult::default()
        }
    }

    fn exact(r: StreamResult, acked: &[bool]) -> Tally {
        let mut t = Tally::default();
        t.add(r, acked, 1);
        t
    }

    #[test]
    fn a_watcher_is_exact_only_with_each_acknowledged_put_once_in_order_and_nothing_else() {
        assert_eq!(exact(stream(), &[true, true]).watchers_exact, 2);
        let mut missing = stream();
        missing.counts[0][1] = 0;
        assert_eq!(exact(missing, &[true, true]).watchers_exact, 1);
        let mut reordered = stream();
        reordered.out_of_order[1] = 1;
        assert_eq!(exact(reordered, &[true, true]).watchers_exact, 1);
        let mut foreign = stream();
        foreign.foreign[0] = 1;
        assert_eq!(exact(foreign, &[true, true]).watchers_exact, 1, "another key's event");
        let mut unknown_id = stream();
        unknown_id.unattributed = 1;
        assert_eq!(exact(unknown_id, &[true, true]).watchers_exact, 0, "an event no watcher created");
        // An unacknowledged put applied anyway: fine once, a duplicate twice.
        let t = exact(stream(), &[true, false]);
        assert_eq!((t.watchers_exact, t.unexpected), (2, 2));
        let mut twice = stream();
        twice.counts[1][1] = 2;
        let t = exact(twice, &[true, false]);
        assert_eq!((t.watchers_exact, t.duplicates), (1, 1));
    }
}
