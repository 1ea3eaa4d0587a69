//! The exactly-once check of the gRPC scenarios: each watcher must receive every acknowledged put
//! of its key exactly once, in revision order, and nothing else.

use crate::grpc_watch::StreamResult;

/// Counts how many times one watcher got one put (`delivered`): right when an acknowledged put
/// came exactly once. A put that was not acknowledged but applied anyway is not an error, but
/// counted as unexpected. Shared by the gateway and gRPC fan-outs.
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
        (false, n) => {
            *unexpected += n;
            true
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
        for (w, (counts, &ooo)) in r.counts.iter().zip(&r.out_of_order).enumerate() {
            self.out_of_order += ooo;
            let mut exact = ooo == 0;
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
