//! The watch-guarantee checker (`watchkv_actors::testing::checker`) checked itself: it accepts
//! a good stream and rejects each kind of broken one, naming the guarantee. The runtime's own
//! tests and an embedder's rely on it to find what they do not look for by hand.

use std::sync::Arc;

use watchkv::watch::response::WatchResponse;
use watchkv::watch::watcher::Filters;
use watchkv::{Event, EventKind, KeyRange, KeyValue};
use watchkv_actors::testing::checker::{check_stream_reports, End};
use watchkv_actors::testing::History;
use watchkv_actors::WatchCreate;

/// Builds a consistent history: each inner slice is one revision (from 2) of
/// (key, Some(value)) puts and (key, None) deletes.
fn history(revs: &[&[(&str, Option<&str>)]]) -> Vec<Arc<Event>> {
    let mut state: std::collections::HashMap<String, KeyValue> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, changes) in revs.iter().enumerate() {
        let rev = i as i64 + 2;
        for (key, value) in changes.iter() {
            let prev = state.get(*key).cloned();
            let event = match value {
                Some(v) => {
                    let kv = KeyValue {
                        key: key.as_bytes().to_vec(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        value: v.as_bytes().to_vec(),
                        lease: 0,
                    };
                    state.insert(key.to_string(), kv.clone());
                    Event::new(EventKind::Put, kv, prev)
                }
                None => {
                    state.remove(*key);
                    let kv = KeyValue { key: key.as_bytes().to_vec(), mod_revision: rev, ..KeyValue::default() };
                    Event::new(EventKind::Delete, kv, prev)
                }
            };
            out.push(Arc::new(event));
        }
    }
    out
}

/// rev 2: a=1 b=1 | 3: a=2 | 4: c=1 | 5: del a, b=2 | 6: a=3
fn sample() -> (Vec<Arc<Event>>, History) {
    let evs = history(&[
        &[("a", Some("1")), ("b", Some("1"))],
        &[("a", Some("2"))],
        &[("c", Some("1"))],
        &[("a", None), ("b", Some("2"))],
        &[("a", Some("3"))],
    ]);
    let h = History::from_events(evs.clone()).expect("valid history");
    (evs, h)
}

fn at(evs: &[Arc<Event>], rev: i64, key: &str) -> Arc<Event> {
    evs.iter().find(|e| e.kv.mod_revision == rev && e.kv.key == key.as_bytes()).cloned().expect("event")
}

fn events(id: i64, header: i64, evs: Vec<Arc<Event>>) -> WatchResponse {
    WatchResponse::events(id, header, evs, false)
}

/// A watcher on [a, c) from revision 2.
fn ab_from_2() -> WatchCreate {
    WatchCreate::new(&KeyRange::interval("a", "c"), 2)
}

fn good_stream(evs: &[Arc<Event>]) -> Vec<WatchResponse> {
    vec![
        WatchResponse::created(0, 6),
        events(0, 6, vec![at(evs, 2, "a"), at(evs, 2, "b"), at(evs, 3, "a")]),
        events(0, 6, vec![at(evs, 5, "a"), at(evs, 5, "b")]),
        WatchResponse::progress(-1, 5),
        events(0, 6, vec![at(evs, 6, "a")]),
        WatchResponse::progress(-1, 6),
    ]
}

fn rejects(why: &str, creates: &[WatchCreate], stream: &[WatchResponse], want: &str) {
    let (_, h) = sample();
    match check_stream_reports(&h, creates, stream) {
        Ok(r) => panic!("{why}: accepted ({r:?})"),
        Err(e) => assert!(e.contains(want), "{why}: rejected for the wrong reason: {e}"),
    }
}

#[test]
fn accepts_a_good_stream() {
    let (evs, h) = sample();
    let reports = check_stream_reports(&h, &[ab_from_2()], &good_stream(&evs)).expect("good stream");
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].events, reports[0].last_observed(), reports[0].end.clone()), (6, 6, End::Active));

    // Filters, prev_kv, fragments, a compaction notice and a cancel are fine too.
    let mut noput = WatchCreate::new(&KeyRange::single("a"), 3);
    noput.filters = Filters { no_put: true, no_delete: false };
    noput.prev_kv = true;
    let mut frag = WatchCreate::new(&KeyRange::all(), 0);
    frag.fragment = true;
    let mut piece = events(2, 2, vec![at(&evs, 2, "a")]);
    piece.fragment = true;
    let stream = vec![
        WatchResponse::created(0, 6),
        WatchResponse::created(1, 6),
        WatchResponse::created(2, 1),
        piece,
        events(2, 2, vec![at(&evs, 2, "b")]),
        WatchResponse::events(0, 6, vec![at(&evs, 5, "a")], true),
        WatchResponse::compacted(1, 4),
        WatchResponse::canceled(2, 6, ""),
        WatchResponse::canceled(0, 6, ""),
    ];
    let creates = [noput, WatchCreate::new(&KeyRange::single("c"), 2), frag];
    let reports = check_stream_reports(&h, &creates, &stream).expect("good stream");
    let ends: Vec<End> = reports.iter().map(|r| r.end.clone()).collect();
    assert_eq!(ends, vec![End::Canceled, End::Compacted(4), End::Canceled]);
}

#[test]
fn rejects_a_gap() {
    let (evs, _) = sample();
    let mut s = good_stream(&evs);
    s[1] = events(0, 6, vec![at(&evs, 2, "a"), at(&evs, 2, "b")]); // 3/a missing
    rejects("gap", &[ab_from_2()], &s, "Reliable");
}

#[test]
fn rejects_a_gap_at_the_end_seen_through_progress() {
    let (evs, _) = sample();
    let mut s = good_stream(&evs);
    s.remove(4); // 6/a never arrives, then progress 6
    rejects("gap before progress", &[ab_from_2()], &s, "never delivered");
}

#[test]
fn rejects_a_duplicate() {
    let (evs, _) = sample();
    let mut s = good_stream(&evs);
    s[2] = events(0, 6, vec![at(&evs, 5, "a"), at(&evs, 5, "b"), at(&evs, 5, "b")]);
    rejects("duplicate", &[ab_from_2()], &s, "Unique");
}

#[test]
fn rejects_out_of_order() {
    let (evs, _) = sample();
    let mut s = good_stream(&evs);
    s.insert(3, events(0, 6, vec![at(&evs, 3, "a")]));
    rejects("out of order", &[ab_from_2()], &s, "Ordered");
}

#[test]
fn rejects_a_split_revision() {
    let (evs, _) = sample();
    let mut s = good_stream(&evs);
    s[2] = events(0, 5, vec![at(&evs, 5, "a")]);
    s.insert(3, events(0, 5, vec![at(&evs, 5, "b")]));
    rejects("split", &[ab_from_2()], &s, "Atomic");
}

#[test]
fn rejects_progress_overtaking_events() {
    let (evs, _) = sample();
    let mut s = good_stream(&evs);
    // Progress 6 arrives before the event of 6.
    s.swap(4, 5);
    rejects("progress first", &[ab_from_2()], &s, "Bookmarkable");
    // A progress that goes back.
    let mut s = good_stream(&evs);
    s.push(WatchResponse::progress(-1, 5));
    rejects("progress back", &[ab_from_2()], &s, "Bookmarkable");
}

#[test]
fn rejects_a_wrong_first_event() {
    let (evs, _) = sample();
    let mut s = good_stream(&evs);
    s[1] = events(0, 6, vec![at(&evs, 3, "a")]); // resumed at 3, not 2
    rejects("resume", &[ab_from_2()], &s, "Resumable");
}

#[test]
fn rejects_filter_prev_kv_and_create_violations() {
    let (evs, _) = sample();
    let mut noput = WatchCreate::new(&KeyRange::single("a"), 2);
    noput.filters = Filters { no_put: true, no_delete: false };
    let s = vec![WatchResponse::created(0, 6), events(0, 6, vec![at(&evs, 2, "a")])];
    rejects("noput", &[noput], &s, "Filter");

    // prev_kv flag without asking.
    let s = vec![WatchResponse::created(0, 6), WatchResponse::events(0, 6, vec![at(&evs, 3, "a")], true)];
    rejects("prev_kv flag", &[WatchCreate::new(&KeyRange::single("a"), 3)], &s, "PrevKV");

    // A wrong prev_kv.
    let mut wrong = (*at(&evs, 3, "a")).clone();
    wrong.prev_kv.as_mut().expect("prev").value = b"zzz".to_vec();
    let mut with_prev = WatchCreate::new(&KeyRange::single("a"), 3);
    with_prev.prev_kv = true;
    let s = vec![WatchResponse::created(0, 6), WatchResponse::events(0, 6, vec![Arc::new(wrong)], true)];
    rejects("prev_kv value", &[with_prev], &s, "PrevKV");

    // A PUT of an existing key dressed as a create.
    let mut fake = (*at(&evs, 3, "a")).clone();
    fake.kv.create_revision = 3;
    fake.kv.version = 1;
    let s = vec![WatchResponse::created(0, 6), events(0, 6, vec![Arc::new(fake)])];
    rejects("is create", &[WatchCreate::new(&KeyRange::single("a"), 3)], &s, "differs from the history");
    let bad = History::from_events(history(&[&[("a", Some("1"))], &[("a", None)], &[("a", None)]]));
    assert!(bad.is_err_and(|e| e.contains("absent")), "a history deleting an absent key");
}

#[test]
fn rejects_events_after_cancel_and_undeserved_compaction() {
    let (evs, _) = sample();
    let s = vec![WatchResponse::created(0, 6), WatchResponse::canceled(0, 6, ""), events(0, 6, vec![at(&evs, 6, "a")])];
    rejects("after cancel", &[WatchCreate::new(&KeyRange::single("a"), 0)], &s, "not live");
    // Start 5 and compact revision 5: the watcher needed nothing below it.
    let s = vec![WatchResponse::created(0, 6), WatchResponse::compacted(0, 5)];
    rejects("undeserved compaction", &[WatchCreate::new(&KeyRange::single("a"), 5)], &s, "compaction notice");
}
