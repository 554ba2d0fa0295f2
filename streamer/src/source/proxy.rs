//! A pulled source: an Icecast/Shoutcast/HTTP stream fetched as a listener
//! (with `Icy-MetaData: 1`, so titles come along), used as a mount's fallback
//! or as a relay. Reconnects with backoff. An upstream burst gets timestamps
//! no later than now (the buffer's clock), never ahead of real time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use streammachine_config::AudioFormat;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::mount::{Mount, SourceInfo};
use super::upstream::{self, Upstream};
use crate::buffer::Chunker;
use crate::format::{Codec, Framer};

/// The title in an ICY metadata block (`StreamTitle='…';`).
pub fn icy_title(block: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(block);
    let start = text.find("StreamTitle='")? + "StreamTitle='".len();
    let end = text[start..].find("';").map_or(text.len(), |e| start + e);
    Some(text[start..end].trim_end_matches('\0').to_string())
}

/// Pulls `url` into `mount` until the mount is removed; `ca_file` adds
/// certificates to trust for an `https://` url.
pub async fn pull(mount: Arc<Mount>, url: String, ca_file: Option<PathBuf>, fallback: bool) {
    let mut backoff = crate::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut failing = false;
    while !mount.is_closed() {
        match session(&mount, &url, ca_file.as_deref(), fallback).await {
            Ok(got_audio) => {
                tracing::warn!(mount = %mount.key(), %url, "pulled stream ended; reconnecting");
                if got_audio {
                    backoff.reset();
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(mount = %mount.key(), %url, error = %e, "cannot pull the stream; retrying with backoff (logged once until it works)");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One connection; `Ok(true)` when it delivered audio.
async fn session(
    mount: &Arc<Mount>,
    url: &str,
    ca_file: Option<&Path>,
    fallback: bool,
) -> Result<bool, String> {
    let up = Upstream::parse(url).map_err(|e| e.to_string())?;
    let (mut sock, peer) = upstream::connect(&up, ca_file, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nIcy-MetaData: 1\r\nUser-Agent: StreamMachine/{}\r\n\r\n",
        up.path,
        up.authority,
        env!("CARGO_PKG_VERSION")
    );
    sock.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err("response head too large".into());
        }
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read_buf(&mut buf))
            .await
            .map_err(|_| "no response".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a response".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.lines().next().unwrap_or("");
    if !(status.starts_with("HTTP/1.1 200")
        || status.starts_with("HTTP/1.0 200")
        || status.starts_with("ICY 200"))
    {
        return Err(format!("upstream answered {status:?}"));
    }
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let metaint: usize = header("icy-metaint")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _ = buf.split_to(head_end);
    let info = SourceInfo {
        remote: peer,
        name: header("icy-name").or_else(|| Some(format!("pull {url}"))),
        genre: header("icy-genre"),
        url: Some(url.to_string()),
        content_type: header("content-type"),
        ..SourceInfo::default()
    };
    let guard = mount.add_source_as(info, fallback);
    let codec = match mount.format() {
        AudioFormat::Mp3 => Codec::Mp3,
        AudioFormat::Aac => Codec::Aac,
    };
    let mut framer = Framer::new(codec);
    let mut chunker = Chunker::new();
    let mut key: Option<String> = None;
    let mut until_meta = metaint;
    let mut meta: Option<(usize, Vec<u8>)> = None; // (length, bytes so far)
    let mut got_audio = false;
    let mut data = buf.to_vec();
    let mut read = vec![0u8; 16 * 1024];
    loop {
        // Split the bytes into audio and ICY metadata.
        let mut i = 0;
        while i < data.len() {
            if let Some((len, m)) = meta.as_mut() {
                let take = (*len - m.len()).min(data.len() - i);
                m.extend_from_slice(&data[i..i + take]);
                i += take;
                if m.len() == *len {
                    if let Some(t) = icy_title(m) {
                        mount.set_source_title(guard.id(), &t);
                    }
                    meta = None;
                    until_meta = metaint;
                }
                continue;
            }
            if metaint > 0 && until_meta == 0 {
                let len = usize::from(data[i]) * 16;
                i += 1;
                if len == 0 {
                    until_meta = metaint;
                } else {
                    meta = Some((len, Vec::with_capacity(len)));
                }
                continue;
            }
            let n = if metaint > 0 {
                until_meta.min(data.len() - i)
            } else {
                data.len() - i
            };
            framer.push(&data[i..i + n]);
            i += n;
            if metaint > 0 {
                until_meta -= n;
            }
        }
        loop {
            match framer.next_frame() {
                Ok(Some(f)) => {
                    got_audio = true;
                    let k = key.get_or_insert_with(|| f.header.format_key());
                    if let Some(d) = chunker.push(&f) {
                        mount.push(guard.id(), d, k);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        if mount.is_closed() {
            return Ok(got_audio);
        }
        let n = tokio::time::timeout(Duration::from_secs(15), sock.read(&mut read))
            .await
            .map_err(|_| "upstream stalled for 15 s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(got_audio);
        }
        data.clear();
        data.extend_from_slice(&read[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        assert_eq!(
            icy_title(b"StreamTitle='A - B';StreamUrl='';\0\0").as_deref(),
            Some("A - B")
        );
        assert_eq!(icy_title(b"StreamUrl='x';"), None);
    }
}
