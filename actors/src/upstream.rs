//! Owns connections to an upstream etcd: endpoint URLs, TLS, credentials. Mirror mode's
//! follower ([`crate::mirror`]) and forwarding ([`crate::forward`]) and `watchkv import`
//! ([`crate::import`]) all reach upstream through an [`UpstreamEtcd`]: endpoints as etcdctl's
//! `--endpoints` takes them, TLS as etcdctl's `--cacert`, `--cert` and `--key` configure it
//! (rustls with *ring*, ALPN `h2`), and a user's token from `Authenticate` in the `token`
//! metadata of every call, fetched again once when upstream refuses it (etcd:
//! clientv3/retry_interceptor.go `shouldRefreshToken`, `refreshToken`).
//!
//! Without `--cacert`, an `https://` upstream is verified against Mozilla's root certificates
//! (the `webpki-roots` crate), not the operating system's store etcdctl would use: a private CA,
//! as etcd clusters usually have, is named with `--cacert`, and then only it is trusted.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, RootCertStore};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::api::pb::etcdserverpb::auth_client::AuthClient;
use crate::api::pb::etcdserverpb::AuthenticateRequest;
use crate::tls::{crypto_provider, read_certificates, TlsError};

/// How long connecting to one upstream endpoint may take, the TLS handshake included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an `Authenticate` may take (etcd 3.4 commits it through raft, and checks the
/// password's bcrypt hash first).
const AUTHENTICATE_TIMEOUT: Duration = Duration::from_secs(30);

// etcd: api/v3rpc/rpctypes/error.go, the texts of the errors that decide about a token.
const INVALID_AUTH_TOKEN: &str = "etcdserver: invalid auth token";
const AUTH_OLD_REVISION: &str = "etcdserver: revision of auth store is old";
/// etcd's `ErrPermissionDenied`, as a watch's cancel reason ends with it.
const PERMISSION_DENIED: &str = "etcdserver: permission denied";
const USER_EMPTY: &str = "etcdserver: user name is empty";
const AUTH_FAILED: &str = "etcdserver: authentication failed, invalid user ID or password";
const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";

/// What a broken connection to an `http://` endpoint adds to its error: a plaintext client
/// talking to a TLS port reads the TLS alert, or Go's "client sent an HTTP request to an HTTPS
/// server" answer, as a broken HTTP/2 connection.
const PLAINTEXT_HINT: &str = " (if upstream serves TLS, use https:// and its CA file)";

/// The TLS files for upstream, as etcdctl's `--cacert`, `--cert` and `--key` (the server
/// binary's `--upstream-cacert`, `--upstream-cert`, `--upstream-key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA certificates (PEM) upstream's certificate must chain to; the only ones trusted.
    pub cacert: Option<PathBuf>,
    /// The client certificate chain (PEM), leaf first, for a cluster that asks for one
    /// (`--client-cert-auth`).
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl UpstreamTls {
    /// Whether no file is given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cacert.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// A user name and password for upstream's `Authenticate`. Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    name: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Credentials {
    /// A user and its password.
    #[must_use]
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        Self { name: name.into(), password: password.into() }
    }

    /// Credentials as etcdctl reads its `--user` and `--password` flags (etcd:
    /// etcdctl/ctlv3/command/global.go `authCfgFromCmd`): `--user NAME:PASSWORD`, or, with a
    /// non-empty `--password`, `--user NAME` taken whole. Where etcdctl would ask for a missing
    /// password on the terminal, this refuses.
    ///
    /// # Errors
    /// [`UpstreamError::Credentials`]: an empty name, or no password.
    pub fn from_flags(user: &str, password: Option<&str>) -> Result<Self, UpstreamError> {
        let (name, password) = match password.filter(|p| !p.is_empty()) {
            Some(password) => (user, password),
            None => user.split_once(':').ok_or_else(|| {
                UpstreamError::Credentials(format!(
                    "no password for user {user:?}: give NAME:PASSWORD or a password flag"
                ))
            })?,
        };
        if name.is_empty() {
            return Err(UpstreamError::Credentials("the user name is empty".into()));
        }
        Ok(Self::new(name, password))
    }

    /// The user name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why an [`UpstreamEtcd`] cannot be built from its endpoints and files.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No endpoint at all.
    #[error("no upstream endpoint given")]
    NoEndpoint,
    /// An endpoint that is not a usable URL.
    #[error("upstream endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS files given for a plaintext `http://` endpoint, which would not use them (etcdctl
    /// would silently connect without TLS).
    #[error("upstream endpoint {0}: TLS files are given for a plaintext http:// endpoint; use https://")]
    TlsOverHttp(String),
    /// A client certificate without its key, or a key without its certificate.
    #[error("upstream TLS: a client certificate and its key must both be given")]
    CertWithoutKey,
    /// A TLS file that cannot be read or used.
    #[error("upstream TLS: {0}")]
    Tls(#[from] TlsError),
    /// Unusable credentials.
    #[error("upstream credentials: {0}")]
    Credentials(String),
}

/// What differs between the channels of upstream's users.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelOptions {
    /// HTTP/2 pings while a stream is open, at this interval, each answered within this
    /// timeout, so a member that vanished without closing the connection is noticed. Only while
    /// a stream is open: etcd's server refuses (GOAWAY) frequent pings on a connection with no
    /// stream (grpc keepalive enforcement, `PermitWithoutStream` false).
    pub keepalive: Option<(Duration, Duration)>,
    /// How long any one request on the channel may take.
    pub request_timeout: Option<Duration>,
}

impl ChannelOptions {
    /// HTTP/2 pings every 10 s while a stream is open, each answered within 10 s: etcd's server
    /// accepts pings every 5 s or slower (`--grpc-keepalive-min-time`).
    pub const KEEPALIVE: Option<(Duration, Duration)> = Some((Duration::from_secs(10), Duration::from_secs(10)));
}

/// One upstream endpoint: its URL and how to connect to it.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    endpoint: Endpoint,
}

/// An upstream etcd cluster as watchkv reaches it: its endpoints with TLS set up, and the
/// credentials with the token they earned. Clones share the token.
#[derive(Clone)]
pub struct UpstreamEtcd {
    inner: Arc<Inner>,
}

struct Inner {
    targets: Vec<Target>,
    urls: Vec<String>,
    tls: bool,
    credentials: Option<Credentials>,
    /// `None` before the first `Authenticate`; `Some(None)` once upstream answered that auth is
    /// off; `Some(Some(token))` with a token. A tokio lock: it is held across `Authenticate`,
    /// so concurrent callers wait for one token instead of each asking for their own.
    token: tokio::sync::Mutex<Option<Option<MetadataValue<Ascii>>>>,
}

impl std::fmt::Debug for UpstreamEtcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamEtcd")
            .field("endpoints", &self.inner.urls)
            .field("tls", &self.inner.tls)
            .field("user", &self.inner.credentials.as_ref().map(Credentials::name))
            .finish_non_exhaustive()
    }
}

impl UpstreamEtcd {
    /// Upstream at `endpoints` (etcdctl's forms: `http://host:port`, `https://host:port`, or
    /// `host:port`, which means TLS when TLS files are given and plaintext otherwise), with
    /// `tls`'s files read and checked now, and `credentials` for clusters with auth enabled.
    ///
    /// # Errors
    /// [`UpstreamError`]: no endpoint, a bad URL, TLS files for an `http://` endpoint, a
    /// certificate without its key, a file that cannot be read or used, a key that is not the
    /// certificate's.
    pub fn new(
        endpoints: &[String],
        tls: &UpstreamTls,
        credentials: Option<Credentials>,
    ) -> Result<Self, UpstreamError> {
        if endpoints.is_empty() {
            return Err(UpstreamError::NoEndpoint);
        }
        let client_tls = client_tls(tls)?;
        let mut targets = Vec::with_capacity(endpoints.len());
        for given in endpoints {
            let url = upstream_url(given, !tls.is_empty())?;
            let invalid = |reason: String| UpstreamError::Endpoint { endpoint: given.clone(), reason };
            let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|e| invalid(error_chain(&e)))?;
            if url.starts_with("https://") {
                endpoint = endpoint.tls_config(client_tls.clone()).map_err(|e| invalid(error_chain(&e)))?;
            } else if !tls.is_empty() {
                return Err(UpstreamError::TlsOverHttp(url));
            }
            targets.push(Target { url, endpoint });
        }
        let urls = targets.iter().map(|t| t.url.clone()).collect();
        let uses_tls = targets.iter().any(|t| t.url.starts_with("https://"));
        Ok(Self {
            inner: Arc::new(Inner { targets, urls, tls: uses_tls, credentials, token: tokio::sync::Mutex::new(None) }),
        })
    }

    /// Upstream at `endpoints` without TLS files or credentials.
    ///
    /// # Errors
    /// As [`UpstreamEtcd::new`].
    pub fn plain(endpoints: &[String]) -> Result<Self, UpstreamError> {
        Self::new(endpoints, &UpstreamTls::default(), None)
    }

    /// The endpoints' URLs, in the order given.
    #[must_use]
    pub fn endpoints(&self) -> &[String] {
        &self.inner.urls
    }

    /// The user the calls authenticate as, if any.
    #[must_use]
    pub fn user(&self) -> Option<&str> {
        self.inner.credentials.as_ref().map(Credentials::name)
    }

    fn configure(target: &Target, options: ChannelOptions) -> Endpoint {
        let mut endpoint = target.endpoint.clone().connect_timeout(CONNECT_TIMEOUT);
        if let Some((interval, timeout)) = options.keepalive {
            endpoint =
                endpoint.http2_keep_alive_interval(interval).keep_alive_timeout(timeout).keep_alive_while_idle(false);
        }
        if let Some(timeout) = options.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        endpoint
    }

    /// A channel to the endpoint `url` (one of [`UpstreamEtcd::endpoints`]), connected now.
    ///
    /// # Errors
    /// The connection or the TLS handshake failed: the whole cause, as text.
    pub async fn connect(&self, url: &str, options: ChannelOptions) -> Result<Channel, String> {
        let Some(target) = self.inner.targets.iter().find(|t| t.url == url) else {
            return Err(format!("{url} is not one of the upstream endpoints"));
        };
        Self::configure(target, options).connect().await.map_err(|e| {
            let cause = error_chain(&e);
            if url.starts_with("http://") {
                format!("{cause}{PLAINTEXT_HINT}")
            } else {
                cause
            }
        })
    }

    /// A channel over every endpoint, connected lazily, calls balanced over the endpoints
    /// that answer.
    #[must_use]
    pub fn balanced(&self, options: ChannelOptions) -> Channel {
        Channel::balance_list(self.inner.targets.iter().map(|t| Self::configure(t, options)))
    }

    /// The token to send: the one held, or a new one from `Authenticate` on `channel`; `None`
    /// without credentials, or when upstream has auth off (etcd: clientv3/client.go `dial`
    /// goes on without a token on `ErrAuthNotEnabled`).
    ///
    /// # Errors
    /// `Authenticate`'s error: among them etcd's `authentication failed, invalid user ID or
    /// password` (see [`credentials_refused`]).
    pub async fn token(&self, channel: &Channel) -> Result<Option<MetadataValue<Ascii>>, Status> {
        if self.inner.credentials.is_none() {
            return Ok(None);
        }
        let mut held = self.inner.token.lock().await;
        if let Some(token) = &*held {
            return Ok(token.clone());
        }
        let token = self.authenticate(channel).await?;
        *held = Some(token.clone());
        Ok(token)
    }

    /// Forgets `refused`, a token upstream refused, so that the next [`UpstreamEtcd::token`]
    /// authenticates again; a token another caller already replaced it with is kept.
    pub async fn forget_token(&self, refused: Option<&MetadataValue<Ascii>>) {
        let mut held = self.inner.token.lock().await;
        if held.as_ref().is_some_and(|token| token.as_ref() == refused) {
            *held = None;
        }
    }

    /// Makes one call with the token in its `token` metadata (`call` builds the request with
    /// [`authorized`]); when upstream refuses the token, authenticates again and makes the call
    /// once more (etcd: clientv3/retry_interceptor.go `unaryClientInterceptor`). A refused
    /// token means the request was not carried out, so repeating a write is safe.
    ///
    /// # Errors
    /// The call's error, or `Authenticate`'s.
    pub async fn call<T, F, Fut>(&self, channel: &Channel, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Option<MetadataValue<Ascii>>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let token = self.token(channel).await?;
        match call(token.clone()).await {
            Err(status) if self.inner.credentials.is_some() && token_refused(&status) => {
                tracing::info!(code = %status.code(), message = status.message(), "upstream refused the token; authenticating again");
                self.forget_token(token.as_ref()).await;
                let token = self.token(channel).await?;
                call(token).await
            }
            answered => answered,
        }
    }

    async fn authenticate(&self, channel: &Channel) -> Result<Option<MetadataValue<Ascii>>, Status> {
        let Some(credentials) = &self.inner.credentials else { return Ok(None) };
        let request = AuthenticateRequest { name: credentials.name.clone(), password: credentials.password.clone() };
        let answer = tokio::time::timeout(AUTHENTICATE_TIMEOUT, AuthClient::new(channel.clone()).authenticate(request))
            .await
            .map_err(|_| Status::deadline_exceeded("upstream did not answer Authenticate in time"))?;
        match answer {
            Ok(response) => MetadataValue::try_from(response.into_inner().token)
                .map(Some)
                .map_err(|e| Status::internal(format!("upstream sent a token that is not ASCII: {e}"))),
            Err(status) if status.message() == AUTH_NOT_ENABLED => Ok(None),
            Err(status) => Err(status),
        }
    }
}

/// `message` as a request carrying `token` in its `token` metadata, as clientv3 sends it.
#[must_use]
pub fn authorized<T>(message: T, token: Option<&MetadataValue<Ascii>>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("token", token.clone());
    }
    request
}

/// Whether upstream refused a call's token, so that a new one is worth asking for: etcd's
/// `ErrInvalidAuthToken` (an expired or unknown token), `ErrAuthOldRevision` and `ErrUserEmpty`
/// (etcd: clientv3/retry_interceptor.go `shouldRefreshToken`).
#[must_use]
pub fn token_refused(status: &Status) -> bool {
    matches!(
        (status.code(), status.message()),
        (Code::Unauthenticated, INVALID_AUTH_TOKEN)
            | (Code::InvalidArgument, AUTH_OLD_REVISION)
            | (Code::InvalidArgument, USER_EMPTY)
    )
}

/// Whether a call failed before its request left: the channel could not connect to the
/// endpoint it picked (TCP or TLS; tonic's `ConnectError` in the status's causes). Such a call
/// is safe to make again, a write included: upstream never saw it.
#[must_use]
pub fn never_sent(status: &Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Whether a watch's cancel reason is upstream refusing its token, after which clientv3 opens
/// the watch again with a new one (etcd: clientv3/watch.go `shouldRetryWatch`; the reason is
/// the status's whole text, `rpc error: code = ... desc = ...`).
#[must_use]
pub fn watch_token_refused(cancel_reason: &str) -> bool {
    // etcd up to 3.4.21 and 3.5.5 cancel a watch whose token has expired with `permission
    // denied`, not `invalid auth token`: a fresh token is tried then too (a user who really
    // lacks the permission is refused again, and the watch counts as down).
    cancel_reason.ends_with(INVALID_AUTH_TOKEN)
        || cancel_reason.ends_with(AUTH_OLD_REVISION)
        || cancel_reason.ends_with(PERMISSION_DENIED)
}

/// Whether upstream refused the user and password themselves (etcd's `ErrAuthFailed`), which
/// asking again does not cure.
#[must_use]
pub fn credentials_refused(status: &Status) -> bool {
    status.code() == Code::InvalidArgument && status.message() == AUTH_FAILED
}

/// The URL to connect to for an endpoint as etcdctl's `--endpoints` takes it: `http://` and
/// `https://` URLs as given; `host:port` with TLS when TLS files are given, as clientv3 dials an
/// endpoint without a scheme with the client's TLS settings (etcd: clientv3/client.go
/// `dialWithBalancerCreds`), and plaintext otherwise.
fn upstream_url(endpoint: &str, tls: bool) -> Result<String, UpstreamError> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        Ok(endpoint.to_owned())
    } else if endpoint.contains("://") {
        Err(UpstreamError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: "only http:// and https:// endpoints are supported".into(),
        })
    } else if tls {
        Ok(format!("https://{endpoint}"))
    } else {
        Ok(format!("http://{endpoint}"))
    }
}

/// The TLS client configuration `tls`'s files make, checked now: each file read and parsed, the
/// CA usable as a trust anchor, the key the certificate's. No CA file: Mozilla's roots.
fn client_tls(tls: &UpstreamTls) -> Result<ClientTlsConfig, UpstreamError> {
    let mut config = ClientTlsConfig::new().timeout(CONNECT_TIMEOUT);
    let mut roots = RootCertStore::empty();
    match &tls.cacert {
        Some(path) => {
            for ca in read_certificates(path)? {
                roots.add(ca).map_err(|source| TlsError::TrustedCa { path: path.clone(), source })?;
            }
            config = config.ca_certificate(Certificate::from_pem(read(path)?));
        }
        None => config = config.with_webpki_roots(),
    }
    match (&tls.cert, &tls.key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert)?;
            let key_pem = read(key)?;
            let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|source| TlsError::Pem { path: key.clone(), source })?;
            // rustls checks that the key is the certificate's (and usable) when it takes them.
            ClientConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .map_err(TlsError::from)?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, private_key)
                .map_err(|source| TlsError::KeyPair { cert: cert.clone(), key: key.clone(), source })?;
            config = config.identity(Identity::from_pem(read(cert)?, key_pem));
        }
        _ => return Err(UpstreamError::CertWithoutKey),
    }
    Ok(config)
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Pem { path: path.clone(), source: pem::Error::Io(e) })
}

/// A failed call's code and message, with the transport's causes when tonic has them (its own
/// message is then only "transport error"); for an `http://` endpoint whose HTTP/2 connection
/// broke, the hint that upstream may serve TLS.
#[must_use]
pub fn status_text(status: &Status, url: &str) -> String {
    let mut text = format!("{}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        let causes = error_chain(source);
        // tonic's message repeats its source's first text ("transport error").
        let causes =
            causes.strip_prefix(status.message()).map_or(causes.as_str(), |rest| rest.trim_start_matches(": "));
        if !causes.is_empty() {
            text.push_str(": ");
            text.push_str(causes);
        }
        if url.starts_with("http://") {
            text.push_str(PLAINTEXT_HINT);
        }
    }
    text
}

/// An error with its causes, `: `-separated (tonic's transport error alone reads only
/// "transport error").
#[must_use]
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicI64, Ordering};

    use rcgen::{CertificateParams, KeyPair};

    use super::*;
    use crate::api::pb::etcdserverpb::auth_server::{Auth, AuthServer};
    use crate::api::pb::etcdserverpb::kv_client::KvClient;
    use crate::api::pb::etcdserverpb::kv_server::{Kv, KvServer};
    use crate::api::pb::etcdserverpb::{AuthenticateResponse, RangeRequest, RangeResponse};

    fn endpoints(list: &[&str]) -> Vec<String> {
        list.iter().map(|e| (*e).to_string()).collect()
    }

    /// A self-signed certificate and its key, written to `<dir>/<name>.pem` and `<name>-key.pem`.
    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let cert =
            CertificateParams::new(vec!["localhost".to_string()]).expect("params").self_signed(&key).expect("cert");
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    #[test]
    fn endpoints_are_etcdctls_urls_or_host_port() {
        assert_eq!(upstream_url("http://10.0.0.1:2379", false).expect("http"), "http://10.0.0.1:2379");
        assert_eq!(upstream_url("https://10.0.0.1:2379", false).expect("https"), "https://10.0.0.1:2379");
        assert_eq!(upstream_url("10.0.0.1:2379", false).expect("host:port"), "http://10.0.0.1:2379");
        assert_eq!(upstream_url("10.0.0.1:2379", true).expect("host:port with TLS"), "https://10.0.0.1:2379");
        assert!(upstream_url("unix:///run/etcd.sock", false).is_err());
        let upstream = UpstreamEtcd::plain(&endpoints(&["10.0.0.1:2379", "https://10.0.0.2:2379"])).expect("plain");
        assert_eq!(upstream.endpoints(), ["http://10.0.0.1:2379", "https://10.0.0.2:2379"]);
        assert!(matches!(UpstreamEtcd::plain(&[]), Err(UpstreamError::NoEndpoint)));
    }

    #[test]
    fn bad_tls_files_and_combinations_are_refused_up_front() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = self_signed(dir.path(), "client");
        let (_, other_key) = self_signed(dir.path(), "other");
        let https = endpoints(&["https://127.0.0.1:2379"]);
        let tls = |cacert: Option<&PathBuf>, cert: Option<&PathBuf>, key: Option<&PathBuf>| UpstreamTls {
            cacert: cacert.cloned(),
            cert: cert.cloned(),
            key: key.cloned(),
        };
        let refused = |endpoints: &[String], files: UpstreamTls| {
            UpstreamEtcd::new(endpoints, &files, None).expect_err("refused").to_string()
        };

        UpstreamEtcd::new(&https, &tls(Some(&cert), Some(&cert), Some(&key)), None).expect("CA, certificate and key");
        let err = refused(&https, tls(None, Some(&cert), None));
        assert!(err.contains("a client certificate and its key must both be given"), "{err}");
        let err = refused(&https, tls(None, None, Some(&key)));
        assert!(err.contains("must both be given"), "{err}");
        let err = refused(&endpoints(&["http://127.0.0.1:2379"]), tls(Some(&cert), None, None));
        assert!(err.contains("TLS files are given for a plaintext http:// endpoint"), "{err}");
        // A key file where the CA belongs holds no certificate.
        let err = refused(&https, tls(Some(&key), None, None));
        assert!(err.contains("no certificate found"), "{err}");
        let err = refused(&https, tls(None, Some(&cert), Some(&other_key)));
        assert!(err.contains("with key") && err.contains("other-key.pem"), "{err}");
        let err = refused(&https, tls(Some(&dir.path().join("missing.pem")), None, None));
        assert!(err.contains("missing.pem"), "{err}");
    }

    #[test]
    fn credentials_are_read_as_etcdctl_reads_user_and_password() {
        assert_eq!(
            Credentials::from_flags("root:pw:with:colons", None).expect("user"),
            Credentials::new("root", "pw:with:colons")
        );
        assert_eq!(Credentials::from_flags("a:b", Some("secret")).expect("user"), Credentials::new("a:b", "secret"));
        assert_eq!(
            Credentials::from_flags("root:pw", Some("")).expect("empty --password"),
            Credentials::new("root", "pw")
        );
        let err = Credentials::from_flags("root", None).expect_err("no password").to_string();
        assert!(err.contains("no password for user \"root\""), "{err}");
        assert!(Credentials::from_flags(":pw", None).is_err());
        let shown = format!("{:?}", Credentials::new("root", "hunter2"));
        assert!(shown.contains("root") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_broken_connection_is_told_with_its_causes_and_for_http_the_tls_hint() {
        #[derive(Debug)]
        struct Transport(std::io::Error);
        impl std::fmt::Display for Transport {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Transport {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let broken =
            || Status::from_error(Box::new(Transport(std::io::Error::other("stream closed because of a broken pipe"))));
        assert_eq!(
            status_text(&broken(), "http://10.0.0.1:2379"),
            "Unknown error: transport error: stream closed because of a broken pipe (if upstream serves TLS, use https:// \
             and its CA file)"
        );
        assert_eq!(
            status_text(&broken(), "https://10.0.0.1:2379"),
            "Unknown error: transport error: stream closed because of a broken pipe"
        );
        let refused = Status::permission_denied("etcdserver: permission denied");
        let text = status_text(&refused, "http://10.0.0.1:2379");
        assert_eq!(text, format!("{}: etcdserver: permission denied", Code::PermissionDenied));
    }

    /// An upstream whose `Authenticate` hands out tokens `t1`, `t2`, … and whose `Range` takes
    /// only the newest one ever handed out (older ones get etcd's invalid auth token), answering
    /// with that token's number as `count`.
    #[derive(Clone, Default)]
    struct RotatingTokens {
        newest: Arc<AtomicI64>,
    }

    #[tonic::async_trait]
    impl Auth for RotatingTokens {
        async fn authenticate(
            &self,
            request: Request<AuthenticateRequest>,
        ) -> Result<tonic::Response<AuthenticateResponse>, Status> {
            let request = request.into_inner();
            if (request.name.as_str(), request.password.as_str()) != ("mirror", "pw") {
                return Err(Status::invalid_argument(AUTH_FAILED));
            }
            let n = self.newest.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(tonic::Response::new(AuthenticateResponse { token: format!("t{n}"), ..AuthenticateResponse::default() }))
        }
    }

    #[tonic::async_trait]
    impl Kv for RotatingTokens {
        async fn range(&self, request: Request<RangeRequest>) -> Result<tonic::Response<RangeResponse>, Status> {
            let newest = self.newest.load(Ordering::SeqCst);
            match request.metadata().get("token").and_then(|t| t.to_str().ok()) {
                Some(token) if token == format!("t{newest}") => {
                    Ok(tonic::Response::new(RangeResponse { count: newest, ..RangeResponse::default() }))
                }
                Some(_) => Err(Status::unauthenticated(INVALID_AUTH_TOKEN)),
                None => Err(Status::invalid_argument(USER_EMPTY)),
            }
        }
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_once_and_the_call_made_again() {
        let fake = RotatingTokens::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AuthServer::new(fake.clone()))
                .add_service(KvServer::new(fake.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let range = |upstream: UpstreamEtcd, channel: Channel| async move {
            upstream
                .call(&channel, |token| {
                    let mut kv = KvClient::new(channel.clone());
                    let request = authorized(RangeRequest::default(), token.as_ref());
                    async move { kv.range(request).await }
                })
                .await
                .map(|r| r.into_inner().count)
        };
        let upstream = UpstreamEtcd::new(
            std::slice::from_ref(&url),
            &UpstreamTls::default(),
            Some(Credentials::new("mirror", "pw")),
        )
        .expect("upstream");
        let channel = upstream.connect(&url, ChannelOptions::default()).await.expect("connect");

        assert_eq!(range(upstream.clone(), channel.clone()).await.expect("first call"), 1, "authenticated once");
        assert_eq!(range(upstream.clone(), channel.clone()).await.expect("second call"), 1, "the token is held");
        // Upstream forgets t1 (as etcd after its token TTL or a restart): the call is refused,
        // authenticates again (t3) and goes through.
        fake.newest.fetch_add(1, Ordering::SeqCst);
        assert_eq!(range(upstream.clone(), channel.clone()).await.expect("after the refusal"), 3);
        assert_eq!(fake.newest.load(Ordering::SeqCst), 3, "one new Authenticate");

        let wrong = UpstreamEtcd::new(
            std::slice::from_ref(&url),
            &UpstreamTls::default(),
            Some(Credentials::new("mirror", "no")),
        )
        .expect("upstream");
        let refused = range(wrong, channel.clone()).await.expect_err("wrong password");
        assert!(credentials_refused(&refused), "{refused:?}");
        let anonymous = range(UpstreamEtcd::plain(&[url]).expect("upstream"), channel).await.expect_err("no token");
        assert_eq!(anonymous.message(), USER_EMPTY, "without credentials nothing is retried");
    }

    #[test]
    fn only_a_connection_that_failed_counts_as_never_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let not_connected = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(not_connected.code(), Code::Unavailable);
        assert!(never_sent(&not_connected));
        // The same text as an answer (a mirror passing upstream's error on) proves nothing.
        assert!(!never_sent(&Status::unavailable(not_connected.message())));
        assert!(!never_sent(&Status::unavailable("etcdserver: leader changed")));
    }

    #[test]
    fn token_refusals_are_clientv3s() {
        assert!(token_refused(&Status::unauthenticated(INVALID_AUTH_TOKEN)));
        assert!(token_refused(&Status::invalid_argument(AUTH_OLD_REVISION)));
        assert!(token_refused(&Status::invalid_argument(USER_EMPTY)));
        assert!(!token_refused(&Status::permission_denied("etcdserver: permission denied")));
        assert!(!token_refused(&Status::invalid_argument(AUTH_FAILED)));
        assert!(credentials_refused(&Status::invalid_argument(AUTH_FAILED)));
        assert!(watch_token_refused("rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"));
        // etcd up to 3.4.21 and 3.5.5 refuse an expired token's watch so.
        assert!(watch_token_refused("rpc error: code = PermissionDenied desc = etcdserver: permission denied"));
        assert!(!watch_token_refused("etcdserver: mvcc: required revision has been compacted"));
    }
}
