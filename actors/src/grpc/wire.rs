//! Owns the Watch service's response encoding: a `WatchResponse` written as protobuf straight
//! from the core's response, each event's bytes made once per event and shared by every
//! watcher that receives it (`Event::encoded`), so a watcher's response costs its header,
//! `watch_id` and flags plus a copy of bytes already made. Protobuf fields concatenate, so a
//! response framed this way is byte for byte what prost writes for the same message (the tests
//! below check that).

use bytes::BufMut;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;
use watchkv::watch::response::WatchResponse;
use watchkv::{Event, WireForm};

use super::convert;
use crate::api::pb::etcdserverpb as pb;
use crate::api::Header;

/// The Watch service and its trait (`watch_server::Watch`), generated like etcd's other
/// services but with [`WatchCodec`] (see `build.rs`).
#[allow(clippy::default_constructed_unit_structs)]
pub mod service {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.Watch.rs"));
}

/// One response leaving a watch stream: the core's response and the identity to put in its
/// header. Encoded by [`encode_watch_response`], from `watch_body::WatchBody` (or from
/// [`WatchCodec`] for a compressed call).
#[derive(Debug, Clone)]
pub struct OutgoingWatchResponse {
    /// The server identity of the header.
    pub header: Header,
    /// The response.
    pub response: WatchResponse,
}

/// The Watch service's codec: requests are decoded by prost, responses written by
/// [`encode_watch_response`].
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = OutgoingWatchResponse;
    type Decode = pb::WatchRequest;
    type Encoder = WatchEncoder;
    type Decoder = WatchDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        WatchEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        WatchDecoder(ProstDecoder::default())
    }
}

/// Writes [`OutgoingWatchResponse`]s (see [`encode_watch_response`]).
#[derive(Debug, Default)]
pub struct WatchEncoder;

impl Encoder for WatchEncoder {
    type Item = OutgoingWatchResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        let header = item.header.at(item.response.revision);
        // Room for the whole response at once: written event by event, a large response grew
        // tonic's buffer by doubling, copying what it held each time (a quarter of the
        // encoder's copying with 4 KiB values: docs/benchmarks.md, "Large values").
        dst.reserve(item.response.encoded_len(header.encoded_len()));
        encode_watch_response(&header, &item.response, dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ENCODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }
}

/// The encode buffer a Watch stream starts with (tonic's default is 8 KiB): most responses are
/// a few hundred bytes, and a server with thousands of streams holds one buffer each.
const ENCODE_BUFFER_BYTES: usize = 2 * 1024;

/// Encoded bytes gathered before they go to h2 as one chunk (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// The decode buffer a Watch stream starts with (tonic's default is 8 KiB): watch requests
/// are a few dozen bytes.
const DECODE_BUFFER_BYTES: usize = 512;

/// Reads `WatchRequest`s with prost.
#[derive(Debug)]
pub struct WatchDecoder(ProstDecoder<pb::WatchRequest>);

impl Decoder for WatchDecoder {
    type Item = pb::WatchRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        self.0.decode(src)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(DECODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }
}

/// Writes `r` as an `etcdserverpb.WatchResponse` with `header`, in field-number order and
/// omitting default values, as prost does. Each event is written from its shared encoding.
pub fn encode_watch_response(header: &pb::ResponseHeader, r: &WatchResponse, buf: &mut impl BufMut) {
    use prost::encoding::{bool as boolean, int64, message, string};
    message::encode(1, header, buf);
    if r.watch_id != 0 {
        int64::encode(2, &r.watch_id, buf);
    }
    if r.created {
        boolean::encode(3, &true, buf);
    }
    if r.canceled {
        boolean::encode(4, &true, buf);
    }
    if r.compact_revision != 0 {
        int64::encode(5, &r.compact_revision, buf);
    }
    if !r.cancel_reason.is_empty() {
        string::encode(6, &r.cancel_reason, buf);
    }
    if r.fragment {
        boolean::encode(7, &true, buf);
    }
    for event in &r.events {
        buf.put_slice(event_field(event, r.prev_kv));
    }
}

/// The event as field 11 of a `WatchResponse` (tag, length, `mvccpb.Event`), made the first
/// time any watcher needs it: a watcher's response then costs one copy per event.
fn event_field(event: &Event, with_prev_kv: bool) -> &[u8] {
    let form = if with_prev_kv { WireForm::ProtobufFieldWithPrevKv } else { WireForm::ProtobufField };
    event.encoded(form, |e| {
        let message = convert::event(e, with_prev_kv).encode_to_vec();
        let mut field = Vec::with_capacity(message.len() + 6);
        encode_key(11, WireType::LengthDelimited, &mut field);
        encode_varint(message.len() as u64, &mut field);
        field.extend_from_slice(&message);
        field
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use watchkv::watch::response::Events;
    use watchkv::{EventKind, KeyValue};

    use super::*;

    fn kv(key: &[u8], value: &[u8], rev: i64) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: 2,
            mod_revision: rev,
            version: rev - 1,
            value: value.to_vec(),
            lease: 0,
        }
    }

    fn put(rev: i64, value: &[u8], prev: Option<KeyValue>) -> Arc<Event> {
        Arc::new(Event::new(EventKind::Put, kv(b"foo", value, rev), prev))
    }

    /// What prost writes for the same message, through the generated types.
    fn prost_bytes(h: Header, r: &WatchResponse) -> Vec<u8> {
        let message = pb::WatchResponse {
            header: Some(h.at(r.revision)),
            watch_id: r.watch_id,
            created: r.created,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: r.cancel_reason.clone(),
            fragment: r.fragment,
            events: r.events.iter().map(|e| convert::event(e, r.prev_kv)).collect(),
        };
        message.encode_to_vec()
    }

    fn ours(h: Header, r: &WatchResponse) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_watch_response(&h.at(r.revision), r, &mut buf);
        buf
    }

    fn cases() -> Vec<WatchResponse> {
        let big = vec![0xAB; 300];
        let prev = kv(b"foo", b"old", 4);
        let delete = Arc::new(Event::new(
            EventKind::Delete,
            KeyValue { key: b"foo".to_vec(), mod_revision: 9, ..KeyValue::default() },
            Some(prev.clone()),
        ));
        let leased =
            Arc::new(Event::new(EventKind::Put, KeyValue { lease: 0x7fff_ffff_ffff, ..kv(b"", b"", 10) }, None));
        let mut fragment = WatchResponse::events(3, 8, vec![put(7, &big, None), put(8, b"v", None)], false);
        fragment.fragment = true;
        vec![
            WatchResponse::created(0, 1),
            WatchResponse::created(7, 1 << 40),
            WatchResponse::create_failed("etcdserver: mvcc: required revision is a future revision", 3),
            WatchResponse::canceled(2, 5, ""),
            WatchResponse::canceled(2, 5, "watchkv: slow consumer: \"quoted\" ünïcode"),
            WatchResponse::compacted(4, 17),
            WatchResponse::progress(-1, 12),
            WatchResponse::progress(6, 0),
            WatchResponse::event(1, 5, put(5, b"bar", None), false),
            WatchResponse::event(1, 5, put(5, b"bar", Some(prev.clone())), true),
            WatchResponse::event(1, 5, put(5, b"bar", Some(prev)), false),
            WatchResponse::events(-9, 10, vec![put(6, &big, None), Arc::clone(&delete), leased], true),
            WatchResponse::events(9, 10, vec![delete], false),
            fragment,
            WatchResponse { events: Events::new(), ..WatchResponse::created(i64::MAX, i64::MAX) },
        ]
    }

    #[test]
    fn framing_is_byte_equal_to_prost() {
        let headers = [Header::default(), Header { cluster_id: u64::MAX, member_id: 1, raft_term: 300 }];
        for h in headers {
            for r in cases() {
                let bytes = ours(h, &r);
                assert_eq!(bytes, prost_bytes(h, &r), "{r:?}");
                // The size the runtime merges and fragments by is the size on the wire.
                let header_len = h.at(r.revision).encoded_len();
                assert_eq!(r.encoded_len(header_len), bytes.len(), "{r:?}");
            }
        }
    }

    #[test]
    fn an_event_is_encoded_once_and_shared_by_every_response() {
        let event = put(5, b"bar", Some(kv(b"foo", b"old", 4)));
        let a = WatchResponse::event(1, 5, Arc::clone(&event), false);
        let b = WatchResponse::event(2, 5, Arc::clone(&event), false);
        let with_prev = WatchResponse::event(3, 5, Arc::clone(&event), true);
        let h = Header::default();
        assert_eq!(ours(h, &a)[..], prost_bytes(h, &a)[..]);
        let first = event_field(&event, false).as_ptr();
        assert_eq!(ours(h, &b), prost_bytes(h, &b));
        assert_eq!(ours(h, &with_prev), prost_bytes(h, &with_prev));
        // The same cached bytes, not a second encoding; with prev_kv is a form of its own.
        assert_eq!(event_field(&event, false).as_ptr(), first);
        assert_ne!(event_field(&event, true), event_field(&event, false));
        // A decoded response is what the client sees.
        let decoded = pb::WatchResponse::decode(&ours(h, &with_prev)[..]).expect("valid protobuf");
        assert_eq!(decoded.events[0].prev_kv.as_ref().map(|kv| kv.value.as_slice()), Some(&b"old"[..]));
    }
}
