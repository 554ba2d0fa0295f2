//! Blocking `Read`/`Write` ends of a bounded channel of byte pieces, so a
//! dump (hundreds of megabytes) can be written or parsed on a blocking
//! thread while an HTTP body carries it: memory is a few pieces, and a slow
//! side holds the other back (backpressure) instead of piling bytes up.

use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Pieces in flight between the two sides.
pub const PIECES: usize = 4;

/// Size of a piece the writer sends.
pub const PIECE_BYTES: usize = 64 * 1024;

/// The writing end: collects bytes and sends them in pieces of
/// [`PIECE_BYTES`]; blocks while the channel is full. An error once the
/// receiver is gone (the client left).
#[derive(Debug)]
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// A writer into `tx`.
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(PIECE_BYTES),
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(PIECE_BYTES),
        ));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the receiver left"))
    }

    /// Ends the body with an error, so the receiver sees a broken transfer,
    /// not a short one.
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIECE_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIECE_BYTES {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// The reading end: pieces as they come; end of file when the sender is
/// gone, the sender's error when it sent one.
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    piece: Bytes,
}

impl ChannelReader {
    /// A reader from `rx`.
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            piece: Bytes::new(),
        }
    }
}

impl io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.piece.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(p)) => self.piece = p,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.piece.len());
        out[..n].copy_from_slice(&self.piece.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn bytes_pass_in_order_with_a_bounded_number_in_flight() {
        let (tx, rx) = mpsc::channel(PIECES);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = ChannelWriter::new(tx);
            for part in sent.chunks(7000) {
                w.write_all(part).unwrap();
            }
            w.flush().unwrap();
        });
        let mut r = ChannelReader::new(rx);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn a_writer_stops_when_the_reader_leaves_and_an_error_reaches_the_reader() {
        let (tx, rx) = mpsc::channel(PIECES);
        drop(rx);
        let mut w = ChannelWriter::new(tx);
        let e = w.write_all(&vec![0u8; PIECE_BYTES * 2]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);

        let (tx, rx) = mpsc::channel(PIECES);
        let w = ChannelWriter::new(tx);
        std::thread::spawn(move || w.fail(io::Error::other("disk gone")));
        let mut r = ChannelReader::new(rx);
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "disk gone");
    }
}
