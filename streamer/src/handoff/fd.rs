//! Passing file descriptors over a Unix socket (`SCM_RIGHTS`).
//!
//! The only `unsafe` in the server lives here: a descriptor received from
//! the kernel is a raw integer that we take ownership of.

#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use sendfd::{RecvWithFd, SendWithFd};

/// Most descriptors passed with one message.
pub const MAX_FDS: usize = 8;

/// Sends one marker byte carrying `fds` (the kernel duplicates them into the
/// receiver), then `payload` as a length-prefixed blob.
pub fn send(sock: &mut UnixStream, kind: u8, fds: &[RawFd], payload: &[u8]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let n = sock.send_with_fd(&[kind], fds)?;
    if n != 1 {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "marker not sent"));
    }
    sock.write_all(&(payload.len() as u64).to_le_bytes())?;
    sock.write_all(payload)
}

/// Receives what [`send`] sent: the kind byte, the descriptors (now owned
/// here), and the payload (at most `max_payload` bytes).
pub fn recv(sock: &mut UnixStream, max_payload: u64) -> io::Result<(u8, Vec<OwnedFd>, Vec<u8>)> {
    let mut kind = [0u8; 1];
    let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    let (n, nfds) = sock.recv_with_fd(&mut kind, &mut raw)?;
    // SAFETY: the kernel has just installed these descriptors in this process
    // for this message; nothing else refers to them, so we own each one.
    let fds: Vec<OwnedFd> = raw[..nfds]
        .iter()
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if n != 1 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "handoff connection closed",
        ));
    }
    let mut len = [0u8; 8];
    sock.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > max_payload {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("handoff message of {len} bytes is too large"),
        ));
    }
    let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
    sock.read_exact(&mut payload)?;
    Ok((kind[0], fds, payload))
}

/// The raw descriptor of something that has one (for [`send`]).
pub fn raw(x: &impl AsRawFd) -> RawFd {
    x.as_raw_fd()
}
