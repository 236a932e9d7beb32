//! TLS setup: the client-facing acceptor (certificate and key from files, reloaded when they
//! change, optional client certificates for certificate identities) and the connector toward
//! PostgreSQL (`require` or `verify-full` against a CA file, as RDS needs).

use crate::config::{ServerTlsConfig, ServerTlsMode, TlsConfig};
use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate found"));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_err(path, e))?;
    }
    Ok(roots)
}

/// The client-facing TLS configuration, swappable while the proxy runs.
pub struct ClientTls {
    files: Vec<PathBuf>,
    settings: TlsConfig,
    base: PathBuf,
    current: RwLock<(Arc<ServerConfig>, Vec<Option<SystemTime>>)>,
}

impl ClientTls {
    pub fn load(settings: &TlsConfig, base: &Path) -> Result<Arc<ClientTls>, TlsError> {
        let mut files = vec![
            base.join(&settings.cert_file),
            base.join(&settings.key_file),
        ];
        if let Some(ca) = &settings.client_ca_file {
            files.push(base.join(ca));
        }
        let config = Self::build(settings, base)?;
        let stamps = mtimes(&files);
        Ok(Arc::new(ClientTls {
            files,
            settings: settings.clone(),
            base: base.to_owned(),
            current: RwLock::new((config, stamps)),
        }))
    }

    fn build(settings: &TlsConfig, base: &Path) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = load_certs(&base.join(&settings.cert_file))?;
        let key_path = base.join(&settings.key_file);
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| file_err(&key_path, e))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &settings.client_ca_file {
            Some(ca) => {
                let roots = Arc::new(load_roots(&base.join(ca))?);
                // Certificates are optional at the TLS layer: users that need one (auth: cert)
                // are refused later with a clear PostgreSQL error instead of a TLS alert.
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Arc::new(config))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().0.clone())
    }

    /// Reloads the certificate, key and CA when their files change; a broken new set is
    /// logged and the old one kept.
    pub async fn watch(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.triggered() => return,
            }
            let stamps = mtimes(&self.files);
            if stamps == self.current.read().1 {
                continue;
            }
            match Self::build(&self.settings, &self.base) {
                Ok(config) => {
                    *self.current.write() = (config, stamps);
                    tracing::info!("TLS certificate reloaded");
                }
                Err(e) => {
                    self.current.write().1 = stamps;
                    tracing::error!(error = %e, "TLS files changed but cannot be loaded; keeping the previous certificate");
                }
            }
        }
    }
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// How the proxy reaches PostgreSQL over TLS.
#[derive(Clone)]
pub struct ServerTls {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

pub fn server_tls(
    settings: &ServerTlsConfig,
    host: &str,
    base: &Path,
) -> Result<Option<ServerTls>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match settings.mode {
        ServerTlsMode::Disable => return Ok(None),
        ServerTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
            .with_no_client_auth(),
        ServerTlsMode::VerifyFull => {
            let ca = settings.ca_file.as_ref().ok_or_else(|| {
                TlsError::Config("server.tls.mode verify-full needs ca_file".into())
            })?;
            builder
                .with_root_certificates(load_roots(&base.join(ca))?)
                .with_no_client_auth()
        }
    };
    let name = settings
        .server_name
        .clone()
        .unwrap_or_else(|| host.to_owned());
    let name =
        ServerName::try_from(name).map_err(|e| TlsError::Config(format!("server name: {e}")))?;
    Ok(Some(ServerTls {
        connector: TlsConnector::from(Arc::new(config)),
        name,
    }))
}

/// `require` semantics, as libpq's sslmode=require: encrypt, but do not check who answers.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The tenant named by a client certificate under `rule`: the first SAN URI starting with
/// the rule's prefix (rest of the URI), or the subject CN.
pub fn cert_tenant(
    cert: &CertificateDer<'_>,
    rule: &crate::config::CertTenantRule,
) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    match rule.from {
        crate::config::CertField::SanUri => {
            let san = parsed.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::URI(uri) => uri.strip_prefix(rule.prefix.as_str()).map(str::to_owned),
                _ => None,
            })
        }
        crate::config::CertField::Cn => {
            let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?;
            cn.strip_prefix(rule.prefix.as_str()).map(str::to_owned)
        }
    }
}
