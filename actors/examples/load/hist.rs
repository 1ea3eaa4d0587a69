//! A fixed-bucket latency histogram, for the millions of put→event latencies of grpc-fanout:
//! 10 µs buckets up to 100 ms, 1 ms buckets up to 120 s, one overflow bucket.

/// Below this, buckets are `FINE_US` wide; above it, `COARSE_US` wide.
const FINE_LIMIT_US: u64 = 100_000;
const FINE_US: u64 = 10;
const COARSE_US: u64 = 1_000;
const COARSE_LIMIT_US: u64 = 120_000_000;
const FINE_BUCKETS: usize = (FINE_LIMIT_US / FINE_US) as usize;
const BUCKETS: usize = FINE_BUCKETS + ((COARSE_LIMIT_US - FINE_LIMIT_US) / COARSE_US) as usize + 1;

#[derive(Debug, Clone)]
pub struct Hist {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self { buckets: vec![0; BUCKETS], count: 0, max_us: 0 }
    }
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        let i = if us < FINE_LIMIT_US {
            (us / FINE_US) as usize
        } else {
            (FINE_BUCKETS + ((us - FINE_LIMIT_US) / COARSE_US) as usize).min(BUCKETS - 1)
        };
        self.buckets[i] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds `other`'s samples to this histogram.
    pub fn merge(&mut self, other: &Hist) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn max_us(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max_us)
    }

    /// Nearest-rank percentile, as the upper edge of its bucket (capped at the maximum seen).
    pub fn pct(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper = if i < FINE_BUCKETS {
                    (i as u64 + 1) * FINE_US
                } else {
                    FINE_LIMIT_US + (i - FINE_BUCKETS + 1) as u64 * COARSE_US
                };
                return Some(upper.min(self.max_us));
            }
        }
        Some(self.max_us)
    }
}
