//! Owns TLS on the client port as etcd's flags configure it (etcd: pkg/transport/listener.go
//! `TLSInfo.ServerConfig`): the server's certificate and key (`--cert-file`, `--key-file`), the
//! CAs a client certificate must chain to (`--trusted-ca-file`) and whether clients must present
//! one (`--client-cert-auth`); the protocols ALPN offers; and the user a verified client
//! certificate names ([`ClientCertUser`]). The handshake itself runs in [`crate::listener`].
//!
//! rustls with the `ring` provider; no OpenSSL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnection, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::api::ClientCertUser;

/// ALPN's name for HTTP/2: a client that negotiates it speaks gRPC.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN's name for HTTP/1.1: a client that negotiates it speaks to the gateway.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The TLS flags of the client port, with etcd's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--cert-file`: the server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// `--key-file`: the server certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `--trusted-ca-file`: the CA certificates (PEM) a client certificate must chain to.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth`: clients must present a certificate signed by a trusted CA.
    pub client_cert_auth: bool,
}

impl TlsFiles {
    /// A server certificate and key, with no client certificates asked for.
    #[must_use]
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self { cert_file: cert_file.into(), key_file: key_file.into(), trusted_ca_file: None, client_cert_auth: false }
    }

    /// Whether the handshake requires a client certificate: with `--client-cert-auth`, and, as
    /// etcd 3.4 does, whenever `--trusted-ca-file` is given (etcd: pkg/transport/listener.go
    /// `ServerConfig` sets `RequireAndVerifyClientCert` for either).
    #[must_use]
    pub fn requires_client_certificate(&self) -> bool {
        self.client_cert_auth || self.trusted_ca_file.is_some()
    }
}

/// Why the client port's TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or parsed.
    #[error("{}: {source}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{}: no certificate found", .0.display())]
    NoCertificate(PathBuf),
    /// A CA certificate is not usable as a trust anchor.
    #[error("{}: not a usable CA certificate: {source}", .path.display())]
    TrustedCa {
        /// The file.
        path: PathBuf,
        /// What rustls found wrong.
        source: rustls::Error,
    },
    /// `--client-cert-auth` without `--trusted-ca-file`: etcd would verify client certificates
    /// against the system's CAs, which watchkv does not load.
    #[error("--client-cert-auth needs --trusted-ca-file: the CAs that sign client certificates")]
    ClientCertAuthWithoutCa,
    /// The client certificate verifier cannot be built.
    #[error("client certificate verification: {0}")]
    Verifier(#[from] VerifierBuilderError),
    /// The certificate and key do not make a server configuration (for example, the key is not
    /// the certificate's).
    #[error("certificate {} with key {}: {source}", .cert.display(), .key.display())]
    KeyPair {
        /// `--cert-file`.
        cert: PathBuf,
        /// `--key-file`.
        key: PathBuf,
        /// What rustls found wrong.
        source: rustls::Error,
    },
    /// Another rustls error.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// The cryptography rustls uses here: *ring* (aws-lc-rs, which rustls now prefers for its
/// post-quantum key exchange, needs a C toolchain setup this project does not require). The
/// key exchanges are X25519 and the NIST curves, as Go's `crypto/tls` (and so etcd) offers
/// by default.
#[must_use]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Deprecated in rustls 0.23.48 only for lacking post-quantum key exchange.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client port's TLS server: the configuration every handshake uses.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    /// Whether a verified client certificate's Common Name is the connection's user.
    certificate_users: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files and builds the server configuration: TLS 1.2 and 1.3 (etcd's minimum is
    /// 1.2), client certificates as [`TlsFiles::requires_client_certificate`] says.
    ///
    /// # Errors
    /// A file cannot be read or holds nothing usable, the key is not the certificate's, or
    /// client certificates are required without `--trusted-ca-file`.
    pub fn from_files(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = crypto_provider();
        let certs = read_certificates(&files.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&files.key_file)
            .map_err(|source| TlsError::Pem { path: files.key_file.clone(), source })?;
        let builder =
            ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
        let builder = if files.requires_client_certificate() {
            let Some(ca_file) = &files.trusted_ca_file else {
                return Err(TlsError::ClientCertAuthWithoutCa);
            };
            let mut roots = RootCertStore::empty();
            for ca in read_certificates(ca_file)? {
                roots.add(ca).map_err(|source| TlsError::TrustedCa { path: ca_file.clone(), source })?;
            }
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?,
            )
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(certs, key).map_err(|source| TlsError::KeyPair {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            source,
        })?;
        Ok(Self::from_config(config).with_certificate_users(files.client_cert_auth))
    }

    /// Uses `config` (for embedders with their own certificate handling), with ALPN set to the
    /// client port's protocols: `http/1.1` first, then `h2`. The server picks the first of its
    /// own list the client offers, so gRPC clients (which offer `h2` alone) get gRPC and an HTTP
    /// client that offers both gets the gateway, which speaks HTTP/1.1 only. A verified client
    /// certificate names the connection's user ([`Self::with_certificate_users`]): the embedder
    /// who gives a verifier chose client-certificate auth.
    #[must_use]
    pub fn from_config(mut config: ServerConfig) -> Self {
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec(), ALPN_H2.to_vec()];
        Self { acceptor: TlsAcceptor::from(Arc::new(config)), certificate_users: true }
    }

    /// Whether a verified client certificate's Common Name is the connection's user
    /// ([`ClientCertUser`]). Only with `--client-cert-auth`, as in etcd: `--trusted-ca-file`
    /// alone makes the handshake require a certificate, but etcd then takes no user from it
    /// (etcd: etcdserver/v3_server.go `AuthInfoFromCtx` returns none unless
    /// `ClientCertAuthEnabled`), so a certificate whose name is `root` is not root.
    #[must_use]
    pub fn with_certificate_users(mut self, enabled: bool) -> Self {
        self.certificate_users = enabled;
        self
    }

    /// The user a verified client certificate of `connection` names, if certificates name
    /// users here ([`Self::with_certificate_users`]).
    #[must_use]
    pub fn certificate_user(&self, connection: &ServerConnection) -> Option<ClientCertUser> {
        if self.certificate_users {
            client_cert_user(connection)
        } else {
            None
        }
    }

    /// The handshake runner.
    #[must_use]
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Every certificate in a PEM file, in order (also the upstream's CA and client certificate,
/// `crate::upstream`).
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem { path: path.to_path_buf(), source };
    let certs =
        CertificateDer::pem_file_iter(path).map_err(pem_error)?.collect::<Result<Vec<_>, _>>().map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The user a connection's client certificate names, when the handshake verified one: the
/// Common Name of the leaf certificate's subject (etcd: auth/store.go `AuthInfoFromTLS`).
#[must_use]
pub fn client_cert_user(connection: &ServerConnection) -> Option<ClientCertUser> {
    let leaf = connection.peer_certificates()?.first()?;
    match subject_common_name(leaf.as_ref()) {
        Some(name) => Some(ClientCertUser(name.unwrap_or_default())),
        None => {
            // The verifier accepted the certificate, so its DER parses; this is a safeguard.
            tracing::warn!("client certificate subject could not be read; no user for the connection");
            None
        }
    }
}

/// The Common Name in a DER certificate's subject: `None` when the DER does not parse as a
/// certificate, `Some(None)` when the subject has no Common Name. With several, the last one,
/// as Go's `pkix.Name.FillFromRDNSequence` keeps (and so etcd's `Subject.CommonName`).
fn subject_common_name(certificate: &[u8]) -> Option<Option<String>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let name = parsed.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).last();
    Some(name.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    fn certificate_with(subject: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let mut name = DistinguishedName::new();
        for (kind, value) in subject {
            name.push(kind.clone(), *value);
        }
        params.distinguished_name = name;
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("certificate").der().to_vec()
    }

    #[test]
    fn the_common_name_is_the_user() {
        let der = certificate_with(&[
            (DnType::OrganizationName, "watchkv tests"),
            (DnType::CommonName, "alice"),
            (DnType::CountryName, "NL"),
        ]);
        assert_eq!(subject_common_name(&der), Some(Some("alice".to_string())));
    }

    #[test]
    fn a_subject_without_common_name_names_no_one() {
        let der = certificate_with(&[(DnType::OrganizationName, "watchkv tests")]);
        assert_eq!(subject_common_name(&der), Some(None));
    }

    #[test]
    fn a_long_common_name_is_read_whole() {
        // Past 127 bytes DER lengths take more than one octet.
        let long = "u".repeat(300);
        let der = certificate_with(&[(DnType::CommonName, &long)]);
        assert_eq!(subject_common_name(&der), Some(Some(long)));
    }

    #[test]
    fn truncated_der_is_refused_without_panicking() {
        let der = certificate_with(&[(DnType::CommonName, "alice")]);
        for len in 0..der.len() {
            assert_eq!(subject_common_name(&der[..len]), None, "a prefix of {len} bytes is no certificate");
        }
    }

    #[test]
    fn client_certificates_need_a_trusted_ca() {
        let files = TlsFiles { client_cert_auth: true, ..TlsFiles::new("cert.pem", "key.pem") };
        assert!(files.requires_client_certificate());
        let with_ca_only = TlsFiles { trusted_ca_file: Some("ca.pem".into()), ..TlsFiles::new("cert.pem", "key.pem") };
        assert!(with_ca_only.requires_client_certificate(), "etcd 3.4 requires them whenever a CA is given");
        assert!(!TlsFiles::new("cert.pem", "key.pem").requires_client_certificate());
    }
}
