//! TLS for jwtgate's listeners and its upstream, through rustls with one crypto provider for
//! the whole binary: aws-lc-rs, which already verifies token signatures. reqwest (discovery,
//! JWKS, APIM) is built without a provider of its own and picks up the one installed here, so
//! ring is not linked at all.
//!
//! Certificates and keys are read from PEM files named in the configuration (relative to it)
//! when the listener starts and again on every reload; a file that cannot be used is reported
//! with its path and the reason, and on reload the running certificate stays.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

mod expiry;

/// Installs aws-lc-rs as the process-wide rustls provider (idempotent). Everything that
/// builds a TLS client or server calls this first.
pub fn install_crypto_provider() {
    // `Err` means a provider is installed already, which is what was wanted.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The provider, for configs built explicitly.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `[server.tls]` / `[decision.tls]`: where a listener's certificate chain and key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first (resolved against the config file's folder).
    pub cert_file: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key_file: PathBuf,
}

/// A listener's TLS as read from its files.
pub struct LoadedTls {
    /// The server config to accept with.
    pub config: Arc<rustls::ServerConfig>,
    /// When the leaf certificate expires (Unix seconds); `None` when its DER has no readable
    /// `notAfter` (the certificate is served all the same; the expiry metric is absent).
    pub not_after: Option<i64>,
}

impl ListenerTls {
    /// Reads both files and builds a server config offering HTTP/2 and HTTP/1.1 by ALPN.
    /// The error names the file and what is wrong with it.
    pub fn load(&self) -> Result<LoadedTls, String> {
        let chain = read_certs(&self.cert_file)?;
        let not_after = chain.first().and_then(|leaf| expiry::not_after(leaf));
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| {
            format!("{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}", self.key_file.display())
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                format!(
                    "{} and {}: the key does not fit the certificate, or is of a kind rustls does not use: {e}",
                    self.cert_file.display(),
                    self.key_file.display()
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(LoadedTls { config: Arc::new(config), not_after })
    }
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block in the file", path.display()));
    }
    Ok(certs)
}

/// A client config for the upstream: the public web PKI roots, or only the CAs of `ca_file`
/// when one is given (the usual case for a service inside a cluster); `alpn` is offered.
pub fn client_config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name the upstream's certificate must carry (SNI and verification), from the URL host.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|e| format!("{host}: not a TLS server name: {e}"))
}

/// A connection that is plain TCP or TLS over it: client connections on a listener with
/// `[server.tls]`, and connections to an `https://` upstream. One type for both cases keeps
/// hyper's connection code compiled once per use (two instantiations cost it its inlining).
pub enum MaybeTls {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, as a server or as a client.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, data),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
