//! The writer of grpc-fanout: one `etcd_client` connection putting `--puts` values on the
//! `--keys` watched keys round robin (put `seq` on key `seq % keys`), `--in-flight` at a time (or
//! paced at `--rate` with `--in-flight 0`); each value starts with its sequence number, whose
//! send time goes into `Shared::sent_us`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use etcd_client::{Client, KvClient};

use crate::args::Args;
use crate::grpc_watch::Shared;

/// What the writer did.
#[derive(Debug, Default)]
pub struct Written {
    /// Whether put `seq` was acknowledged.
    pub acked: Vec<bool>,
    pub sent: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub lat_us: Vec<u64>,
    pub start: Option<Instant>,
    pub last_send: Option<Instant>,
    pub timed_out: bool,
}

/// Connects the writer and makes one put outside the watched key (not measured).
pub async fn connect_writer(base: &str) -> Result<KvClient, String> {
    let client = actix_rt::time::timeout(Duration::from_secs(10), Client::connect([base], None))
        .await
        .map_err(|_| "writer connect timed out".to_string())?
        .map_err(|e| format!("writer connect: {e}"))?;
    let mut kv = client.kv_client();
    kv.put("/warm/grpcfan", "x", None).await.map_err(|e| format!("warm-up put: {e}"))?;
    Ok(kv)
}

/// A value that starts with its sequence number (see `grpc_watch::parse_seq`), padded to `size`.
pub fn value_of(seq: usize, size: usize) -> Vec<u8> {
    let mut v = format!("{seq:010}").into_bytes();
    v.resize(size.max(v.len()), b'.');
    v
}

/// Sends every put and waits for their answers (bounded by `--grpc-put-timeout-secs`).
pub async fn write_all(args: &Args, kv: KvClient, keys: Vec<Vec<u8>>, epoch: Instant, shared: Rc<Shared>) -> Written {
    let total = shared.sent_us.len();
    let out = Rc::new(RefCell::new(Written { acked: vec![false; total], ..Written::default() }));
    let start = Instant::now();
    out.borrow_mut().start = Some(start);
    let deadline = start + Duration::from_secs(args.grpc_put_timeout_secs);
    let keys: Rc<[Vec<u8>]> = keys.into();
    let (size, next) = (args.value_size, Rc::new(Cell::new(0usize)));
    // One put: records its send time first, so that its events always find it.
    let put = {
        let (out, shared) = (out.clone(), shared.clone());
        move |mut kv: KvClient, seq: usize| {
            let (out, shared, keys) = (out.clone(), shared.clone(), keys.clone());
            async move {
                shared.sent_us[seq].set(epoch.elapsed().as_micros() as u64);
                let t = Instant::now();
                out.borrow_mut().last_send = Some(t);
                let r = kv.put(keys[seq % keys.len()].clone(), value_of(seq, size), None).await;
                let mut o = out.borrow_mut();
                match r {
                    Ok(_) => {
                        o.acked[seq] = true;
                        o.lat_us.push(t.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        o.errors += 1;
                        o.first_error.get_or_insert(e.to_string());
                    }
                }
            }
        }
    };
    let tasks: Vec<_> = if args.in_flight > 0 {
        (0..args.in_flight)
            .map(|_| {
                let (kv, next, put) = (kv.clone(), next.clone(), put.clone());
                actix_rt::spawn(async move {
                    loop {
                        let seq = next.get();
                        if seq >= total || Instant::now() >= deadline {
                            break;
                        }
                        next.set(seq + 1);
                        put(kv.clone(), seq).await;
                    }
                })
            })
            .collect()
    } else {
        let mut tick = actix_rt::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::with_capacity(total);
        for seq in 0..total {
            tick.tick().await;
            if Instant::now() >= deadline {
                break;
            }
            next.set(seq + 1);
            tasks.push(actix_rt::spawn(put(kv.clone(), seq)));
        }
        tasks
    };
    for t in tasks {
        let _ =
            actix_rt::time::timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(30), t)
                .await;
    }
    let mut o = out.take();
    o.sent = next.get() as u64;
    o.timed_out = next.get() < total;
    o.lat_us.sort_unstable();
    o
}
