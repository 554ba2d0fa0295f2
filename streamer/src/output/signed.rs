//! Signed, expiring listener URLs (`signedUrls` streams): `?expires=<unix
//! seconds>&sig=<hex HMAC-SHA256 of "<name>:<expires>">` with
//! `listeners.urlSecret`, where `name` is the stream key (or `sg/<group>`
//! for a stream group's multivariant playlist). A paywall or app backend
//! computes the same with any HMAC library:
//!
//! ```text
//! printf 'live:1767225600' | openssl dgst -sha256 -hmac "$SECRET"
//! ```
//!
//! Stateless, so a token works on every slave and across a handoff.

use ring::hmac;

use crate::http::Request;

/// Why a request was not let in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// No `expires`/`sig` in the URL.
    #[error("this stream needs a signed URL (?expires=…&sig=…)")]
    Missing,
    /// Past its `expires`.
    #[error("this signed URL expired")]
    Expired,
    /// The signature does not match.
    #[error("this signed URL's signature is not valid")]
    Invalid,
    /// The server has no key to check with.
    #[error("signed URLs are not set up on this server (listeners.urlSecret)")]
    NoSecret,
}

/// The hex signature of `name` until `expires`.
pub fn sign(secret: &[u8], name: &str, expires: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, format!("{name}:{expires}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The query (`expires=…&sig=…`) of a signed URL for `name`.
pub fn query(secret: &[u8], name: &str, expires: u64) -> String {
    format!("expires={expires}&sig={}", sign(secret, name, expires))
}

/// Checks a request's `expires` and `sig` for `name` at `now` (unix s);
/// `Ok(expires)` when valid.
pub fn check(secret: Option<&[u8]>, name: &str, req: &Request, now: u64) -> Result<u64, SignError> {
    let secret = secret.ok_or(SignError::NoSecret)?;
    let (Some(expires), Some(sig)) = (req.query_param("expires"), req.query_param("sig")) else {
        return Err(SignError::Missing);
    };
    let expires: u64 = expires.trim().parse().map_err(|_| SignError::Invalid)?;
    let Some(given) = from_hex(sig.trim()) else {
        return Err(SignError::Invalid);
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    // Constant-time comparison (ring's verify).
    hmac::verify(&key, format!("{name}:{expires}").as_bytes(), &given)
        .map_err(|_| SignError::Invalid)?;
    if expires < now {
        return Err(SignError::Expired);
    }
    Ok(expires)
}

/// The answer to a request for `name` on a `signedUrls` stream without a
/// valid signature (`None`: let it in; every stream else is open).
pub fn gate(
    server: &dyn super::OutputHost,
    signed: bool,
    name: &str,
    req: &Request,
) -> Option<crate::http::Response> {
    if !signed {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secret = server.url_secret().map(|s| s.0.as_bytes());
    let e = check(secret, name, req, now).err()?;
    let reason = match e {
        SignError::Missing => "missing",
        SignError::Expired => "expired",
        SignError::Invalid => "invalid",
        SignError::NoSecret => "no_secret",
    };
    server
        .metrics()
        .auth_failures
        .with_label_values(&["listener", reason])
        .inc();
    Some(crate::http::Response::text(
        403,
        crate::http::reason(403),
        e.to_string(),
    ))
}

/// The `expires=…&sig=…` of a request, to carry on in the URIs a playlist
/// lists (already checked by [`gate`]).
pub fn carried(req: &Request) -> Option<String> {
    Some(format!(
        "expires={}&sig={}",
        req.query_param("expires")?,
        req.query_param("sig")?
    ))
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str) -> Request {
        let raw = format!("GET /live?{q} HTTP/1.1\r\n\r\n");
        crate::http::request::parse(raw.as_bytes(), 4096)
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn valid_expired_tampered_and_missing() {
        let k = b"k3y";
        // The check value from another implementation:
        // printf 'live:2000000000' | openssl dgst -sha256 -hmac k3y
        assert_eq!(
            sign(k, "live", 2_000_000_000),
            "b52bed1843776c6d6b7c9e4297811be4ba0c6a73e09d72e066027a5edd6337bd"
        );
        let q = query(k, "live", 2_000_000_000);
        assert_eq!(
            check(Some(k), "live", &req(&q), 1_900_000_000),
            Ok(2_000_000_000)
        );
        assert_eq!(
            check(Some(k), "live", &req(&q), 2_000_000_001),
            Err(SignError::Expired)
        );
        assert_eq!(
            check(Some(k), "other", &req(&q), 0),
            Err(SignError::Invalid)
        );
        let tampered = q.replace("expires=2000000000", "expires=2000000009");
        assert_eq!(
            check(Some(k), "live", &req(&tampered), 0),
            Err(SignError::Invalid)
        );
        assert_eq!(
            check(Some(k), "live", &req("x=1"), 0),
            Err(SignError::Missing)
        );
        assert_eq!(check(None, "live", &req(&q), 0), Err(SignError::NoSecret));
        assert_eq!(
            check(Some(k), "live", &req("expires=1&sig=zz"), 0),
            Err(SignError::Invalid)
        );
    }
}
