//! The load tool's command line: servers to run, scenario sizes, limits.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};

/// Runs the same put and watch fan-out load against watchkv and etcd and compares them.
#[derive(Debug, Clone, Parser)]
#[command(about)]
pub struct Args {
    /// The watchkv server binary (built with `cargo build --release -p watchkv-actors --bin watchkv`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/watchkv"))]
    pub watchkv_bin: PathBuf,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// What to run: `http` (scenarios 1 and 2 over the JSON gateway), `grpc-fanout` (watch
    /// fan-out over gRPC with `etcd-client`; see `grpc_fanout.rs`), `grpc-catchup` (a writer's
    /// put latency before and while rounds of watchers catch up from history; see `catchup.rs`)
    /// `mirror-fanout` (etcd alone, with watchers, and with its watchers moved to two watchkv
    /// mirrors; see `mirror_fanout.rs`), `grpc-lock` (waiters queued on one lock hand it on;
    /// see `lock.rs`) or `grpc-range` (a writer's put latency before and while another client
    /// ranges over a large prefix; see `range.rs`).
    #[arg(long, default_value = "http")]
    pub scenario: String,
    /// Runs of the scenario per server, alternating servers, each with a fresh server and data
    /// directory; the table shows each figure's median across runs.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Which servers to run: `both`, `watchkv` or `etcd`.
    #[arg(long, default_value = "both")]
    pub only: String,
    /// Directory under which each server's temporary data directory is created.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Once a server answers, write one key, stop it with SIGTERM, start it again on the same
    /// data directory and read the key back before the scenario runs, so that the run measures a
    /// server reopened on its own data, as every server is after its first restart.
    #[arg(long)]
    pub restarted: bool,
    /// Scenario 1 and grpc-fanout: total puts.
    #[arg(long, default_value_t = 20_000)]
    pub puts: u64,
    /// Scenario 1: concurrent keep-alive clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Scenario 1: value size in bytes.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Scenario 1 over `http` (the JSON gateway, one keep-alive connection per client) or `grpc`
    /// (etcd's gRPC API: clients share `--put-connections` HTTP/2 connections).
    #[arg(long, default_value = "http")]
    pub protocol: String,
    /// Scenario 1 over gRPC: HTTP/2 connections the clients are dealt over, round robin (client
    /// `i` on connection `i % N`). 1: all share one, as the clones of one etcd client do; the
    /// value of `--clients`: one connection per client, as separate client processes have.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub put_connections: u64,
    /// Scenario 1: client threads, each an actix-rt system with its share of the clients and of
    /// the connections (client and connection `i` on thread `i % N`, at least one connection
    /// each), all taking puts from one count. 1: every client on the main thread, which then
    /// decodes every answer; 2: a multi-threaded client on this 2-core machine, as the fan-out
    /// issue measured puts with.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub put_threads: u64,
    /// Scenario 1: give up after this many seconds.
    #[arg(long, default_value_t = 45)]
    pub s1_timeout_secs: u64,
    /// Scenario 2: watch streams (HTTP connections); grpc-fanout: gRPC watch streams
    /// (grpc-catchup derives its streams from `--catchup-watchers`).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Scenario 2: watchers per stream, all on the same prefix; grpc-fanout: watcher `w` on key
    /// `w % --keys`; grpc-catchup: all on the catch-up prefix.
    #[arg(long, default_value_t = 10)]
    pub watchers_per_stream: usize,
    /// grpc-fanout and mirror-fanout: watched keys, which the writer writes round robin;
    /// grpc-fanout: watcher `w` of each stream watches key `w % keys`; mirror-fanout: watcher `g`
    /// of them all watches key `g % keys` (default `MIRROR_KEYS`).
    #[arg(long, default_value_t = 1)]
    pub keys: usize,
    /// Scenario 2, mirror-fanout (and grpc-fanout with `--in-flight 0`): puts per second
    /// (mirror-fanout's default: `MIRROR_RATE`).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Scenario 2 and mirror-fanout: seconds of puts.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Scenario 2 and grpc-fanout: after the last put, wait at most this many seconds for events;
    /// grpc-catchup: give a round's watchers at most this many seconds to catch up; grpc-lock:
    /// the time limit of its queue and of its hand-off.
    #[arg(long, default_value_t = 20)]
    pub drain_timeout_secs: u64,
    /// grpc-fanout and grpc-catchup: client connections (`etcd_client::Client`s) carrying the
    /// watch streams (thousands of watchers on one connection can exceed the client's h2 budget
    /// for unread small DATA frames against etcd, which sends one frame per event).
    #[arg(long, default_value_t = 10)]
    pub grpc_connections: usize,
    /// grpc-fanout: puts kept outstanding on the writer's connection; 0 = paced at `--rate`.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// grpc-fanout: run the writer on the client's watch thread, as one client process doing
    /// both would: its puts then wait while that thread decodes events, so the writer cannot
    /// outrun what the watchers take (a closed loop). By default it has a thread of its own and
    /// keeps `--in-flight` puts outstanding whatever the watchers take (an open loop: the
    /// servers then hold or drop the backlog).
    #[arg(long)]
    pub writer_on_watch_thread: bool,
    /// grpc-fanout, grpc-catchup, grpc-range: run the writer's own thread at `SCHED_FIFO`
    /// (needs `CAP_SYS_NICE`), so that its puts never wait for a CPU behind the tool's other
    /// threads: the writer's latencies then measure the server and not the client's own
    /// scheduling on shared cores. Off by default, as a client runs. grpc-range's busy writers
    /// share that thread; grpc-fanout's writer with `--writer-on-watch-thread` has no thread of
    /// its own, so there the flag changes nothing.
    #[arg(long)]
    pub writer_fifo: bool,
    /// grpc-fanout: client threads for the watch streams, each with an actix-rt system and its
    /// share of the `--grpc-connections` connections and of the streams (connection and stream
    /// `i` on thread `i % N`). One thread decodes at most about 2.6M events/s here, which bounds
    /// events/s on one key; etcd's Go client decodes on every core.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub watch_threads: u64,
    /// grpc-fanout: stop sending puts after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub grpc_put_timeout_secs: u64,
    /// grpc-catchup: puts written to the catch-up prefix before the writer starts; in every
    /// catch-up round each watcher must catch up on all of them from history.
    #[arg(long, default_value_t = 100)]
    pub catchup_revisions: usize,
    /// grpc-catchup and grpc-range: sequential puts of the measured writer, idle and again while
    /// catch-up rounds run back to back (grpc-range: while the reader ranges).
    #[arg(long, default_value_t = 2000)]
    pub catchup_writer_puts: usize,
    /// grpc-catchup: watchers catching up in each round, `--watchers-per-stream` per stream.
    #[arg(long, default_value_t = 1000)]
    pub catchup_watchers: usize,
    /// grpc-range: keys under the prefix the reader ranges over (each range answers them all).
    #[arg(long, default_value_t = 20_000)]
    pub range_keys: usize,
    /// grpc-range: the reader asks only for the count (`count_only`, as Kubernetes' object
    /// counter does), so each range is a walk of the key index with no rows to read.
    #[arg(long)]
    pub range_count_only: bool,
    /// grpc-range: the reader asks for its range inside a txn that only reads (as etcd's lock
    /// recipe and clientv3's STM do), which a server may serve as a read or order with writes.
    #[arg(long)]
    pub range_in_txn: bool,
    /// grpc-range: unmeasured writers beside the measured one while the reader ranges, each
    /// keeping one put in flight on a connection of its own (all on the measured writer's
    /// thread), so that group commits run back to
    /// back (what a read ordered with the writes waits for).
    #[arg(long, default_value_t = 0)]
    pub range_busy_writers: usize,
    /// grpc-lock: clients queued on the lock behind its holder.
    #[arg(long, default_value_t = 1000)]
    pub lock_waiters: usize,
    /// mirror-fanout: watchers in its direct and mirrors phases, `--watchers-per-stream` per
    /// stream, over `--grpc-connections` connections (split evenly over the two mirrors).
    #[arg(long, default_value_t = 10_000)]
    pub mirror_watchers: usize,
    /// If set, `perf record -g` each server during each scenario into this directory.
    #[arg(long)]
    pub perf_dir: Option<PathBuf>,
    /// `--perf-dir`'s sampling frequency (Hz).
    #[arg(long, default_value_t = 499)]
    pub perf_freq: u32,
    /// An extra argument for every watchkv server this tool starts (repeat it for more), e.g.
    /// `--watchkv-arg=--workers=4`
    #[arg(long = "watchkv-arg", allow_hyphen_values = true)]
    pub watchkv_args: Vec<String>,
}

/// mirror-fanout's `--keys` unless given: 100 watchers per key of its 10k, so that each put
/// fans out to 100 watchers.
pub const MIRROR_KEYS: usize = 100;
/// mirror-fanout's `--rate` unless given: etcd pinned to one core sends its 10k watchers their
/// 50k events/s without falling behind (about half its core), and so do the two mirrors sharing
/// the other core with the load tool; at 1000 puts/s the mirrors fell behind there (see
/// docs/benchmarks.md).
pub const MIRROR_RATE: u64 = 500;

impl Args {
    /// The command line, with mirror-fanout's own defaults for the flags it was not given
    /// (`MIRROR_KEYS`, `MIRROR_RATE`): the other scenarios' defaults of `--keys` and `--rate`
    /// would put all 10k watchers on one key, or pace too slowly to measure etcd's CPU per put.
    pub fn parse_with_scenario_defaults() -> Self {
        let matches = Self::command().get_matches();
        let mut args = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let defaulted = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
        if args.scenario == "mirror-fanout" {
            if defaulted("keys") {
                args.keys = MIRROR_KEYS;
            }
            if defaulted("rate") {
                args.rate = MIRROR_RATE;
            }
        }
        args
    }
}
