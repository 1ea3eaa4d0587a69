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
    let body = ResponseLines { stream, errors: err_rx, header: gw.header, done: false };
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
    loop {
        let chunk = match payload.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                let _ = errors.send(ApiError::Body(e.to_string())).await;
                return;
            }
            None => break,
        };
        buf.extend_from_slice(&chunk);
        if let Err(e) = drain_requests(&mut buf, &requests, limit).await {
            let _ = errors.send(e).await;
            return;
        }
        if buf.len() > limit {
            let _ = errors.send(watchkv::Error::RequestTooLarge.into()).await;
            return;
        }
    }
    // The body ended. A half-written object is an error; otherwise the stream stays open until
    // the client goes away (etcd keeps sending after a half-close).
    if !buf.iter().all(u8::is_ascii_whitespace) {
        let _ = errors.send(ApiError::TruncatedBody).await;
    }
}

/// Handles every complete request object at the front of `buf` and removes it. One request
/// larger than `limit` is refused even when it arrived whole (etcd's per-message limit).
async fn drain_requests(buf: &mut Vec<u8>, requests: &StreamRequests, limit: usize) -> Result<(), ApiError> {
    let mut consumed = 0;
    let mut decoded = Vec::new();
    {
        let mut iter = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
        loop {
            match iter.next() {
                Some(Ok(value)) => {
                    if iter.byte_offset() - consumed > limit {
                        return Err(watchkv::Error::RequestTooLarge.into());
                    }
                    consumed = iter.byte_offset();
                    let req: pb::WatchRequest =
                        decode::decode_value(value).map_err(|e| ApiError::InvalidWatchRequest(e.to_string()))?;
                    decoded.push(req);
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(ApiError::InvalidWatchRequest(e.to_string())),
                None => {
                    consumed = buf.len();
                    break;
                }
            }
        }
    }
    buf.drain(..consumed);
    for req in decoded {
        requests.forward(req).await?;
    }
    Ok(())
}

/// The response body: one line per response. Owns the stream, which closes when the body is
/// dropped (client gone), so an idle watch does not outlive its connection.
struct ResponseLines {
    stream: TransportStream,
    errors: mpsc::Receiver<ApiError>,
    header: Header,
    done: bool,
}

impl Stream for ResponseLines {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(Some(e)) = self.errors.poll_recv(cx) {
            self.done = true;
            let mut line = String::from("{\"error\":");
            encode::write_error(&mut line, &e);
            line.push_str("}\n");
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
