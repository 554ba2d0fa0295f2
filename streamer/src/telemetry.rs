//! Logging: text or JSON lines on stderr. Every line is written through
//! [`Escaping`], so a control character in any field (a title with CR/LF from
//! an encoder or the API, a header from a listener) is shown escaped and can
//! never forge a log line.

use std::io::{self, Write};

/// Log output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber (level from `RUST_LOG`, default `info`).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| Escaping(std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// A writer of whole log lines (the subscriber writes each event at once)
/// that escapes control characters as `\xNN`, but for the line's final
/// newline, tabs, and ESC (the subscriber escapes ESC in fields itself, and
/// uses it for colours on a terminal).
#[derive(Debug)]
pub struct Escaping<W>(pub W);

fn needs_escape(b: u8) -> bool {
    (b < 0x20 && b != b'\t' && b != 0x1b) || b == 0x7f
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end): (&[u8], &[u8]) = match buf.split_last() {
            Some((b'\n', body)) => (body, b"\n"),
            _ => (buf, b""),
        };
        if !body.iter().any(|&b| needs_escape(b)) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 32);
        for &b in body {
            if needs_escape(b) {
                write!(out, "\\x{b:02x}")?;
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(end);
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_title_with_a_line_break_cannot_forge_a_log_line() {
        let sink = Shared::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Escaping(writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let title = "Song\r\n2026-12-05T00:00:00Z  INFO forged: admin token accepted";
            tracing::info!(%title, "title set");
            tracing::warn!("next line");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("Song\\x0d\\x0a2026"), "{text}");
        assert!(lines[1].contains("next line"), "{text}");
    }
}
