//! `.pls` and `.m3u` playlists that point players at a stream.

use tokio::net::TcpStream;

use super::OutputHost;
use crate::http::{Request, Response};
use crate::stream::Stream;

/// Playlist flavour.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Shoutcast/Winamp `.pls`.
    Pls,
    /// Extended `.m3u`.
    M3u,
}

/// A Host header is copied into a playlist: accept only what a host name
/// (or IP literal, with port) can contain.
fn clean_host(host: &str) -> Option<&str> {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    ok.then_some(host)
}

/// The base URL listeners reach this server at: `listeners.publicUrl`, else
/// the request's Host, else the address the connection came in on.
pub fn base_url(server: &dyn OutputHost, req: &Request, sock: &TcpStream) -> String {
    if let Some(u) = &server.listeners_config().public_url {
        return u.trim_end_matches('/').to_string();
    }
    if let Some(h) = req.header("host").and_then(clean_host) {
        return format!("http://{h}");
    }
    match sock.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(_) => "http://localhost".into(),
    }
}

/// Renders the playlist for `stream`.
pub fn render(kind: Kind, stream: &Stream, base: &str) -> Response {
    let url = format!("{base}/{}", stream.key());
    let title = stream
        .config()
        .name
        .clone()
        .unwrap_or_else(|| stream.key().to_string())
        .replace(['\r', '\n'], " ");
    match kind {
        Kind::Pls => Response::new(200, "OK")
            .header("Content-Type", "audio/x-scpls")
            .body(
                format!("[playlist]\nNumberOfEntries=1\nFile1={url}\nTitle1={title}\nLength1=-1\nVersion=2\n")
                    .into_bytes(),
            ),
        Kind::M3u => Response::new(200, "OK")
            .header("Content-Type", "audio/x-mpegurl")
            .body(format!("#EXTM3U\n#EXTINF:-1,{title}\n{url}\n").into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_sanitised() {
        assert_eq!(clean_host("radio.example:8000"), Some("radio.example:8000"));
        assert_eq!(clean_host("[::1]:8000"), Some("[::1]:8000"));
        assert_eq!(clean_host("evil\r\nX: y"), None);
        assert_eq!(clean_host("a/b"), None);
        assert_eq!(clean_host(""), None);
    }
}
