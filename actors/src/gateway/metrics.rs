//! Owns `GET /metrics`: the runtime's stats in Prometheus text format, read from every actor at
//! scrape time (watchers per group, victims, events sent, slow-watcher cancels, write latency),
//! on a mirror its upstream watch (`watchkv_mirror_*`), and beside them the metrics etcd
//! exports under etcd's own names where watchkv has the same quantity (`etcd_server_*`,
//! `etcd_mvcc_*`, `etcd_debugging_mvcc_*`, `etcd_disk_*`, go-grpc-prometheus' `grpc_server_*`
//! and Prometheus' `process_*`), so
//! dashboards, alerts and `etcdctl check datascale` written for etcd read them unchanged.

use std::sync::atomic::AtomicU64;

use actix_web::{web, HttpResponse};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use watchkv::disk_stats::HistogramSnapshot;

use super::Gateway;
use crate::api::REPORTED_ETCD_VERSION;
use crate::grpc::call_metrics::{CallCounters, CODES};
use crate::handle::SystemStats;
use crate::mirror_status::UpstreamReport;

/// Renders the metrics.
pub async fn metrics(gw: web::Data<Gateway>) -> HttpResponse {
    let stats = match gw.handle.stats().await {
        Ok(s) => s,
        Err(e) => return HttpResponse::ServiceUnavailable().body(e.to_string()),
    };
    let db_size = match gw.handle.db_size().await {
        Ok(bytes) => bytes,
        Err(e) => return HttpResponse::ServiceUnavailable().body(e.to_string()),
    };
    let upstream = gw.handle.upstream_status().map(|u| u.report(gw.handle.upstream_applied()));
    let mut root = Registry::default();
    register_etcd(&mut root, gw.get_ref(), &stats, db_size, upstream.as_ref());
    if let Some(calls) = &gw.grpc_calls {
        register_grpc_calls(&mut root, calls);
    }
    #[cfg(target_os = "linux")]
    register_process(&mut root);
    let registry = root.sub_registry_with_prefix("watchkv");
    let watchers = Family::<Vec<(String, String)>, Gauge>::default();
    for (group, n) in [
        ("synced", stats.store.synced),
        ("promoting", stats.store.promoting),
        ("unsynced", stats.syncer.unsynced),
        ("victim", stats.victims.victims),
    ] {
        watchers.get_or_create(&vec![("group".to_string(), group.to_string())]).set(n as i64);
    }
    registry.register("watchers", "Watchers per group", watchers);
    registry.register("streams", "Open watch streams", gauge(stats.store.streams as i64));
    registry.register(
        "victim_parked_bytes",
        "Bytes of events parked for victims",
        gauge(stats.victims.parked_bytes as i64),
    );
    registry.register("current_revision", "Current store revision", gauge(stats.store.current_rev));
    registry.register("compact_revision", "Compact revision", gauge(stats.store.compact_rev));
    registry.register("keys", "Keys in the index", gauge(stats.store.indexed_keys as i64));
    registry.register("leases", "Granted leases", gauge(stats.store.leases as i64));
    registry.register(
        "ranges_read_off_thread",
        "Ranges and read-only txns whose rows were read from a snapshot off the store's thread",
        counter(stats.store.ranges_read_off_thread),
    );
    registry.register(
        "read_txns",
        "Txns that only read, taken as reads beside the group commit (answered or failed)",
        counter(stats.store.read_txns),
    );
    registry.register(
        "ranges_planned_in_parts",
        "Ranges and read-only txns whose walk of the key index took several turns of the store, with writes between them",
        counter(stats.store.ranges_planned_in_parts),
    );
    registry.register("events_sent", "Events delivered to stream mailboxes", counter(stats.events_sent));
    registry.register("responses_sent", "Responses delivered to stream mailboxes", counter(stats.responses_sent));
    registry.register(
        "slow_watcher_cancels",
        "Watchers cancelled by the slow-consumer policy",
        counter(stats.slow_cancels),
    );
    registry.register("write_batches", "Write batches committed (group commits)", counter(stats.write_batches));
    registry.register(
        "write_batch_microseconds",
        "Time spent committing write batches, in microseconds (divide by write_batches for the mean)",
        counter(stats.write_micros),
    );
    if let Some(upstream) = &upstream {
        register_mirror(registry, upstream);
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &root) {
        return HttpResponse::InternalServerError().body(e.to_string());
    }
    HttpResponse::Ok().content_type("application/openmetrics-text; version=1.0.0; charset=utf-8").body(out)
}

/// A mirror's upstream gauges (`crate::mirror_status`), as `watchkv_mirror_*`.
fn register_mirror(registry: &mut Registry, report: &UpstreamReport) {
    let mirror = registry.sub_registry_with_prefix("mirror");
    mirror.register(
        "upstream_connected",
        "Whether the upstream watch is up (1) or down (0)",
        gauge(i64::from(report.connected)),
    );
    mirror.register(
        "applied_revision",
        "The last upstream revision the mirror applied",
        gauge(report.applied_revision),
    );
    mirror.register(
        "upstream_revision",
        "The last revision upstream reported in a watch response header",
        gauge(report.upstream_revision),
    );
    mirror.register("lag_revisions", "Revisions upstream is ahead of the mirror", gauge(report.lag_revisions));
    let seconds = Gauge::<f64, AtomicU64>::default();
    seconds.set(report.lag_seconds);
    mirror.register(
        "lag_seconds",
        "Seconds since the mirror last applied an upstream revision while upstream is ahead, else 0",
        seconds,
    );
}

/// The gRPC call counters under go-grpc-prometheus' names and labels, as etcd exports them:
/// every method with every code, zeros included (etcd: v3rpc/grpc.go `grpc_prometheus.Register`
/// pre-registers them).
fn register_grpc_calls(root: &mut Registry, calls: &CallCounters) {
    let started = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    let handled = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    for counts in calls.snapshot() {
        let method = counts.method;
        let labels =
            vec![("grpc_method", method.method), ("grpc_service", method.service), ("grpc_type", method.kind.label())];
        started.get_or_create(&labels).inc_by(counts.started);
        for (code, n) in CODES.iter().zip(counts.handled) {
            let mut labels = labels.clone();
            labels.insert(0, ("grpc_code", code));
            handled.get_or_create(&labels).inc_by(n);
        }
    }
    root.register("grpc_server_started", "Total number of RPCs started on the server.", started);
    root.register(
        "grpc_server_handled",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        handled,
    );
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::<i64>::default();
    g.set(v);
    g
}

fn gauge_f64(v: f64) -> Gauge<f64, AtomicU64> {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(v);
    g
}

fn counter(v: u64) -> Counter {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    c
}

/// A gauge of 1 labelled with a value, as etcd reports its versions and id
/// (`etcd_server_version{server_version="3.5.0"} 1`).
fn info(label: &str, value: String) -> Family<Vec<(String, String)>, Gauge> {
    let family = Family::<Vec<(String, String)>, Gauge>::default();
    family.get_or_create(&vec![(label.to_string(), value)]).set(1);
    family
}

/// A histogram read from the store's [`watchkv::disk_stats::DiskStats`] at scrape time.
#[derive(Debug)]
struct ReadHistogram(HistogramSnapshot);

impl EncodeMetric for ReadHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_secs, self.0.count, &self.0.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// etcd's own metrics, under etcd's names, where watchkv has the same quantity (etcd:
/// etcdserver/metrics.go, mvcc/metrics.go, mvcc/backend/metrics.go, wal/metrics.go). A single
/// server leads itself: it always has a leader, has seen one leader change (its own election,
/// as a one-member etcd reports) and is not a learner. A mirror is not the leader (upstream's
/// is), and has one while its upstream watch is up.
fn register_etcd(
    root: &mut Registry,
    gw: &Gateway,
    stats: &SystemStats,
    db_size: u64,
    upstream: Option<&UpstreamReport>,
) {
    let store_config = gw.handle.config().store();
    let server = root.sub_registry_with_prefix("etcd_server");
    let has_leader = upstream.is_none_or(|u| u.connected);
    server.register(
        "has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        gauge(i64::from(has_leader)),
    );
    server.register(
        "is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        gauge(i64::from(upstream.is_none())),
    );
    server.register("is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", gauge(0));
    server.register(
        "leader_changes_seen",
        "The number of leader changes seen.",
        counter(u64::from(upstream.is_none())),
    );
    server.register(
        "id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        info("server_id", format!("{:x}", gw.header.member_id)),
    );
    server.register(
        "version",
        "Which version is running. 1 for 'server_version' label with current version.",
        info("server_version", REPORTED_ETCD_VERSION.to_string()),
    );
    // etcd reports an unset quota as its 2 GiB default; watchkv's "no quota" has no number,
    // so it is left out rather than reported as a limit that does not apply.
    if let Some(quota) = store_config.quota_backend_bytes() {
        server.register("quota_backend_bytes", "Current backend storage quota size in bytes.", gauge_f64(quota as f64));
    }
    let cluster_version = REPORTED_ETCD_VERSION.rsplit_once('.').map_or(REPORTED_ETCD_VERSION, |(minor, _)| minor);
    root.register(
        "etcd_cluster_version",
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
        info("cluster_version", cluster_version.to_string()),
    );

    let mvcc = root.sub_registry_with_prefix("etcd_mvcc");
    let db_size = i64::try_from(db_size).unwrap_or(i64::MAX);
    mvcc.register(
        "db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        gauge(db_size),
    );
    // `Maintenance.Status` reports the same figure for both (docs/etcd-semantics.md).
    mvcc.register(
        "db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        gauge(db_size),
    );

    let debugging = root.sub_registry_with_prefix("etcd_debugging_mvcc");
    let watchers = stats.store.synced + stats.store.promoting + stats.syncer.unsynced + stats.victims.victims;
    debugging.register("keys_total", "Total number of keys.", gauge(stats.store.live_keys as i64));
    debugging.register("current_revision", "The current revision of store.", gauge(stats.store.current_rev));
    debugging.register(
        "compact_revision",
        "The revision of the last compaction in store.",
        gauge(stats.store.compact_rev),
    );
    debugging.register("watcher_total", "Total number of watchers.", gauge(watchers as i64));
    debugging.register("watch_stream_total", "Total number of watch streams.", gauge(stats.store.streams as i64));
    // etcd: watchable_store.go syncWatchersLoop sets it to the unsynced watchers and victims.
    debugging.register(
        "slow_watcher_total",
        "Total number of unsynced slow watchers.",
        gauge((stats.syncer.unsynced + stats.victims.victims) as i64),
    );
    debugging.register("events", "Total number of events sent by this member.", counter(stats.events_sent));

    let disk = store_config.disk_stats();
    let disk_registry = root.sub_registry_with_prefix("etcd_disk");
    disk_registry.register(
        "wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        ReadHistogram(disk.journal_sync.snapshot()),
    );
    disk_registry.register(
        "backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        ReadHistogram(disk.commit.snapshot()),
    );
}

/// What Prometheus' process collector reports for every Go program, etcd included:
/// `process_cpu_seconds_total`, `_resident_memory_bytes`, `_virtual_memory_bytes`,
/// `_virtual_memory_max_bytes`, `_open_fds`, `_max_fds`, `_start_time_seconds` (and etcd's own
/// `os_fd_used` and `os_fd_limit`). A value `/proc` does not give is left out, as that
/// collector leaves it.
#[cfg(target_os = "linux")]
fn register_process(root: &mut Registry) {
    use procfs::process::{LimitValue, Process};

    let Ok(me) = Process::myself() else { return };
    let limit = |value: LimitValue| match value {
        LimitValue::Unlimited => f64::from(u32::MAX) * f64::from(u32::MAX) + 2.0 * f64::from(u32::MAX),
        LimitValue::Value(v) => v as f64,
    };
    let process = root.sub_registry_with_prefix("process");
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second().max(1) as f64;
        let cpu = Counter::<f64, AtomicU64>::default();
        cpu.inc_by((stat.utime + stat.stime) as f64 / ticks);
        process.register("cpu_seconds", "Total user and system CPU time spent in seconds.", cpu);
        let resident = stat.rss.saturating_mul(procfs::page_size());
        process.register("resident_memory_bytes", "Resident memory size in bytes.", gauge_f64(resident as f64));
        process.register("virtual_memory_bytes", "Virtual memory size in bytes.", gauge_f64(stat.vsize as f64));
        if let Ok(boot) = procfs::boot_time_secs() {
            let started = boot as f64 + stat.starttime as f64 / ticks;
            process.register(
                "start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                gauge_f64(started),
            );
        }
    }
    let limits = me.limits().ok();
    if let Some(limits) = &limits {
        process.register(
            "virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            gauge_f64(limit(limits.max_address_space.soft_limit)),
        );
    }
    let open = me.fd_count().ok();
    if let Some(open) = open {
        process.register("open_fds", "Number of open file descriptors.", gauge_f64(open as f64));
    }
    if let Some(limits) = &limits {
        process.register(
            "max_fds",
            "Maximum number of open file descriptors.",
            gauge_f64(limit(limits.max_open_files.soft_limit)),
        );
    }
    let os = root.sub_registry_with_prefix("os");
    if let Some(open) = open {
        os.register("fd_used", "The number of used file descriptors.", gauge(open as i64));
    }
    if let Some(limits) = &limits {
        os.register("fd_limit", "The file descriptor limit.", gauge_f64(limit(limits.max_open_files.soft_limit)));
    }
}
