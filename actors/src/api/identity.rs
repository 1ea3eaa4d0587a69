//! Owns who a client is as its connection proved it: the user a verified TLS client certificate
//! names. The transports attach it to what they hand the handlers; deciding what that user may do
//! is the auth system's.

/// The user named by a client's TLS certificate: the Common Name of its subject, which etcd takes
/// as the user name when `--client-cert-auth` is on (etcd: auth/store.go `AuthInfoFromTLS`, the
/// first certificate of the verified chain). It is attached only to connections whose
/// certificate the server verified against `--trusted-ca-file`; a certificate whose subject has
/// no Common Name gives the empty string, as etcd's `Subject.CommonName` does.
///
/// Where handlers find it:
/// - gRPC: in every request's extensions (`request.extensions().get::<ClientCertUser>()`);
/// - the HTTP/JSON gateway: in the connection data (`HttpRequest::conn_data::<ClientCertUser>()`).
///   etcd 3.4 never authenticates a gateway request by certificate (its gateway reaches gRPC
///   through a connection of its own, and `AuthInfoFromTLS` ignores requests that carry the
///   gateway's `Grpcgateway-Accept` metadata), so whether the gateway honours it is the auth
///   system's decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCertUser(pub String);
