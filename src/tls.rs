//! TLS material: loading PEM files and building rustls configurations.
//!
//! Owns the serving config (our certificate; client certificates optional but, when
//! presented, verified against `--ca-file`) and the upstream identities: one rustls
//! `ClientConfig` per certificate in `--tls-config-file`, keyed by the Common Name
//! read from that certificate, plus the default identity (no client certificate).

use std::collections::HashMap;
use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::x509::{self, CertSummary};

#[derive(Debug)]
pub enum TlsError {
    Read { path: PathBuf, source: std::io::Error },
    NoCertificate(PathBuf),
    NoKey(PathBuf),
    BadCertificate { path: PathBuf, reason: String },
    Expired { path: PathBuf, not_after: String },
    Config { what: String, reason: String },
    TlsConfigFile { path: PathBuf, reason: String },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::NoCertificate(path) => write!(f, "no PEM certificate in {}", path.display()),
            TlsError::NoKey(path) => write!(f, "no PEM private key in {}", path.display()),
            TlsError::BadCertificate { path, reason } => write!(f, "{}: {reason}", path.display()),
            TlsError::Expired { path, not_after } => {
                write!(f, "{}: certificate expired at {not_after}", path.display())
            }
            TlsError::Config { what, reason } => write!(f, "{what}: {reason}"),
            TlsError::TlsConfigFile { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for TlsError {}

/// The one crypto provider: ring, because it cross-compiles to ARM without cmake.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Reads every certificate in a PEM file (a chain, a bundle, or a combined cert+key file).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs: Result<Vec<_>, _> =
        rustls_pemfile::certs(&mut BufReader::new(pem.as_slice())).collect();
    let certs =
        certs.map_err(|e| TlsError::BadCertificate { path: path.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.into()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    rustls_pemfile::private_key(&mut BufReader::new(pem.as_slice()))
        .map_err(|e| TlsError::BadCertificate { path: path.into(), reason: e.to_string() })?
        .ok_or_else(|| TlsError::NoKey(path.into()))
}

/// Reads a CA bundle into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::BadCertificate { path: path.into(), reason: e.to_string() })?;
    }
    Ok(roots)
}

/// A certificate chain and its key, checked to be readable and not expired.
pub struct KeyPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub summary: CertSummary,
}

impl KeyPair {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<KeyPair, TlsError> {
        let chain = load_certs(cert_path)?;
        let key = load_key(key_path)?;
        let summary = x509::summarize(&chain[0]).map_err(|e| TlsError::BadCertificate {
            path: cert_path.into(),
            reason: e.to_string(),
        })?;
        if summary.not_after_unix < crate::clock::unix_now() {
            let not_after = x509::format_unix(summary.not_after_unix);
            return Err(TlsError::Expired { path: cert_path.into(), not_after });
        }
        Ok(KeyPair { chain, key, summary })
    }
}

/// The serving config: our certificate, client certificates optional but verified.
pub fn server_config(
    serving: KeyPair,
    client_ca: RootCertStore,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config_error = |what: &str, reason: String| TlsError::Config { what: what.into(), reason };
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(client_ca), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| config_error("--ca-file", e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("tls versions", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(serving.chain, serving.key)
        .map_err(|e| config_error("--tls-cert-file/--tls-private-key-file", e.to_string()))?;
    // HTTP/1.1 only: Go clients then never try HTTP/2 with us.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How the cloud apiserver's certificate is checked.
#[derive(Clone)]
pub enum UpstreamTrust {
    Roots(Arc<RootCertStore>),
    /// `--insecure`: any certificate is accepted.
    Insecure,
}

/// One upstream TLS identity: the client certificate lite-apiserver presents to the
/// cloud on behalf of the clients with this Common Name.
pub struct Identity {
    /// The CN, or empty for the default identity.
    pub name: String,
    /// Certificate facts for logs and /debug/certs (None for the default identity).
    pub summary: Option<CertSummary>,
    pub cert_path: Option<PathBuf>,
    pub config: Arc<ClientConfig>,
    /// Unique per loaded identity: pooled connections of an older one are retired.
    pub generation: u64,
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

impl Identity {
    pub fn default_identity(trust: &UpstreamTrust) -> Result<Identity, TlsError> {
        Ok(Identity {
            name: String::new(),
            summary: None,
            cert_path: None,
            config: client_config(trust, None)?,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        trust: &UpstreamTrust,
    ) -> Result<Identity, TlsError> {
        let pair = KeyPair::load(cert_path, key_path)?;
        let name = pair.summary.common_name.clone().ok_or_else(|| TlsError::BadCertificate {
            path: cert_path.into(),
            reason: "certificate has no Common Name".into(),
        })?;
        let summary = pair.summary.clone();
        Ok(Identity {
            name,
            summary: Some(summary),
            cert_path: Some(cert_path.to_path_buf()),
            config: client_config(trust, Some(pair))?,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }
}

fn client_config(
    trust: &UpstreamTrust,
    auth: Option<KeyPair>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config { what: "tls versions".into(), reason: e.to_string() })?;
    let builder = match trust {
        UpstreamTrust::Roots(roots) => builder.with_root_certificates(roots.clone()),
        UpstreamTrust::Insecure => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert))
        }
    };
    let mut config = match auth {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let path = pair.summary.common_name.clone().unwrap_or_default();
            builder.with_client_auth_cert(pair.chain, pair.key).map_err(|e| TlsError::Config {
                what: format!("identity {path}"),
                reason: e.to_string(),
            })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // `config.resumption` stays rustls' default, an in-memory session store per identity:
    // new connections to the cloud resume (counted in lite_apiserver_upstream_resumed_total).
    Ok(Arc::new(config))
}

/// The identities in use: CN → identity, and the default one.
#[derive(Clone)]
pub struct IdentitySet {
    pub by_name: HashMap<String, Arc<Identity>>,
    pub default: Arc<Identity>,
}

impl IdentitySet {
    /// The identity for a client: its certificate's CN when configured, else the default.
    pub fn select(&self, client_cn: Option<&str>) -> &Arc<Identity> {
        client_cn.and_then(|cn| self.by_name.get(cn)).unwrap_or(&self.default)
    }
}

/// One entry of `--tls-config-file`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads `--tls-config-file`: `[{"cert": "...", "key": "..."}, ...]`.
pub fn read_identity_list(path: &Path) -> Result<Vec<IdentityFiles>, TlsError> {
    let text = read_pem(path)?;
    let bad = |reason: String| TlsError::TlsConfigFile { path: path.into(), reason };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let entries = value.as_array().ok_or_else(|| bad("expected a JSON array".into()))?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            };
            match (field("cert"), field("key")) {
                (Some(cert), Some(key)) => Ok(IdentityFiles { cert, key }),
                _ => Err(bad(format!("entry {index} needs \"cert\" and \"key\" paths"))),
            }
        })
        .collect()
}

/// `--insecure`: accept any server certificate, but still check handshake signatures.
#[derive(Debug)]
struct AcceptAnyServerCert;

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The server name to verify the cloud apiserver against (a DNS name or an IP).
pub fn upstream_server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|e| TlsError::Config {
        what: "--kube-apiserver-url".into(),
        reason: e.to_string(),
    })
}
