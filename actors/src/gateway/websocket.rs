//! Owns the gateway's WebSocket transport. etcd wraps its gateway in grpc-websocket-proxy's
//! `wsproxy` (embed/serve.go `createMux`): a `GET` that asks to upgrade to WebSocket is served by
//! the route as a `POST` whose body is what the client sends, each message a line, and each line
//! of the response body goes back as one text message. A browser, which cannot stream a request
//! body over `fetch`, watches this way. Here the routes whose requests stream take it:
//! `/v3/watch` and `/v3/lease/keepalive` (a unary route reads its body to the end, which over a
//! WebSocket comes only when the client closes, so it is of no use there; they answer a `GET`
//! with 405). A token rides in the `Sec-WebSocket-Protocol` header as `Bearer, <token>`, the only
//! header a browser can set on a WebSocket, and the subprotocol `Bearer` is echoed, as `wsproxy`
//! echoes it. The client closing the WebSocket ends the route's response, and with it the watch
//! stream or the keep-alives.

use std::future::Future;

use actix_web::body::MessageBody;
use actix_web::error::PayloadError;
use actix_web::guard::GuardContext;
use actix_web::http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, Session};
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::Gateway;

/// Client messages held for the route before the relay stops reading the socket.
const REQUEST_LINES_BUFFERED: usize = 16;

/// Whether the request asks to upgrade to WebSocket (the route's `GET` guard).
pub(super) fn is_upgrade(ctx: &GuardContext<'_>) -> bool {
    ctx.head().headers().get(UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The token of a WebSocket request: `Sec-WebSocket-Protocol: Bearer, <token>` (what `wsproxy`
/// turns into an `Authorization` header).
pub(super) fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let protocols = req.headers().get(SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    protocols.strip_prefix("Bearer,").map(str::trim).filter(|t| !t.is_empty())
}

/// Serves `route` over a WebSocket: answers the upgrade, then runs the route with the client's
/// messages as its body and relays its response lines as messages.
///
/// # Errors
/// A request that is not a valid WebSocket handshake (400).
pub(super) async fn serve<F, Fut>(
    route: F,
    gw: web::Data<Gateway>,
    http: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error>
where
    F: FnOnce(web::Data<Gateway>, HttpRequest, web::Payload) -> Fut,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let asks_bearer = http
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer"));
    let (mut response, session, messages) = actix_ws::handle(&http, payload)?;
    if asks_bearer {
        response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("Bearer"));
    }
    let (lines, body) = mpsc::channel::<Result<Bytes, PayloadError>>(REQUEST_LINES_BUFFERED);
    let stream: actix_http::BoxedPayloadStream = Box::pin(ReceiverStream::new(body));
    let mut body = actix_web::dev::Payload::from(stream);
    let body = web::Payload::from_request(&http, &mut body).await?;
    let limit = gw.max_json_bytes();
    let answered = route(gw, http, body);
    // A message in fragments (a client's write buffer is smaller than it) is joined first,
    // as `wsproxy` reads whole messages; the limit is the whole message's.
    let messages = messages.max_frame_size(limit).aggregate_continuations().max_continuation_size(limit);
    actix_web::rt::spawn(relay(answered, session, messages, lines));
    Ok(response)
}

/// Runs the route and sends each line of its response as a text message, while the client's
/// messages go to the route ([`inbound`]; a route may wait for the first before it answers),
/// until either side ends; then the WebSocket is closed and the route's response dropped.
async fn relay(
    answered: impl Future<Output = HttpResponse>,
    session: Session,
    messages: AggregatedMessageStream,
    lines: mpsc::Sender<Result<Bytes, PayloadError>>,
) {
    let (gone, mut client_gone) = oneshot::channel::<()>();
    actix_web::rt::spawn(inbound(messages, session.clone(), lines, gone));
    let response = tokio::select! {
        response = answered => response,
        _ = &mut client_gone => {
            let _ = session.close(None).await;
            return;
        }
    };
    let mut body = std::pin::pin!(response.into_body());
    let mut pending = BytesMut::new();
    loop {
        tokio::select! {
            _ = &mut client_gone => break,
            chunk = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)) => match chunk {
                Some(Ok(bytes)) => {
                    pending.extend_from_slice(&bytes);
                    if !send_lines(&session, &mut pending).await {
                        return;
                    }
                }
                // The response ended (an error line was its last) or broke off.
                Some(Err(_)) | None => {
                    pending.extend_from_slice(b"\n");
                    let _ = send_lines(&session, &mut pending).await;
                    break;
                }
            },
        }
    }
    let _ = session.close(None).await;
}

/// Hands the client's messages to the route, one line each, and answers its pings, until the
/// client closes the WebSocket or goes away; then drops `gone`.
async fn inbound(
    mut messages: AggregatedMessageStream,
    mut session: Session,
    lines: mpsc::Sender<Result<Bytes, PayloadError>>,
    gone: oneshot::Sender<()>,
) {
    while let Some(message) = messages.recv().await {
        let open = match message {
            // A route that stopped reading its body (it answered, or failed) ignores the rest,
            // as after the end of an HTTP body; its response still streams.
            Ok(AggregatedMessage::Text(text)) => {
                forward(&lines, text.into_bytes()).await;
                true
            }
            Ok(AggregatedMessage::Binary(bytes)) => {
                forward(&lines, bytes).await;
                true
            }
            Ok(AggregatedMessage::Ping(data)) => session.pong(&data).await.is_ok(),
            Ok(AggregatedMessage::Pong(_)) => true,
            // Closed, or a protocol error (a message over the limit): the client is done.
            Ok(AggregatedMessage::Close(_)) | Err(_) => false,
        };
        if !open {
            break;
        }
    }
    drop(gone);
}

/// Hands one client message to the route as a line of its body (dropped once the route has
/// stopped reading).
async fn forward(lines: &mpsc::Sender<Result<Bytes, PayloadError>>, message: Bytes) {
    let mut line = BytesMut::with_capacity(message.len() + 1);
    line.extend_from_slice(&message);
    line.extend_from_slice(b"\n");
    let _ = lines.send(Ok(line.freeze())).await;
}

/// Sends every complete line in `pending` as a text message (empty lines are skipped, as
/// `wsproxy` skips them); false once the client is gone.
async fn send_lines(session: &Session, pending: &mut BytesMut) -> bool {
    let mut session = session.clone();
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line = pending.split_to(end + 1);
        let text = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
        if text.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(text) else { continue };
        if session.text(text.to_string()).await.is_err() {
            return false;
        }
    }
    true
}
