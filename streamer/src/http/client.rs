//! The outgoing HTTP client of the server's webhooks and sinks (listener
//! auth, Elasticsearch): hyper's pooled client over the rustls (ring) and
//! web PKI roots already in the tree; http:// and https://.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// A pooled client for `http://` and `https://` URLs.
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds one (its TLS set-up fails only if ring has no protocol version).
pub fn https_client() -> Result<HttpsClient, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}

/// A URL without its userinfo, and that userinfo as a Basic
/// `Authorization` value (`https://user:pass@host/…`).
pub fn split_userinfo(url: &str) -> (String, Option<String>) {
    use base64::Engine as _;
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let cred = &rest[..at];
            let decoded: String = form_urlencoded::parse(format!("x={cred}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let b64 = base64::engine::general_purpose::STANDARD.encode(decoded);
            (
                format!("{scheme}://{}", &rest[at + 1..]),
                Some(format!("Basic {b64}")),
            )
        }
        None => (url.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_becomes_basic_auth() {
        let (u, b) = split_userinfo("https://us%40r:p@auth.example/add?k=1");
        assert_eq!(u, "https://auth.example/add?k=1");
        // base64("us@r:p")
        assert_eq!(b.as_deref(), Some("Basic dXNAcjpw"));
        assert_eq!(split_userinfo("http://a/b").1, None);
    }
}
