//! Section `mailbox`: put throughput with and without one stream whose client stops reading, in
//! paired phases.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_rt::{Arbiter, ArbiterHandle};
use criterion::Criterion;
use watchkv::KeyRange;
use watchkv_actors::stream_actor::StreamActor;

use crate::harness::{counting_streams, create, wait_stats, Bench};
use crate::mode::{scale, selected};
use crate::probe::{spawn_pipelined, Probe};
use crate::report::{commit_time, fmt_rate, loadavg, median, note, verdict};
use crate::sinks::{Progress, StallingSink};

/// The write rates of one mailbox phase.
struct Phase {
    seq: f64,
    pipelined: f64,
    /// Mean store commit time per write batch over the phase.
    commit: String,
}

/// Runs one phase of puts from `writer`: sequential, then pipelined; waits until every reading
/// stream has counted its events.
fn mailbox_phase(b: &Bench, writer: &ArbiterHandle, fast: &Progress, readers: u64, puts: &mut u64) -> Phase {
    let s = scale();
    let st0 = b.block_on(b.handle.stats()).expect("stats");
    let lat = b.probe(writer, Probe::spread("mp", s.mp_seq_puts));
    let seq = lat.len() as f64 / lat.iter().sum::<Duration>().as_secs_f64();
    *puts += lat.len() as u64;
    let d = b.block_on(spawn_pipelined(&b.handle, writer, "mp", s.mp_tasks, s.mp_task_puts)).expect("writer");
    let pipelined = (s.mp_tasks * s.mp_task_puts) as f64 / d.as_secs_f64();
    *puts += (s.mp_tasks * s.mp_task_puts) as u64;
    b.block_on(fast.wait_events(readers * *puts));
    let st1 = b.block_on(b.handle.stats()).expect("stats");
    Phase { seq, pipelined, commit: commit_time(&st0, &st1) }
}

pub fn mailbox(_: &mut Criterion) {
    if !selected("mailbox") {
        return;
    }
    let s = scale();
    note(format!("[mailbox] load average at start: {}", loadavg()));
    let b = Bench::start();
    let writer = Arbiter::new();
    let fast = Progress::new();
    let slow = Progress::new();
    // `true` = the slow stream's client does not read: its sends wait until this turns false.
    let (stall, stalled) = tokio::sync::watch::channel(false);
    let range = KeyRange::prefix("mp/");
    let _streams: Vec<Addr<StreamActor>> = b.block_on(async {
        let mut streams = counting_streams(&b.handle, &fast, s.mp_streams - 1);
        streams.push(b.handle.open_stream(Arc::new(StallingSink { progress: Arc::clone(&slow), stalled })));
        for st in &streams {
            create(st, &range, 0);
        }
        fast.wait_created((s.mp_streams - 1) as u64).await;
        slow.wait_created(1).await;
        wait_stats(&b.handle, "synced", |st| st.store.synced == s.mp_streams).await;
        streams
    });
    let readers = (s.mp_streams - 1) as u64;
    let mut puts = 0u64;
    let (mut normal, mut stalled_phases) = (Vec::new(), Vec::new());
    let mut parked = Vec::new();
    // Alternate the two configurations in one system so that drift (store growth, other load on
    // the machine) hits both alike, in the order ABBA ABBA ... so that whatever a phase leaves
    // behind for the next one (a released client reading its backlog, the journal) does too.
    for round in 0..s.mp_rounds {
        for stalled_now in if round % 2 == 0 { [false, true] } else { [true, false] } {
            if !stalled_now {
                normal.push(mailbox_phase(&b, &writer.handle(), &fast, readers, &mut puts));
                b.block_on(slow.wait_events(puts));
                continue;
            }
            stall.send_replace(true);
            let before = b.block_on(b.handle.stats()).expect("stats");
            stalled_phases.push(mailbox_phase(&b, &writer.handle(), &fast, readers, &mut puts));
            let st = b.block_on(async {
                // Let the victim actor retry a few times.
                actix_rt::time::sleep(Duration::from_millis(50)).await;
                b.handle.stats().await.expect("stats")
            });
            parked.push((st, st.write_batches - before.write_batches));
            // Release the client: it reads its backlog and its watcher is synced again.
            stall.send_replace(false);
            b.block_on(slow.wait_events(puts));
            b.block_on(wait_stats(&b.handle, "slow stream synced again", |st| {
                st.store.synced == s.mp_streams && st.victims.victims == 0 && st.syncer.unsynced == 0
            }));
        }
    }
    let seq = |v: &[Phase]| v.iter().map(|p| p.seq).collect::<Vec<_>>();
    let pip = |v: &[Phase]| v.iter().map(|p| p.pipelined).collect::<Vec<_>>();
    let list = |v: &[f64]| v.iter().map(|r| fmt_rate(*r)).collect::<Vec<_>>().join(", ");
    for (label, phases) in [("no slow stream", &normal), ("1 stalled stream", &stalled_phases)] {
        note(format!(
            "[mailbox] {label} ({} streams on one prefix): {} sequential puts: {} (median {}); {}x{} pipelined puts: {} (median {}); store commit time per batch: {}",
            s.mp_streams,
            s.mp_seq_puts,
            list(&seq(phases)),
            fmt_rate(median(&seq(phases))),
            s.mp_tasks,
            s.mp_task_puts,
            list(&pip(phases)),
            fmt_rate(median(&pip(phases))),
            phases.iter().map(|p| p.commit.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    for (i, (st, batches)) in parked.iter().enumerate() {
        note(format!(
            "[mailbox] end of stalled phase {}: synced {}, victims {}, victims.parked_bytes {} B, unsynced {}; {} write batches in the phase",
            i + 1,
            st.store.synced,
            st.victims.victims,
            st.victims.parked_bytes,
            st.syncer.unsynced,
            batches
        ));
    }
    // Each stalled phase against the normal phase of its round: drift within the run (a
    // phase's throughput moved 2x over seconds) cancels within a pair. With an odd number of
    // rounds one order has one pair more; the median does not care.
    let paired =
        |f: fn(&Phase) -> f64| normal.iter().zip(&stalled_phases).map(|(n, st)| f(st) / f(n)).collect::<Vec<_>>();
    let (seq_pairs, pip_pairs) = (paired(|p| p.seq), paired(|p| p.pipelined));
    let ratios = |v: &[f64]| v.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ");
    let (seq_ratio, pip_ratio) = (median(&seq_pairs), median(&pip_pairs));
    note(format!(
        "[mailbox] throughput with 1 stalled stream / without, median of {} paired phases: sequential {seq_ratio:.3} ({}), pipelined {pip_ratio:.3} ({}) (target: cost < 10%, i.e. ratio > 0.9): {}",
        seq_pairs.len(),
        ratios(&seq_pairs),
        ratios(&pip_pairs),
        verdict(seq_ratio > 0.9 && pip_ratio > 0.9)
    ));
    note(format!("[mailbox] load average at end: {}", loadavg()));
    b.stop();
    writer.stop();
}
