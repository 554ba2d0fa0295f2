//! Mapped memory for the arena: memfd files and their mappings.
//!
//! The second (and last) place with `unsafe` in the server, besides fd
//! passing: mapping memory is a system call whose result is a raw pointer.
//! Everything above this module sees safe types: a [`Mapping`] can only be
//! appended to (at a watermark no reader has seen) and read below its
//! watermark, so no byte is ever written while a slice of it is lent out.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system's page size (mappings and file offsets are multiples of it).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// A new anonymous memory file (`memfd_create`, close-on-exec).
pub fn memfd(name: &str) -> io::Result<OwnedFd> {
    let name =
        std::ffi::CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets a memory file's size (sparse: growing it costs no memory).
pub fn set_len(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: plain system call on a descriptor we borrow.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives a range of a memory file back to the system (its pages are freed;
/// the file keeps its size and the range reads as zeros).
pub fn punch(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range too large",
        ));
    };
    // SAFETY: plain system call on a descriptor we borrow.
    let r = unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A mapped region: written once, front to back, read below its watermark.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Bytes written so far; everything below is immutable from then on.
    filled: AtomicUsize,
}

// SAFETY: the mapping is plain memory owned by this value; writes only go
// above the watermark (reserved atomically, so no two writers meet and no
// reader has a slice there), reads only below it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Private anonymous memory (when no memory file can be made).
    pub fn anonymous(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh private mapping that aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        Self::from_mmap(p, len, 0)
    }

    /// `len` bytes of a memory file from `offset` (shared: what another
    /// process wrote there is seen here). The first `filled` bytes hold data
    /// already (a received buffer); writes go after them.
    pub fn of_file(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        filled: usize,
    ) -> io::Result<Mapping> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a new shared mapping of a memory file: the only other views
        // of these pages are other processes' mappings, which (by the handoff
        // protocol) no longer write below `filled`.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::from_mmap(p, len, filled.min(len))
    }

    fn from_mmap(p: *mut libc::c_void, len: usize, filled: usize) -> io::Result<Mapping> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping {
            ptr,
            len,
            filled: AtomicUsize::new(filled),
        })
    }

    /// The mapping's size.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes written so far.
    pub fn filled(&self) -> usize {
        self.filled.load(Ordering::Acquire)
    }

    /// Where the mapping starts (to find a slice's mapping by address).
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Writes `data` after what is there; returns where it starts, or None
    /// when it does not fit.
    pub fn append(&self, data: &[u8]) -> Option<usize> {
        let mut at = self.filled.load(Ordering::Acquire);
        loop {
            let end = at.checked_add(data.len()).filter(|e| *e <= self.len)?;
            match self
                .filled
                .compare_exchange(at, end, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => at = now,
            }
        }
        // SAFETY: [at, at + len) is inside the mapping and was reserved for
        // this call alone above; no slice of it has been lent out yet (slices
        // are made by the caller from the returned offset, after this write).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(at), data.len());
        }
        Some(at)
    }

    /// The bytes `[start, start + len)`, which must have been written.
    pub fn slice(&self, start: usize, len: usize) -> &[u8] {
        let filled = self.filled();
        let start = start.min(filled);
        let len = len.min(filled - start);
        // SAFETY: below the watermark, written before and never written again,
        // and the mapping lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the region was mapped by this value and nothing borrows it
        // any more (borrows live no longer than `&self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn appends_read_back_and_never_overflow() {
        let m = Mapping::anonymous(page_size()).unwrap();
        assert_eq!(m.append(b"abc"), Some(0));
        assert_eq!(m.append(b"de"), Some(3));
        assert_eq!(m.slice(1, 3), b"bcd");
        assert_eq!(m.append(&vec![0u8; page_size()]), None);
        // A slice past the watermark is cut to it.
        assert_eq!(m.slice(4, 100), b"e");
    }

    #[test]
    fn two_mappings_of_one_file_share_bytes_and_a_punch_frees_them() {
        let fd = memfd("test").unwrap();
        let page = page_size();
        set_len(fd.as_fd(), 2 * page as u64).unwrap();
        let a = Mapping::of_file(fd.as_fd(), page as u64, page, 0).unwrap();
        a.append(b"shared audio").unwrap();
        let b = Mapping::of_file(fd.as_fd(), page as u64, page, 12).unwrap();
        assert_eq!(b.slice(0, 12), b"shared audio");
        punch(fd.as_fd(), page as u64, page as u64).unwrap();
        assert_eq!(b.slice(0, 12), &[0u8; 12]);
    }
}
