//! Owns what a gRPC connection carries into each of its requests: values the listener learned
//! about the connection (the TLS client certificate's user, [`crate::api::ClientCertUser`]),
//! which every request of that connection finds in its extensions, where tonic hands them to
//! the handlers (`tonic::Request::extensions`).

use std::sync::Arc;

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
