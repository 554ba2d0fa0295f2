//! Icecast's title update, the way real encoders (butt, Liquidsoap, Mixxx,
//! ezstream) send it: `GET /admin/metadata?mount=/x&mode=updinfo&song=…`,
//! authenticated with the mount's source credentials.

use super::SourceHost;
use crate::http::{Request, Response};

use super::icecast::authorize;
use super::Rejection;

/// Icecast's success reply, which encoders check for.
const OK_XML: &str = "<?xml version=\"1.0\"?>\n<iceresponse><message>Metadata update successful</message><return>1</return></iceresponse>\n";

/// Decodes `application/x-www-form-urlencoded` pairs to raw bytes, so the
/// `charset` parameter can decide how to read them.
fn raw_pairs(query: &str) -> Vec<(String, Vec<u8>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&percent_decode(k)).into_owned(),
                percent_decode(v),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Reads text in the given charset: UTF-8 by default, Latin-1 when asked
/// (or when the bytes are not UTF-8, which is what old encoders send).
fn decode_text(bytes: &[u8], charset: Option<&str>) -> String {
    let latin1 = charset.is_some_and(|c| {
        let c = c.to_ascii_lowercase();
        c == "iso-8859-1" || c == "latin1" || c == "latin-1" || c == "iso8859-1"
    });
    if !latin1 {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return s.to_string();
        }
    }
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Handles a metadata update; the title goes with the mount's audio from now on.
/// Titles belong to a source: sent from the address of a connected encoder,
/// they are that encoder's (on air only while it is); from anywhere else
/// (an automation system), they are the mount's.
pub fn update(
    server: &dyn SourceHost,
    req: &Request,
    from: std::net::IpAddr,
) -> Result<Response, Rejection> {
    let pairs = raw_pairs(&req.query);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    };
    let charset = get("charset").map(|c| String::from_utf8_lossy(c).into_owned());
    let text = |name: &str| get(name).map(|v| decode_text(v, charset.as_deref()));
    let Some(mount_path) = text("mount") else {
        return Err(Rejection::new(
            400,
            "metadata_no_mount",
            "metadata update without a mount parameter",
        ));
    };
    let (mount, _) = authorize(server, req, &mount_path, from)?;
    match text("mode").as_deref() {
        Some("updinfo") => {}
        other => {
            return Err(Rejection::new(
                400,
                "metadata_mode",
                format!("unsupported metadata mode {other:?}: only updinfo is supported"),
            ))
        }
    }
    let title = match (text("song"), text("artist"), text("title")) {
        (Some(song), _, _) => song,
        (None, Some(a), Some(t)) if !a.is_empty() => format!("{a} - {t}"),
        (None, Some(a), None) => a,
        (None, _, Some(t)) => t,
        (None, None, None) => {
            return Err(Rejection::new(
                400,
                "metadata_no_title",
                "metadata update without song, title or artist",
            ))
        }
    };
    let title = title.trim().to_string();
    let on_air = match mount.source_from(from) {
        Some(id) => mount.set_source_title(id, &title),
        None => {
            mount.set_title(&title);
            true
        }
    };
    if !on_air {
        tracing::info!(mount = %mount.key(), title = %title, "title of a waiting source kept until it is on air");
        return Ok(Response::new(200, "OK")
            .header("Content-Type", "text/xml")
            .body(OK_XML.as_bytes().to_vec()));
    }
    server
        .metrics()
        .title_updates
        .with_label_values(&[mount.key()])
        .inc();
    tracing::info!(mount = %mount.key(), title = %title, "title updated");
    Ok(Response::new(200, "OK")
        .header("Content-Type", "text/xml")
        .body(OK_XML.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_utf8_latin1_and_plus() {
        let p = raw_pairs("mount=%2Flive&song=Caf%C3%A9+del+Mar&x");
        assert_eq!(p[0], ("mount".into(), b"/live".to_vec()));
        assert_eq!(decode_text(&p[1].1, None), "Café del Mar");
        assert_eq!(
            decode_text(&percent_decode("Caf%E9"), Some("ISO-8859-1")),
            "Café"
        );
        // Invalid UTF-8 without a charset is read as Latin-1, never dropped.
        assert_eq!(decode_text(&percent_decode("Caf%E9"), None), "Café");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%4"), b"%4");
        assert_eq!(p[2], ("x".into(), Vec::new()));
    }
}
