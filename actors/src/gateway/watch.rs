//! Owns `POST /v3/watch`: a request body of concatenated JSON `WatchRequest`s answered by a
//! chunked stream of `{"result":{...}}` lines (spec §8). Full duplex over HTTP/1.1 whether or
//! not the client sent `Expect: 100-continue`: responses flow while the body is still open, and
//! the end of the body does not end the stream (spec §7.1). A malformed request ends the stream
//! with one `{"error":{...}}` line (etcd 3.4 silently ignores everything after it).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::Addr;
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use watchkv::watch::response::WatchResponse;

use super::json::{self, Header, WatchRequestJson};
use super::Gateway;
use crate::stream_actor::{CancelWatch, CloseStream, CreateWatch, RequestStreamProgress, StreamActor};

/// Responses buffered between the stream actor and the socket; the stream actor's own mailbox
/// is the real buffer.
const SOCKET_BUFFER: usize = 8;

/// Opens a watch stream for one HTTP request.
pub async fn watch(gw: web::Data<Gateway>, payload: web::Payload) -> HttpResponse {
    let (tx, rx) = mpsc::channel::<WatchResponse>(SOCKET_BUFFER);
    let stream = gw.handle.open_stream(Arc::new(tx));
    let (err_tx, err_rx) = mpsc::channel::<String>(1);
    actix_web::rt::spawn(read_requests(payload, stream.clone(), err_tx, gw.max_request_bytes));
    let body = ResponseLines { responses: rx, errors: err_rx, header: gw.header, stream, done: false };
    HttpResponse::Ok().content_type("application/json").streaming(body)
}

/// Decodes the request body as it arrives and hands each request to the stream actor.
async fn read_requests(
    mut payload: web::Payload,
    stream: Addr<StreamActor>,
    errors: mpsc::Sender<String>,
    limit: usize,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = match payload.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                let _ = errors.send(format!("reading request body: {e}")).await;
                return;
            }
            None => break,
        };
        buf.extend_from_slice(&chunk);
        match drain_requests(&mut buf, &stream, limit).await {
            Ok(()) => {}
            Err(e) => {
                let _ = errors.send(e).await;
                return;
            }
        }
        if buf.len() > limit {
            let _ = errors.send(watchkv::Error::RequestTooLarge.to_string()).await;
            return;
        }
    }
    // The body ended. A half-written object is an error; otherwise the stream stays open until
    // the client goes away (etcd keeps sending after a half-close).
    if !buf.iter().all(u8::is_ascii_whitespace) {
        let _ = errors.send("unexpected end of request body inside a JSON object".to_string()).await;
    }
}

/// Handles every complete request object at the front of `buf` and removes it. One request
/// larger than `limit` is refused even when it arrived whole (etcd's per-message limit).
async fn drain_requests(buf: &mut Vec<u8>, stream: &Addr<StreamActor>, limit: usize) -> Result<(), String> {
    let mut consumed = 0;
    let mut requests = Vec::new();
    {
        let mut iter = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
        loop {
            match iter.next() {
                Some(Ok(value)) => {
                    if iter.byte_offset() - consumed > limit {
                        return Err(watchkv::Error::RequestTooLarge.to_string());
                    }
                    consumed = iter.byte_offset();
                    let req: WatchRequestJson =
                        serde_json::from_value(value).map_err(|e| format!("invalid watch request: {e}"))?;
                    requests.push(req);
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(format!("invalid watch request: {e}")),
                None => {
                    consumed = buf.len();
                    break;
                }
            }
        }
    }
    buf.drain(..consumed);
    for req in requests {
        let sent = if let Some(create) = req.create_request {
            stream.send(CreateWatch(create.into_create())).await
        } else if let Some(cancel) = req.cancel_request {
            stream.send(CancelWatch(cancel.watch_id)).await
        } else if req.progress_request.is_some() {
            stream.send(RequestStreamProgress).await
        } else {
            // etcd logs and ignores a request with nothing set.
            Ok(())
        };
        if sent.is_err() {
            return Err("watch stream closed".into());
        }
    }
    Ok(())
}

/// The response body: one line per response; closes the stream actor when dropped (client
/// gone), so an idle watch does not outlive its connection.
struct ResponseLines {
    responses: mpsc::Receiver<WatchResponse>,
    errors: mpsc::Receiver<String>,
    header: Header,
    stream: Addr<StreamActor>,
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
            json::write_status(&mut line, 3, &e);
            line.push_str("}\n");
            return Poll::Ready(Some(Ok(Bytes::from(line))));
        }
        match self.responses.poll_recv(cx) {
            Poll::Ready(Some(r)) => {
                // Exactly one response per HTTP chunk, as grpc-gateway writes them: clients such
                // as Python etcd3gw parse each chunk as one JSON message (`iter_content(None)`),
                // and several lines in one chunk made them drop the rest of the stream.
                let mut out = String::with_capacity(256);
                out.push_str("{\"result\":");
                json::write_watch_response(&mut out, self.header, &r);
                out.push_str("}\n");
                Poll::Ready(Some(Ok(Bytes::from(out))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ResponseLines {
    fn drop(&mut self) {
        self.stream.do_send(CloseStream);
    }
}
