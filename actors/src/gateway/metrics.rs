//! Owns `GET /metrics`: the runtime's stats in Prometheus text format, read from every actor at
//! scrape time (watchers per group, victims, events sent, slow-watcher cancels, write latency),
//! and on a mirror its upstream watch (`watchkv_mirror_*`).

use std::sync::atomic::AtomicU64;

use actix_web::{web, HttpResponse};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Gateway;
use crate::mirror_status::UpstreamReport;

/// Renders the metrics.
pub async fn metrics(gw: web::Data<Gateway>) -> HttpResponse {
    let stats = match gw.handle.stats().await {
        Ok(s) => s,
        Err(e) => return HttpResponse::ServiceUnavailable().body(e.to_string()),
    };
    let mut registry = Registry::with_prefix("watchkv");
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
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
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
    if let Some(upstream) = gw.handle.upstream_status() {
        register_mirror(&mut registry, &upstream.report(gw.handle.upstream_applied()));
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &registry) {
        return HttpResponse::InternalServerError().body(e.to_string());
    }
    HttpResponse::Ok().content_type("application/openmetrics-text; version=1.0.0; charset=utf-8").body(out)
}

/// A mirror's upstream gauges (`crate::mirror_status`), as `watchkv_mirror_*`.
fn register_mirror(registry: &mut Registry, report: &UpstreamReport) {
    let mirror = registry.sub_registry_with_prefix("mirror");
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
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
