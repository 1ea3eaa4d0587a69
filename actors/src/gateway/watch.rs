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
use futures_util::Stream;
use tokio::sync::mpsc;

use super::json_stream::JsonObjects;
use super::{decode, encode, Gateway};
use crate::api::pb::etcdserverpb as pb;
use crate::api::{ApiError, Header, StreamRequests, TransportStream};

/// Opens a watch stream for one HTTP request.
pub async fn watch(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    let stream = TransportStream::open(&gw.handle).with_credentials(super::credentials(&http));
    let (err_tx, err_rx) = mpsc::channel::<ApiError>(1);
    actix_web::rt::spawn(read_requests(payload, stream.requests(&gw.handle), err_tx, gw.clone()));
    let body = ResponseLines { stream, errors: err_rx, failed: None, header: gw.header, done: false };
    super::json_stream_response(&http, body)
}

/// Decodes the request body as it arrives and hands each request to the stream actor as soon
/// as it is whole (a malformed one after it does not take back the requests before it, as
/// etcd's gateway forwards each as it reads it). The first bad request, or a body that breaks
/// off, ends the stream with its error.
async fn read_requests(
    payload: web::Payload,
    requests: StreamRequests,
    errors: mpsc::Sender<ApiError>,
    gw: web::Data<Gateway>,
) {
    let mut objects = JsonObjects::new(payload, gw.max_json_bytes(), ApiError::InvalidWatchRequest);
    // The body's end does not end the stream: it stays open until the client goes away (etcd
    // keeps sending after a half-close).
    while let Some(object) = objects.next().await {
        let forwarded = match object {
            Ok(value) => match decode::decode_value::<pb::WatchRequest>(value) {
                Ok(req) => match gw.check_receive_limit(&req) {
                    Ok(()) => requests.forward(req).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(ApiError::InvalidWatchRequest(e.to_string())),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = forwarded {
            // The requests before the bad one are answered first (`StreamRequests::settled`).
            requests.settled().await;
            let _ = errors.send(e).await;
            return;
        }
    }
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
