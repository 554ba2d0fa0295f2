//! Where a pulled stream's URL points, and the connection to it: plain TCP
//! for `http://`, TLS (rustls, the public web roots plus an optional CA file)
//! for `https://`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Errors reaching an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Not a URL we can pull.
    #[error("{url:?}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The CA file could not be used.
    #[error("CA file {path}: {why}")]
    CaFile {
        /// Its path.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// TCP connect failed or timed out.
    #[error("connect to {0}")]
    Connect(String),
    /// The TLS handshake failed (an untrusted certificate, a name mismatch).
    #[error("TLS with {host}: {why}")]
    Tls {
        /// The upstream host.
        host: String,
        /// The handshake error.
        why: String,
    },
}

/// A parsed upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `https://`.
    pub tls: bool,
    /// Host name or address (no port, no brackets).
    pub host: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// Path and query.
    pub path: String,
}

impl Upstream {
    /// Parses an `http://` or `https://` URL (default ports 80 and 443).
    pub fn parse(url: &str) -> Result<Upstream, UpstreamError> {
        let bad = |why| UpstreamError::Url {
            url: url.to_string(),
            why,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("only http:// and https:// URLs can be pulled"));
        };
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            // They would end up in logs; upstream credentials are not supported.
            return Err(bad("credentials in the URL are not supported"));
        }
        // `[v6]:port`, `host:port`, or a bare host.
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h.to_string(), p.to_string())
            }
            _ => (
                authority.to_string(),
                if tls { "443" } else { "80" }.to_string(),
            ),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Upstream {
            tls,
            host,
            authority,
            path,
        })
    }
}

/// A connection to an upstream, plain or TLS.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Connects to `up` (TLS for `https://`, trusting the public web roots and
/// the certificates in `ca_file`). Returns the connection and the peer.
pub async fn connect(
    up: &Upstream,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<(Box<dyn Connection>, Option<SocketAddr>), UpstreamError> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&up.authority))
        .await
        .map_err(|_| UpstreamError::Connect(format!("{}: timed out", up.authority)))?
        .map_err(|e| UpstreamError::Connect(format!("{}: {e}", up.authority)))?;
    let peer = tcp.peer_addr().ok();
    if !up.tls {
        return Ok((Box::new(tcp), peer));
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_file)?));
    let name = ServerName::try_from(up.host.clone()).map_err(|e| UpstreamError::Tls {
        host: up.host.clone(),
        why: e.to_string(),
    })?;
    let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| UpstreamError::Tls {
            host: up.host.clone(),
            why: "handshake timed out".into(),
        })?
        .map_err(|e| UpstreamError::Tls {
            host: up.host.clone(),
            why: e.to_string(),
        })?;
    Ok((Box::new(tls), peer))
}

fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, UpstreamError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let ca_err = |why: String| UpstreamError::CaFile {
            path: path.display().to_string(),
            why,
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))? {
            let cert = cert.map_err(|e| ca_err(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_err("no certificate in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Tls {
            host: String::new(),
            why: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Upstream::parse("http://up:8000/live").unwrap();
        assert_eq!(
            (
                u.tls,
                u.host.as_str(),
                u.authority.as_str(),
                u.path.as_str()
            ),
            (false, "up", "up:8000", "/live")
        );
        let u = Upstream::parse("https://radio.example/live?x=1").unwrap();
        assert_eq!(
            (u.tls, u.authority.as_str(), u.path.as_str()),
            (true, "radio.example:443", "/live?x=1")
        );
        let u = Upstream::parse("http://up").unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("up:80", "/"));
        let u = Upstream::parse("https://[::1]:8443/a").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority.as_str()),
            ("::1", "[::1]:8443")
        );
        for bad in [
            "ftp://up/x",
            "https:///x",
            "up:8000/live",
            "http://u:pw@up/x",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let dir = std::env::temp_dir().join(format!("sm-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = client_config(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(e.to_string().starts_with("CA file"), "{e}");
        assert!(client_config(None).is_ok());
    }
}
