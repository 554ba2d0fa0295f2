//! The station's public pages on the listener port, shipped inside the
//! binary (plain HTML, CSS and JS; no build step, no external requests, no
//! cookies): `/` for a browser (the streams with their titles and listener
//! counts, refreshed every second from `/status-json.xsl`, each with a
//! player) and `/<stream>/player`, a rewind player embeddable in an
//! `<iframe>`: live by default, a position slider over the buffer, the
//! programmes of the buffer from `/<stream>/titles.json`, back to live,
//! the start of the current programme (raw audio with `?offset=`).

use crate::http::{Request, Response};

const INDEX: &str = include_str!("web/index.html");
const PLAYER: &str = include_str!("web/player.html");

/// What the pages may load: themselves and this server, nothing else.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; media-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'";

/// Whether `req` is a browser asking for a page (`Accept: text/html`).
pub fn wants_html(req: &Request) -> bool {
    req.header("accept")
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")))
}

fn page(body: String) -> Response {
    Response::new(200, "OK")
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Cache-Control", "no-cache")
        .header("Content-Security-Policy", CSP)
        .header("Referrer-Policy", "no-referrer")
        .body(body.into_bytes())
}

/// The status page.
pub fn index() -> Response {
    page(INDEX.to_string())
}

/// The rewind player of stream `key`.
pub fn player(key: &str) -> Response {
    page(PLAYER.replace("{{STREAM}}", &escape(key)))
}

/// Text for HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_small_and_name_their_stream_escaped() {
        assert!(INDEX.len() < 100 * 1024 && PLAYER.len() < 100 * 1024);
        let p = String::from_utf8(player("a\"<b>").into_parts().2).unwrap();
        assert!(p.contains("data-stream=\"a&quot;&lt;b&gt;\"") && !p.contains("{{STREAM}}"));
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        assert!(!PLAYER.contains("http://") && !PLAYER.contains("https://"));
    }
}
