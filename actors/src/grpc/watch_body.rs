//! Owns etcd's `Watch` service as the server answers it ([`WatchService`]) and how a call's
//! responses become HTTP/2 data: [`serve`] runs the call as tonic's generated service would
//! (the request stream decoded by tonic, the service's own `watch`), and answers with a
//! [`WatchBody`], which frames each turn's ready responses into one chunk allocated at exactly
//! their size.
//!
//! Why (issue #14, peak memory of 1000 streams × 10 watchers on 10 keys over gRPC): tonic's
//! encoder keeps one growable buffer per call, and a `BytesMut` keeps the capacity it grew to
//! (each later buffer is at least as large), so every stream that once had a few responses
//! ready at the same time held 8–16 KiB for the rest of its life, idle or not, and a chunk
//! waiting in h2 held its whole buffer alive. heaptrack put 12.8 MiB of the saturated run's
//! 38.5 MiB heap peak there. Here a stream holds no buffer between turns, and a chunk in h2
//! holds only its own bytes.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use http_body::Frame;
use prost::Message;
use smallvec::SmallVec;
use tonic::body::Body;
use tonic::codec::{Codec, Streaming};
use tonic::codegen::{Body as HttpBody, BoxFuture, Service, StdError};
use tonic::server::NamedService;
use tonic::Status;

use super::watch::Responses;
use super::wire::service::watch_server::{Watch, WatchServer};
use super::wire::{encode_watch_response, OutgoingWatchResponse, WatchCodec};
use super::GrpcApi;
use crate::api::pb::etcdserverpb::ResponseHeader;

/// The path of etcd's one `Watch` method.
pub const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// Encoded bytes a turn gathers into one chunk before it hands the chunk to h2 (tonic's
/// default yield threshold, which the stream had before).
pub const CHUNK_BYTES: usize = 32 * 1024;

/// A gRPC message's prefix: the compressed flag and the length.
const MESSAGE_PREFIX: usize = 5;

/// etcd's `Watch` service: an uncompressed call of [`WATCH_PATH`] is answered by [`serve`],
/// anything else by tonic's generated service (an unknown method, a compressed call), whose
/// answers stay tonic's own. The client port's router and [`GrpcApi::routes`] both serve it.
#[derive(Clone)]
pub struct WatchService {
    api: GrpcApi,
    max_decoding: usize,
    generated: WatchServer<GrpcApi>,
}

impl WatchService {
    /// The service of `api`, its request messages limited to `max_decoding` bytes.
    pub fn new(api: &GrpcApi, max_decoding: usize) -> Self {
        let generated = WatchServer::new(api.clone()).max_decoding_message_size(max_decoding);
        Self { api: api.clone(), max_decoding, generated }
    }
}

impl NamedService for WatchService {
    const NAME: &'static str = WatchServer::<GrpcApi>::NAME;
}

impl<B> Service<http::Request<B>> for WatchService
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if takes(&request) {
            Box::pin(serve(self.api.clone(), self.max_decoding, request))
        } else {
            self.generated.call(request)
        }
    }
}

/// Whether [`serve`] takes `request`: a call of [`WATCH_PATH`] whose messages are not
/// compressed. Anything else goes to tonic's generated service, whose answers (an unknown
/// method, an unsupported `grpc-encoding`) stay tonic's own.
pub fn takes<B>(request: &http::Request<B>) -> bool {
    request.uri().path() == WATCH_PATH
        && request.headers().get("grpc-encoding").is_none_or(|encoding| encoding.as_bytes() == b"identity")
}

/// Runs one `Watch` call of `api`, its request messages limited to `max_decoding` bytes, as
/// tonic's generated `WatchServer` does for it, and answers with a [`WatchBody`].
pub async fn serve<B>(
    api: GrpcApi,
    max_decoding: usize,
    request: http::Request<B>,
) -> Result<http::Response<Body>, Infallible>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let request = request.map(|body| Streaming::new_request(WatchCodec.decoder(), body, None, Some(max_decoding)));
    let answer = match api.watch(tonic::Request::from_http(request)).await {
        Ok(response) => {
            // As tonic's `Response::into_http` and `Grpc::map_response` make it (the service
            // sets no metadata of its own).
            let (metadata, responses, extensions) = response.into_parts();
            let mut answer = http::Response::new(Body::new(WatchBody::new(responses)));
            *answer.version_mut() = http::Version::HTTP_2;
            *answer.headers_mut() = metadata.into_headers();
            *answer.extensions_mut() = extensions;
            answer.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
            answer
        }
        Err(status) => status.into_http(),
    };
    Ok(answer)
}

/// A `Watch` call's response body: each poll frames the responses ready then (up to
/// [`CHUNK_BYTES`]) into one chunk of exactly their size, and the call's status goes last in
/// the trailers, as tonic's encoder sends them.
pub struct WatchBody<S = Responses> {
    responses: S,
    /// The status to send in the trailers once the responses are done.
    finished: Option<Status>,
    /// The trailers have gone.
    ended: bool,
}

impl<S> WatchBody<S> {
    /// A body of `responses`.
    pub fn new(responses: S) -> Self {
        Self { responses, finished: None, ended: false }
    }
}

/// A response ready to go, with the header it goes with and its encoded length (without the
/// message prefix).
type Ready = (OutgoingWatchResponse, ResponseHeader, usize);

/// The responses a turn takes: a stream's queue holds at most 16 (`api::stream::SOCKET_BUFFER`).
type Turn = SmallVec<[Ready; 16]>;

/// The largest message gRPC's 4-byte length prefix can frame.
const MAX_MESSAGE_BYTES: usize = u32::MAX as usize;

/// tonic's refusal of a response too large to frame, ending the call (its encoder's
/// `finish_encoding`).
fn too_large(len: usize) -> Status {
    Status::resource_exhausted(format!("Cannot return body with more than 4GB of data but got {len} bytes"))
}

/// Writes `ready` as gRPC messages into one buffer of their size. Each message's length prefix
/// is the length actually written, patched in after it as tonic does, so the framing holds
/// whatever the precomputed sizes say (they only size the buffer).
fn chunk(ready: &[Ready]) -> Bytes {
    let total = ready.iter().map(|(_, _, len)| MESSAGE_PREFIX + len).sum();
    let mut buf = BytesMut::with_capacity(total);
    for (item, header, _) in ready {
        let start = buf.len();
        buf.put_bytes(0, MESSAGE_PREFIX);
        encode_watch_response(header, &item.response, &mut buf);
        let written = buf.len() - start - MESSAGE_PREFIX;
        // The gathering turned away anything over the limit (by its computed size, which
        // differs from the written one by at most a header's few bytes).
        let prefix = u32::try_from(written).unwrap_or(u32::MAX).to_be_bytes();
        buf[start + 1..start + MESSAGE_PREFIX].copy_from_slice(&prefix);
    }
    buf.freeze()
}

impl<S> HttpBody for WatchBody<S>
where
    S: Stream<Item = Result<OutgoingWatchResponse, Status>> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if this.finished.is_none() {
            let mut ready = Turn::new();
            let mut bytes = 0;
            while bytes < CHUNK_BYTES {
                match Pin::new(&mut this.responses).poll_next(cx) {
                    Poll::Ready(Some(Ok(item))) => {
                        let header = item.header.at(item.response.revision);
                        let len = item.response.encoded_len(header.encoded_len());
                        if len > MAX_MESSAGE_BYTES - 64 {
                            // One revision's events beyond what gRPC can frame (a watcher
                            // without `fragment`): the call ends, as tonic ends it, after what
                            // is already gathered.
                            this.finished = Some(too_large(len));
                            break;
                        }
                        bytes += MESSAGE_PREFIX + len;
                        ready.push((item, header, len));
                    }
                    Poll::Ready(Some(Err(status))) => {
                        this.finished = Some(status);
                        break;
                    }
                    Poll::Ready(None) => {
                        this.finished = Some(Status::ok(""));
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            // The responses ready go before the status, which waits for the next poll.
            if !ready.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(chunk(&ready)))));
            }
        }
        match this.finished.take() {
            Some(status) => {
                this.ended = true;
                let mut trailers = http::HeaderMap::new();
                Poll::Ready(Some(status.add_header(&mut trailers).map(|()| Frame::trailers(trailers))))
            }
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;
    use watchkv::watch::response::WatchResponse;
    use watchkv::{Event, EventKind, KeyValue};

    use super::*;
    use crate::api::pb::etcdserverpb as pb;
    use crate::api::Header;

    fn response(watch_id: i64, rev: i64, value_len: usize) -> OutgoingWatchResponse {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: rev,
            version: 1,
            value: vec![b'v'; value_len],
            lease: 0,
        };
        let event = Arc::new(Event::new(EventKind::Put, kv, None));
        let header = Header { cluster_id: 1, member_id: 2, raft_term: 3 };
        OutgoingWatchResponse { header, response: WatchResponse::event(watch_id, rev, event, false) }
    }

    /// What tonic's encoder sends for `items`: each prost-encoded message behind its prefix.
    fn as_tonic_frames_them(items: &[OutgoingWatchResponse]) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            let message = pb::WatchResponse::decode(
                &{
                    let mut buf = Vec::new();
                    encode_watch_response(&item.header.at(item.response.revision), &item.response, &mut buf);
                    buf
                }[..],
            )
            .expect("valid protobuf")
            .encode_to_vec();
            out.push(0);
            out.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
            out.extend_from_slice(&message);
        }
        out
    }

    fn poll<S>(body: &mut WatchBody<S>) -> Poll<Option<Result<Frame<Bytes>, Status>>>
    where
        S: Stream<Item = Result<OutgoingWatchResponse, Status>> + Unpin,
    {
        let waker = futures::task::noop_waker();
        Pin::new(body).poll_frame(&mut Context::from_waker(&waker))
    }

    fn data<S>(body: &mut WatchBody<S>) -> Bytes
    where
        S: Stream<Item = Result<OutgoingWatchResponse, Status>> + Unpin,
    {
        match poll(body) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().expect("a data frame"),
            other => panic!("expected data, got {other:?}"),
        }
    }

    fn trailers<S>(body: &mut WatchBody<S>) -> http::HeaderMap
    where
        S: Stream<Item = Result<OutgoingWatchResponse, Status>> + Unpin,
    {
        match poll(body) {
            Poll::Ready(Some(Ok(frame))) => frame.into_trailers().expect("a trailers frame"),
            other => panic!("expected trailers, got {other:?}"),
        }
    }

    #[test]
    fn the_ready_responses_go_as_one_chunk_framed_as_tonic_frames_them_then_the_ok_status() {
        let items = vec![response(1, 5, 10), response(2, 5, 10), response(1, 6, 300)];
        let mut body = WatchBody::new(futures::stream::iter(items.clone().into_iter().map(Ok)));
        assert_eq!(data(&mut body)[..], as_tonic_frames_them(&items)[..]);
        let end = trailers(&mut body);
        assert_eq!(end.get("grpc-status").map(http::HeaderValue::as_bytes), Some(&b"0"[..]));
        assert!(body.is_end_stream());
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn responses_ready_before_an_error_go_first_and_the_error_ends_the_call_in_the_trailers() {
        let stream = futures::stream::iter(vec![
            Ok(response(1, 5, 10)),
            Err(Status::unavailable("etcdserver: server stopped")),
            Ok(response(1, 6, 10)),
        ]);
        let mut body = WatchBody::new(stream);
        assert_eq!(data(&mut body)[..], as_tonic_frames_them(&[response(1, 5, 10)])[..]);
        let end = trailers(&mut body);
        assert_eq!(end.get("grpc-status").map(http::HeaderValue::as_bytes), Some(&b"14"[..]));
        // Percent-encoded, as gRPC carries a status message (and tonic's encoder sends it).
        assert_eq!(
            end.get("grpc-message").map(http::HeaderValue::as_bytes),
            Some(&b"etcdserver:%20server%20stopped"[..])
        );
        assert!(matches!(poll(&mut body), Poll::Ready(None)), "nothing after the trailers");
    }

    #[test]
    fn a_turn_stops_gathering_past_the_chunk_size_and_waits_while_nothing_is_ready() {
        // Responses of about 10 KiB: the fourth takes the turn past 32 KiB.
        let items: Vec<_> = (0..6).map(|i| response(1, 10 + i, 10 * 1024)).collect();
        let stream = futures::stream::iter(items.clone().into_iter().map(Ok)).chain(futures::stream::pending());
        let mut body = WatchBody::new(stream);
        let first = data(&mut body);
        assert_eq!(first[..], as_tonic_frames_them(&items[..4])[..]);
        assert!(first.len() >= CHUNK_BYTES);
        assert_eq!(data(&mut body)[..], as_tonic_frames_them(&items[4..])[..]);
        assert!(poll(&mut body).is_pending(), "an open stream with nothing ready waits");
        assert!(!body.is_end_stream());
    }

    #[test]
    fn each_length_prefix_is_the_length_written_even_for_an_empty_header() {
        // An all-zero header at revision 0 is written as an empty field 1 (two bytes), which
        // `WatchResponse::encoded_len` does not count: the prefix must still say what follows.
        let zero = Header { cluster_id: 0, member_id: 0, raft_term: 0 };
        let items =
            vec![OutgoingWatchResponse { header: zero, response: WatchResponse::progress(-1, 0) }, response(1, 5, 10)];
        let mut body = WatchBody::new(futures::stream::iter(items.clone().into_iter().map(Ok)));
        let framed = data(&mut body);
        let first = u32::from_be_bytes(framed[1..5].try_into().expect("4 bytes")) as usize;
        let decoded = pb::WatchResponse::decode(&framed[5..5 + first]).expect("the first message alone");
        assert_eq!((decoded.watch_id, decoded.header.map(|h| h.revision)), (-1, Some(0)));
        assert_eq!(framed[..], as_tonic_frames_them(&items)[..]);
    }

    #[test]
    fn a_stream_that_ends_or_fails_with_nothing_ready_sends_its_status_at_once() {
        let mut ended = WatchBody::new(futures::stream::empty());
        assert_eq!(trailers(&mut ended).get("grpc-status").map(http::HeaderValue::as_bytes), Some(&b"0"[..]));
        let mut failed = WatchBody::new(futures::stream::iter(vec![Err(Status::permission_denied("nope"))]));
        assert_eq!(trailers(&mut failed).get("grpc-status").map(http::HeaderValue::as_bytes), Some(&b"7"[..]));
    }

    #[test]
    fn a_waiting_body_is_woken_by_the_next_response() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        struct CountingWaker(AtomicUsize);
        impl std::task::Wake for CountingWaker {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut body = WatchBody::new(rx);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        tx.unbounded_send(Ok(response(1, 5, 10))).expect("send");
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the body's task is woken");
        assert_eq!(data(&mut body)[..], as_tonic_frames_them(&[response(1, 5, 10)])[..]);
    }

    #[test]
    fn only_uncompressed_calls_of_the_watch_method_are_taken() {
        let request = |path: &str, encoding: Option<&str>| {
            let mut builder = http::Request::builder().uri(format!("http://localhost{path}"));
            if let Some(encoding) = encoding {
                builder = builder.header("grpc-encoding", encoding);
            }
            builder.body(()).expect("request")
        };
        assert!(takes(&request(WATCH_PATH, None)));
        assert!(takes(&request(WATCH_PATH, Some("identity"))));
        assert!(!takes(&request(WATCH_PATH, Some("gzip"))), "tonic answers what it cannot decode");
        assert!(!takes(&request("/etcdserverpb.Watch/Other", None)), "tonic answers an unknown method");
    }
}
