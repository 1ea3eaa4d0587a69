//! Owns what a gRPC connection carries into each of its requests: values the listener learned
//! about the connection (the TLS client certificate's user, [`crate::api::ClientCertUser`]),
//! which every request of that connection finds in its extensions, where tonic hands them to
//! the handlers (`tonic::Request::extensions`); and [`HandshakeWatch`], which tells when the
//! client has sent HTTP/2's preface and first frame.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a client sends first on an HTTP/2 connection: the 24-byte preface, then a SETTINGS
/// frame, whose 9-byte header is enough to know it came (RFC 9113 §3.4).
const HANDSHAKE_BYTES: usize = 24 + 9;

/// A client connection handed to [`super::serve_connections`], with the values its requests
/// carry.
pub struct ClientConnection<IO> {
    /// The connection, not yet read from by HTTP/2.
    pub io: IO,
    /// Values inserted into every request's extensions.
    pub data: http::Extensions,
}

impl<IO> ClientConnection<IO> {
    /// A connection whose requests carry nothing more.
    pub fn new(io: IO) -> Self {
        Self { io, data: http::Extensions::new() }
    }

    /// Adds `value` to what every request of the connection carries.
    #[must_use]
    pub fn with_data<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.data.insert(value);
        self
    }
}

/// A connection's service: inserts the connection's values into each request's extensions,
/// then calls `inner`.
#[derive(Clone)]
pub struct WithConnectionData<S> {
    inner: S,
    data: Arc<http::Extensions>,
}

impl<S> WithConnectionData<S> {
    /// Wraps `inner` for one connection.
    pub fn new(inner: S, data: http::Extensions) -> Self {
        Self { inner, data: Arc::new(data) }
    }
}

impl<S, B> hyper::service::Service<http::Request<B>> for WithConnectionData<S>
where
    S: hyper::service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: http::Request<B>) -> Self::Future {
        if !self.data.is_empty() {
            request.extensions_mut().extend(http::Extensions::clone(&self.data));
        }
        self.inner.call(request)
    }
}

/// A connection that raises a flag once HTTP/2 has read [`HANDSHAKE_BYTES`] from it, so that a
/// client that stops before its handshake can be closed (hyper's server waits for the preface
/// without a deadline; grpc-go closes such a connection after its `ConnectionTimeout`).
pub struct HandshakeWatch<IO> {
    io: IO,
    /// Bytes still to read before the handshake counts as sent; 0 once the flag is raised.
    left: usize,
    handshook: Arc<AtomicBool>,
}

impl<IO> HandshakeWatch<IO> {
    /// Wraps `io`, not yet read from; the flag it raises is [`Self::handshook`].
    pub fn new(io: IO) -> Self {
        Self { io, left: HANDSHAKE_BYTES, handshook: Arc::new(AtomicBool::new(false)) }
    }

    /// Raised once the client's preface and the header of its first frame have been read.
    #[must_use]
    pub fn handshook(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.handshook)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HandshakeWatch<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.left > 0 {
            this.left = this.left.saturating_sub(buf.filled().len() - before);
            if this.left == 0 {
                this.handshook.store(true, Ordering::Release);
            }
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HandshakeWatch<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::{ready, Ready};

    use hyper::service::Service;

    use super::*;
    use crate::api::ClientCertUser;

    /// Stands in for the gRPC routes: answers with the user and the `u32` its request carries.
    struct SeenByHandler;

    impl Service<http::Request<()>> for SeenByHandler {
        type Response = (Option<ClientCertUser>, Option<u32>);
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;

        fn call(&self, request: http::Request<()>) -> Self::Future {
            let extensions = request.extensions();
            ready(Ok((extensions.get::<ClientCertUser>().cloned(), extensions.get::<u32>().copied())))
        }
    }

    fn seen(
        service: &WithConnectionData<SeenByHandler>,
        request: http::Request<()>,
    ) -> (Option<ClientCertUser>, Option<u32>) {
        match futures::executor::block_on(service.call(request)) {
            Ok(seen) => seen,
            Err(never) => match never {},
        }
    }

    #[test]
    fn every_request_of_the_connection_carries_its_user() {
        let connection = ClientConnection::new(()).with_data(ClientCertUser("alice".into()));
        let service = WithConnectionData::new(SeenByHandler, connection.data);
        for _ in 0..3 {
            assert_eq!(seen(&service, http::Request::new(())), (Some(ClientCertUser("alice".into())), None));
        }
    }

    #[test]
    fn a_request_keeps_its_own_extensions() {
        let connection = ClientConnection::new(()).with_data(ClientCertUser("alice".into()));
        let service = WithConnectionData::new(SeenByHandler, connection.data);
        let mut request = http::Request::new(());
        request.extensions_mut().insert(7u32);
        assert_eq!(seen(&service, request), (Some(ClientCertUser("alice".into())), Some(7)));
    }

    #[test]
    fn a_connection_without_data_adds_nothing() {
        let service = WithConnectionData::new(SeenByHandler, ClientConnection::new(()).data);
        assert_eq!(seen(&service, http::Request::new(())), (None, None));
    }
}
