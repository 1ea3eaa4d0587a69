//! Owns `POST /v3/watch`: a request body of concatenated JSON `WatchRequest`s answered by a
//! chunked stream of `{"result":{...}}` lines (docs/etcd-semantics.md §8). Full duplex over
//! HTTP/1.1 whether or not the client sent `Expect: 100-continue`: responses flow while the body
//! is still open, and the end of the body does not end the stream (docs/etcd-semantics.md §7.1).
//! A malformed request ends the stream with one `{"error":{...}}` line (etcd 3.4 silently
//! ignores everything after it).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::{decode, encode, Gateway};
use crate::api::pb::etcdserverpb as pb;
use crate::api::{ApiError, Header, StreamRequests, TransportStream};

/// Opens a watch stream for one HTTP request.
pub async fn watch(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    let stream = TransportStream::open(&gw.handle).with_credentials(super::credentials(&http));
    let (err_tx, err_rx) = mpsc::channel::<ApiError>(1);
    actix_web::rt::spawn(read_requests(payload, stream.requests(&gw.handle), err_tx, gw.max_json_bytes()));
    let body = ResponseLines { stream, errors: err_rx, failed: None, header: gw.header, done: false };
    HttpResponse::Ok().content_type("application/json").streaming(body)
}

/// Decodes the request body as it arrives and hands each request to the stream actor.
async fn read_requests(
    mut payload: web::Payload,
    requests: StreamRequests,
    errors: mpsc::Sender<ApiError>,
    limit: usize,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut ends = ObjectEnds::default();
    loop {
        let chunk = match payload.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return fail(&requests, &errors, ApiError::Body(e.to_string())).await,
            None => break,
        };
        buf.extend_from_slice(&chunk);
        let drained = match ends.scan(&buf) {
            Ok(0) => Ok(0),
            Ok(whole) => drain_requests(&mut buf, whole, &requests, limit).await,
            Err(e) => Err(e),
        };
        match drained {
            Ok(n) => ends.consumed(n),
            Err(e) => return fail(&requests, &errors, e).await,
        }
        if buf.len() > limit {
            return fail(&requests, &errors, watchkv::Error::RequestTooLarge.into()).await;
        }
    }
    // The body ended. A half-written object is an error; otherwise the stream stays open until
    // the client goes away (etcd keeps sending after a half-close).
    if !buf.iter().all(u8::is_ascii_whitespace) {
        fail(&requests, &errors, ApiError::TruncatedBody).await;
    }
}

/// Ends the body with `error`, once the requests before it are answered (their responses are
/// queued ahead of it: `StreamRequests::settled`).
async fn fail(requests: &StreamRequests, errors: &mpsc::Sender<ApiError>, error: ApiError) {
    requests.settled().await;
    let _ = errors.send(error).await;
}

/// Where the whole request objects at the front of a growing body end, found by looking at each
/// byte once (brackets, and strings with their escapes), so that a request arriving in many
/// small chunks is parsed once when it is whole, not again from its start at every chunk.
#[derive(Debug, Default)]
struct ObjectEnds {
    /// Bytes of the buffer looked at so far.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Bytes at the front of the buffer that are whole objects (and whitespace).
    whole: usize,
}

impl ObjectEnds {
    /// Looks at what was appended to `buf` since the last call; returns how many bytes at its
    /// front are whole objects.
    ///
    /// # Errors
    /// `InvalidWatchRequest` for anything but an object at the top level.
    fn scan(&mut self, buf: &[u8]) -> Result<usize, ApiError> {
        for (i, &b) in buf.iter().enumerate().skip(self.scanned) {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            if self.depth == 0 && b != b'{' && !b.is_ascii_whitespace() {
                return Err(ApiError::InvalidWatchRequest(format!(
                    "a watch request is a JSON object, not one starting with {:?}",
                    char::from(b)
                )));
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.whole = i + 1;
                    }
                }
                _ => {}
            }
        }
        self.scanned = buf.len();
        Ok(self.whole)
    }

    /// `n` bytes (whole objects) were taken off the front of the buffer.
    fn consumed(&mut self, n: usize) {
        self.scanned -= n;
        self.whole -= n;
    }
}

/// Decodes the whole request objects in the first `whole` bytes of `buf`, hands each to the
/// stream actor as soon as it is decoded (a malformed one after it does not take back the
/// requests before it, as etcd's gateway forwards each as it reads it) and removes them;
/// returns how many bytes went. One request larger than `limit` is refused even when it
/// arrived whole (etcd's per-message limit).
async fn drain_requests(
    buf: &mut Vec<u8>,
    whole: usize,
    requests: &StreamRequests,
    limit: usize,
) -> Result<usize, ApiError> {
    let mut consumed = 0;
    let mut iter = serde_json::Deserializer::from_slice(&buf[..whole]).into_iter::<serde_json::Value>();
    while let Some(value) = iter.next() {
        let value = value.map_err(|e| ApiError::InvalidWatchRequest(e.to_string()))?;
        if iter.byte_offset() - consumed > limit {
            return Err(watchkv::Error::RequestTooLarge.into());
        }
        consumed = iter.byte_offset();
        let req: pb::WatchRequest =
            decode::decode_value(value).map_err(|e| ApiError::InvalidWatchRequest(e.to_string()))?;
        requests.forward(req).await?;
    }
    buf.drain(..whole);
    Ok(whole)
}

/// The response body: one line per response. Owns the stream, which closes when the body is
/// dropped (client gone), so an idle watch does not outlive its connection.
struct ResponseLines {
    stream: TransportStream,
    errors: mpsc::Receiver<ApiError>,
    /// The error that ends the body, once the responses already there are written.
    failed: Option<ApiError>,
    header: Header,
    done: bool,
}

impl Stream for ResponseLines {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.failed.is_none() {
            if let Poll::Ready(Some(e)) = self.errors.poll_recv(cx) {
                self.failed = Some(e);
            }
        }
        // After an error, the responses already queued (those to the requests forwarded before
        // it: `read_requests` waits until they are, `StreamRequests::settled`) go out first,
        // then the error line ends the body.
        if self.failed.is_some() {
            if let Poll::Ready(Some(r)) = self.stream.poll_response(cx) {
                return Poll::Ready(Some(Ok(Bytes::from(encode::watch_response_line(self.header, &r)))));
            }
            let mut line = String::from("{\"error\":");
            if let Some(e) = &self.failed {
                encode::write_error(&mut line, e);
            }
            line.push_str("}\n");
            self.done = true;
            return Poll::Ready(Some(Ok(Bytes::from(line))));
        }
        match self.stream.poll_response(cx) {
            Poll::Ready(Some(r)) => {
                // Exactly one response per HTTP chunk, as grpc-gateway writes them: clients such
                // as Python etcd3gw parse each chunk as one JSON message (`iter_content(None)`),
                // and several lines in one chunk made them drop the rest of the stream.
                Poll::Ready(Some(Ok(Bytes::from(encode::watch_response_line(self.header, &r)))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fed a byte at a time, the scan finds each object's end once it is whole, whatever its
    /// strings hold.
    #[test]
    fn object_ends_are_found_a_byte_at_a_time() {
        let first = br#" {"create_request":{"key":"e30=","x":"}{\"]"}} "#;
        let second = br#"{"cancel_request":{"watch_id":"1"}}"#;
        let body: Vec<u8> = [&first[..], &second[..]].concat();
        let mut ends = ObjectEnds::default();
        let mut seen = Vec::new();
        for n in 1..=body.len() {
            let whole = ends.scan(&body[..n]).expect("objects");
            if seen.last() != Some(&whole) {
                seen.push(whole);
            }
        }
        // The first object ends before its trailing space; the second at the end.
        assert_eq!(seen, vec![0, first.len() - 1, body.len()]);
        let value: serde_json::Value = serde_json::from_slice(&body[..first.len() - 1]).expect("whole");
        assert_eq!(value["create_request"]["x"], "}{\"]");

        // Taking whole objects off the front keeps the scan where it was.
        let mut ends = ObjectEnds::default();
        let mut buf = body[..first.len() + 5].to_vec();
        let whole = ends.scan(&buf).expect("objects");
        buf.drain(..whole);
        ends.consumed(whole);
        buf.extend_from_slice(&body[first.len() + 5..]);
        assert_eq!(ends.scan(&buf).expect("objects"), buf.len());
    }

    #[test]
    fn anything_but_an_object_at_the_top_is_refused_at_once() {
        for body in [&b"[1]"[..], b" 7", b"\"x\"", b"{} null"] {
            let refused = ObjectEnds::default().scan(body);
            assert!(matches!(refused, Err(ApiError::InvalidWatchRequest(_))), "{body:?}: {refused:?}");
        }
    }
}
