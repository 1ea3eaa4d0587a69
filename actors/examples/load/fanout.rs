//! Scenario 2: watch fan-out. `--streams` streams of `--watchers-per-stream` watchers on one
//! prefix, `--rate` puts/s for `--duration-secs` s, a drain, then every watcher's tally.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::drain::{drain, Received};
use crate::http::{http_client_timeout, post, put_body, watchkv_metrics};
use crate::sampling::{Cpu, CpuSpan, Perf};
use crate::server::{Kind, Server};
use crate::tally::count_put;
use crate::watch_stream::{watch_stream, Shared, StreamCfg, StreamResult};

/// Scenario 2's results.
#[derive(Debug, Default, Clone)]
pub struct S2 {
    pub watchers_wanted: u64,
    pub watchers_created: u64,
    pub setup_secs: f64,
    pub failed_streams: u64,
    pub first_stream_error: Option<String>,
    pub puts_sent: u64,
    pub puts_acked: u64,
    pub put_errors: u64,
    pub first_put_error: Option<String>,
    pub put_rate: f64,
    pub put_lat_us: Vec<u64>,
    pub events_expected: u64,
    pub events_received: u64,
    pub events_per_s: f64,
    pub ev_lat_us: Vec<u64>,
    pub watchers_exact: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    pub canceled: u64,
    pub drain_secs: f64,
    pub drain_timed_out: bool,
    pub cpu: Cpu,
}

pub async fn scenario_fanout(args: &Args, server: &Server, tck: f64) -> S2 {
    let mut out = S2 { watchers_wanted: (args.streams * args.watchers_per_stream) as u64, ..S2::default() };
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().expect("loopback address");
    let total_puts = (args.rate * args.duration_secs) as usize;
    let epoch = Instant::now();
    let cfg = Rc::new(StreamCfg {
        addr,
        host: addr.to_string(),
        watchers: args.watchers_per_stream,
        prefix: b"/fan/".to_vec(),
        max_seq: total_puts,
        epoch,
        setup_deadline: epoch + Duration::from_secs(20),
    });
    let shared = Rc::new(Shared::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let streams: Vec<_> = (0..args.streams)
        .map(|_| actix_rt::spawn(watch_stream(cfg.clone(), shared.clone(), stop_rx.clone())))
        .collect();

    // All watchers created (or a stream failed, or the setup deadline passed).
    while shared.created.get() < out.watchers_wanted
        && shared.failed_streams.get() == 0
        && Instant::now() < cfg.setup_deadline + Duration::from_millis(100)
    {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    out.setup_secs = epoch.elapsed().as_secs_f64();
    out.watchers_created = shared.created.get();

    let mut put_handles = Vec::new();
    let mut span = None;
    let mut perf = None;
    let mut put_start = Instant::now();
    let mut last_send = put_start;
    if out.watchers_created == out.watchers_wanted && shared.failed_streams.get() == 0 {
        perf = Some(Perf::start(args, server, "s2"));
        span = Some(CpuSpan::start(server.pid));
        // A long timeout, so that slow puts show as latency rather than as errors.
        let client = http_client_timeout(256, Duration::from_secs(30));
        let url: Rc<str> = format!("{}/v3/kv/put", server.base).into();
        // Warm the put connections (not measured; the key is outside the watched prefix).
        let _ = post(&client, &url, put_body(b"/warm/fan", b"x")).await;
        let mut tick = actix_rt::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        put_start = Instant::now();
        let end_by = put_start + Duration::from_secs(args.duration_secs + 5);
        for seq in 0..total_puts {
            tick.tick().await;
            if Instant::now() > end_by {
                break;
            }
            let (client, url) = (client.clone(), url.clone());
            let sent_us = epoch.elapsed().as_micros() as u64;
            last_send = Instant::now();
            let body = put_body(format!("/fan/{seq:08}").as_bytes(), format!("{seq}:{sent_us}").as_bytes());
            put_handles.push(actix_rt::spawn(async move {
                let t = Instant::now();
                let r = post(&client, &url, body).await;
                (seq, r, t.elapsed().as_micros() as u64)
            }));
        }
    }
    out.puts_sent = put_handles.len() as u64;
    let mut acked = vec![false; total_puts];
    for h in futures::future::join_all(put_handles).await {
        match h {
            Ok((seq, Ok(()), us)) => {
                acked[seq] = true;
                out.puts_acked += 1;
                out.put_lat_us.push(us);
            }
            Ok((_, Err(e), _)) => {
                out.put_errors += 1;
                out.first_put_error.get_or_insert(e);
            }
            Err(e) => {
                out.put_errors += 1;
                out.first_put_error.get_or_insert(e.to_string());
            }
        }
    }
    out.put_rate = if out.puts_sent > 1 {
        (out.puts_sent - 1) as f64 / (last_send - put_start).as_secs_f64().max(1e-9)
    } else {
        0.0
    };

    if server.kind == Kind::Watchkv {
        println!("[watchkv] metrics after the last put was answered: {}", watchkv_metrics(server).await);
    }

    out.events_expected = out.puts_acked * out.watchers_created;
    let most = out.puts_sent * out.watchers_created;
    let received = || Received {
        events: shared.events.get(),
        last_event: shared.last_event.get(),
        failed_streams: shared.failed_streams.get(),
    };
    (out.drain_timed_out, out.drain_secs) =
        drain(received, out.events_expected, most, Duration::from_secs(args.drain_timeout_secs)).await;
    if let Some(span) = span {
        out.cpu = span.end(tck);
    }
    drop(perf);
    if server.kind == Kind::Watchkv {
        println!("[watchkv] metrics after the drain: {}", watchkv_metrics(server).await);
    }
    let last_event = shared.last_event.get();
    let _ = stop_tx.send(true);

    let mut results = Vec::new();
    for s in streams {
        if let Ok(Ok(r)) = actix_rt::time::timeout(Duration::from_secs(5), s).await {
            results.push(r);
        }
    }
    out.failed_streams = shared.failed_streams.get();
    for r in results {
        out.tally(r, &acked);
    }
    out.events_received = out.ev_lat_us.len() as u64;
    out.ev_lat_us.sort_unstable();
    out.put_lat_us.sort_unstable();
    if let Some(last) = last_event {
        out.events_per_s =
            out.events_received as f64 / last.saturating_duration_since(put_start).as_secs_f64().max(1e-9);
    }
    out
}

impl S2 {
    /// Adds one stream's findings; `acked[seq]` is whether put `seq` was acknowledged.
    fn tally(&mut self, mut r: StreamResult, acked: &[bool]) {
        self.ev_lat_us.append(&mut r.lat_us);
        self.out_of_order += r.out_of_order.iter().sum::<u64>();
        self.unexpected += r.unexpected + r.non_put;
        self.canceled += r.canceled;
        if self.first_stream_error.is_none() {
            self.first_stream_error = r.error.take();
        }
        // Events of an unknown watch id belong to no watcher: none of the stream's is exact.
        let attributed = r.unattributed == 0;
        for (w, counts) in r.counts.iter().enumerate() {
            let ooo = r.out_of_order.get(w).copied().unwrap_or(0);
            let foreign = r.foreign.get(w).copied().unwrap_or(0);
            let mut exact = attributed && ooo == 0 && foreign == 0;
            for (seq, &c) in counts.iter().enumerate() {
                let acked = acked.get(seq).copied().unwrap_or(false);
                exact &= count_put(u64::from(c), acked, &mut self.missing, &mut self.duplicates, &mut self.unexpected);
            }
            if exact {
                self.watchers_exact += 1;
            }
        }
    }
}
