//! Watch response lines of the gateway: a one-pass scanner for the common case (created watchers
//! and PUT events) and serde for everything else, both reduced to [`LineInfo`].

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;

fn de_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an int64 as a number or a string")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(E::custom)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i64, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    result: Option<WResp<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WResp<'a> {
    #[serde(default, deserialize_with = "de_i64")]
    watch_id: i64,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: Option<String>,
    #[serde(borrow, default)]
    events: Vec<WEvent<'a>>,
}

#[derive(Deserialize)]
struct WEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kv: WKv<'a>,
}

#[derive(Deserialize)]
struct WKv<'a> {
    #[serde(default, deserialize_with = "de_i64")]
    mod_revision: i64,
    #[serde(borrow, default)]
    value: Cow<'a, str>,
}

/// One response line, as the stream task needs it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LineInfo {
    pub error: Option<String>,
    pub watch_id: i64,
    pub created: bool,
    pub canceled: bool,
    pub cancel_reason: String,
    pub events: Vec<EvInfo>,
}

/// One event: PUT or not, its revision, and the (sequence, send time) its value carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvInfo {
    pub put: bool,
    pub mod_rev: i64,
    pub payload: Option<(usize, u64)>,
}

/// Decodes a `seq:sent_us` value from base64 without allocating.
fn decode_payload(b64: &str) -> Option<(usize, u64)> {
    let mut buf = [0u8; 64];
    let n = B64.decode_slice(b64.as_bytes(), &mut buf).ok()?;
    let (a, b) = std::str::from_utf8(&buf[..n]).ok()?.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Reads a response line in one pass over its quotes, picking out the few fields it needs
/// (both servers write proto field names; base64 and numbers need no escapes). Returns false
/// for anything it does not fully understand (an error line, a canceled watcher, a non-PUT
/// event, escapes, a kv without a revision): serde decides those.
pub fn scan_line(line: &str, out: &mut LineInfo) -> bool {
    *out = LineInfo { events: std::mem::take(&mut out.events), ..LineInfo::default() };
    out.events.clear();
    if line.contains('\\') {
        return false;
    }
    let b = line.as_bytes();
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    let (mut saw_result, mut in_events, mut kvs) = (false, false, 0usize);
    let mut cur: Option<(Option<i64>, Option<&str>)> = None;
    let flush = |cur: &mut Option<(Option<i64>, Option<&str>)>, events: &mut Vec<EvInfo>| -> bool {
        match cur.take() {
            None => true,
            Some((Some(mod_rev), value)) => {
                events.push(EvInfo { put: true, mod_rev, payload: value.and_then(decode_payload) });
                true
            }
            Some((None, _)) => false,
        }
    };
    let mut i = 0;
    while let Some(q) = line[i..].find('"') {
        let ks = i + q + 1;
        let Some(kl) = line[ks..].find('"') else {
            return false;
        };
        let ke = ks + kl;
        let mut j = skip_ws(ke + 1);
        if b.get(j) != Some(&b':') {
            i = ke + 1; // a string value, not a key
            continue;
        }
        j = skip_ws(j + 1);
        let (val, next) = match b.get(j) {
            Some(b'"') => {
                let Some(vl) = line[j + 1..].find('"') else {
                    return false;
                };
                (&line[j + 1..j + 1 + vl], j + vl + 2)
            }
            Some(b'{' | b'[') => ("", j + 1),
            Some(_) => {
                let end = line[j..].find([',', '}', ']', ' ', '\n', '\r']).map_or(line.len(), |e| j + e);
                (&line[j..end], end)
            }
            None => return false,
        };
        match &line[ks..ke] {
            "result" => saw_result = true,
            "error" | "type" | "prev_kv" => return false,
            "canceled" if val == "true" => return false,
            "watch_id" if !in_events => match val.parse() {
                Ok(v) => out.watch_id = v,
                Err(_) => return false,
            },
            "created" if !in_events => out.created = val == "true",
            "events" => in_events = true,
            "kv" if in_events => {
                if !flush(&mut cur, &mut out.events) {
                    return false;
                }
                kvs += 1;
                cur = Some((None, None));
            }
            "mod_revision" if in_events => match (val.parse(), cur.as_mut()) {
                (Ok(v), Some(c)) => c.0 = Some(v),
                _ => return false,
            },
            "value" if in_events => match cur.as_mut() {
                Some(c) => c.1 = Some(val),
                None => return false,
            },
            _ => {}
        }
        i = next;
    }
    flush(&mut cur, &mut out.events) && saw_result && kvs == out.events.len()
}

pub fn serde_line(line: &[u8], out: &mut LineInfo) -> Result<(), String> {
    let parsed: Line =
        serde_json::from_slice(line).map_err(|e| format!("bad line ({e}): {}", String::from_utf8_lossy(line)))?;
    *out = LineInfo { error: parsed.error.map(|e| e.to_string()), ..LineInfo::default() };
    let Some(r) = parsed.result else {
        return Ok(());
    };
    out.watch_id = r.watch_id;
    out.created = r.created;
    out.canceled = r.canceled;
    out.cancel_reason = r.cancel_reason.unwrap_or_default();
    out.events = r
        .events
        .iter()
        .map(|ev| EvInfo {
            put: ev.kind.as_deref().is_none_or(|k| k == "PUT"),
            mod_rev: ev.kv.mod_revision,
            payload: decode_payload(&ev.kv.value),
        })
        .collect();
    Ok(())
}
