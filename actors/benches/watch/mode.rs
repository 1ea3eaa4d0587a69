//! How the bench runs: full scale under `cargo bench`, a tiny smoke scale otherwise, and which
//! sections the positional filter arguments select.

use std::sync::OnceLock;

/// Sizes of every scenario: the real ones under `cargo bench`, tiny ones as a smoke test.
pub struct Scale {
    pub fan_streams: usize,
    pub fan_per_stream: usize,
    pub fan_samples: usize,
    pub latency_puts: usize,
    pub b2b_puts: usize,
    pub mp_streams: usize,
    pub mp_seq_puts: usize,
    pub mp_tasks: usize,
    pub mp_task_puts: usize,
    pub mp_rounds: usize,
    pub cu_revs: usize,
    pub cu_keys: usize,
    pub cu_streams: usize,
    pub cu_per_stream: usize,
    pub cu_prefix_watchers: usize,
    pub cu_idle_probe: usize,
    /// Rounds of the 10k-watcher catch-up; the put latency samples of all rounds are pooled.
    pub cu_rounds: usize,
    pub mem_watchers: usize,
    pub mem_watcher_streams: usize,
    pub mem_streams: usize,
}

const FULL: Scale = Scale {
    fan_streams: 1000,
    fan_per_stream: 10,
    fan_samples: 200,
    latency_puts: 2000,
    b2b_puts: 500,
    mp_streams: 100,
    mp_seq_puts: 1000,
    mp_tasks: 8,
    mp_task_puts: 1000,
    mp_rounds: 31,
    cu_revs: 100_000,
    cu_keys: 10_000,
    cu_streams: 1000,
    cu_per_stream: 10,
    cu_prefix_watchers: 10,
    cu_idle_probe: 1000,
    cu_rounds: 5,
    mem_watchers: 100_000,
    mem_watcher_streams: 1000,
    mem_streams: 10_000,
};

const SMOKE: Scale = Scale {
    fan_streams: 10,
    fan_per_stream: 10,
    fan_samples: 5,
    latency_puts: 20,
    b2b_puts: 5,
    mp_streams: 10,
    mp_seq_puts: 50,
    mp_tasks: 2,
    mp_task_puts: 20,
    mp_rounds: 1,
    cu_revs: 2000,
    cu_keys: 100,
    cu_streams: 10,
    cu_per_stream: 10,
    cu_prefix_watchers: 2,
    cu_idle_probe: 10,
    cu_rounds: 1,
    mem_watchers: 1000,
    mem_watcher_streams: 10,
    mem_streams: 100,
};

/// What the bench reads of its command line (criterion parses it again for itself).
pub struct Args {
    /// `--bench`: cargo bench, not a smoke test.
    pub bench: bool,
    /// Positional arguments: section or criterion bench names.
    filters: Vec<String>,
}

/// The command line, read once.
pub fn args() -> &'static Args {
    static ARGS: OnceLock<Args> = OnceLock::new();
    ARGS.get_or_init(|| {
        // Criterion options that take a value: their value is not a filter.
        const WITH_VALUE: &[&str] = &[
            "--save-baseline",
            "-s",
            "--baseline",
            "-b",
            "--baseline-lenient",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--profile-time",
            "--color",
            "-c",
            "--output-format",
            "--plotting-backend",
            "--format",
        ];
        let mut bench = false;
        let mut filters = Vec::new();
        let mut skip = false;
        for a in std::env::args().skip(1) {
            if skip {
                skip = false;
            } else if a == "--bench" {
                bench = true;
            } else if WITH_VALUE.contains(&a.as_str()) {
                skip = true;
            } else if !a.starts_with('-') {
                filters.push(a);
            }
        }
        Args { bench, filters }
    })
}

/// The sizes for this run: [`FULL`] with `--bench`, [`SMOKE`] without.
pub fn scale() -> &'static Scale {
    if args().bench {
        &FULL
    } else {
        &SMOKE
    }
}

/// Whether a section runs: no filter, or a filter naming it (or one of its criterion benches).
pub fn selected(section: &str) -> bool {
    let f = &args().filters;
    f.is_empty() || f.iter().any(|f| section.contains(f.as_str()) || f.starts_with(section))
}
