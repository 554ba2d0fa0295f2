//! Where chunk audio lives: large blocks cut into chunks, given back whole.
//!
//! Hours of one-second chunks allocated one by one fragment the heap: the
//! allocator keeps the holes old audio leaves, and a full buffer held
//! 1.4–2.5× its audio (issue 11). Here a stream's chunks are cut, in order,
//! from blocks of [`BLOCK_BYTES`]; a block goes back to the system (its
//! pages punched out of the file) when its last chunk leaves every buffer.
//! Since a buffer evicts oldest first, at most one block per stream is
//! partly dead, and the partly filled newest block holds only the pages
//! written so far.
//!
//! Blocks are pieces of a memory file (`memfd`), mapped shared: a handoff
//! can pass the file to the successor, which maps the same pages instead of
//! copying the audio. Where no memory file can be made (an old kernel, a
//! seccomp profile without `memfd_create`) blocks are private anonymous
//! mappings: the memory behaviour is the same, a handoff copies.

mod memory;
mod pass;

pub use pass::{freeze, Frozen, Imported, PassedFile};

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;

use crate::sync::MutexExt;

/// Size of a block: 64 s at 128 kbit/s, 4 min at 32 kbit/s. Small enough
/// that a partly dead block costs little, large enough that a buffer of
/// hours is a few hundred mappings.
pub const BLOCK_BYTES: usize = 1 << 20;

/// A memory file blocks are cut from.
#[derive(Debug)]
pub struct MemFile {
    fd: OwnedFd,
    id: u64,
    state: Mutex<FileState>,
    /// Freed blocks give their pages back at once. Off while another
    /// process may map this file (a handoff in progress).
    punch: AtomicBool,
    /// No new blocks here any more (the file was handed off).
    sealed: AtomicBool,
}

#[derive(Debug, Default)]
struct FileState {
    len: u64,
    /// Offsets of freed [`BLOCK_BYTES`] blocks, to reuse.
    free: Vec<u64>,
    /// Ranges freed while punching was off.
    deferred: Vec<(u64, u64)>,
}

impl MemFile {
    fn create() -> std::io::Result<Arc<MemFile>> {
        let fd = memory::memfd("streammachine-audio")?;
        let file = Arc::new(MemFile {
            fd,
            id: next_id(),
            state: Mutex::new(FileState::default()),
            punch: AtomicBool::new(true),
            sealed: AtomicBool::new(false),
        });
        register_file(&file);
        Ok(file)
    }

    /// A memory file another process passed on: nothing new is cut from it,
    /// and nothing is given back until [`Imported::adopt`] (before that, the
    /// pages may still be the sender's).
    fn received(fd: OwnedFd) -> std::io::Result<Arc<MemFile>> {
        let file = std::fs::File::from(fd);
        let len = file.metadata()?.len();
        let file = Arc::new(MemFile {
            fd: OwnedFd::from(file),
            id: next_id(),
            state: Mutex::new(FileState {
                len,
                ..FileState::default()
            }),
            punch: AtomicBool::new(false),
            sealed: AtomicBool::new(true),
        });
        register_file(&file);
        Ok(file)
    }

    /// A file offset for a block of `len` bytes (a freed one when it fits).
    fn allocate(&self, len: usize) -> std::io::Result<u64> {
        let mut st = self.state.locked();
        if len == BLOCK_BYTES {
            if let Some(off) = st.free.pop() {
                return Ok(off);
            }
        }
        let off = st.len;
        let new_len = off + len as u64;
        memory::set_len(self.fd.as_fd(), new_len)?;
        st.len = new_len;
        Ok(off)
    }

    /// A block's range is no longer used here. (Decided under the state
    /// lock, which [`Frozen`] and [`Imported`] take to turn punching off or on.)
    fn release(&self, offset: u64, len: u64) {
        let mut st = self.state.locked();
        if !self.punch.load(Ordering::Acquire) {
            st.deferred.push((offset, len));
            return;
        }
        self.give_back(&mut st, offset, len);
    }

    fn give_back(&self, st: &mut FileState, offset: u64, len: u64) {
        if let Err(e) = memory::punch(self.fd.as_fd(), offset, len) {
            if worth_logging() {
                tracing::warn!(error = %e, "cannot free a block of audio memory");
            }
            return;
        }
        if len == BLOCK_BYTES as u64 && !self.sealed.load(Ordering::Acquire) {
            st.free.push(offset);
        }
    }
}

/// Memory failures are logged at the 1st, 2nd, 4th, 8th… (one per chunk
/// would flood the log while memory is short).
fn worth_logging() -> bool {
    static FAILURES: AtomicU64 = AtomicU64::new(0);
    (FAILURES.fetch_add(1, Ordering::Relaxed) + 1).is_power_of_two()
}

/// Lists a memory file among the process's (forgetting dead ones).
fn register_file(file: &Arc<MemFile>) {
    let mut all = files().locked();
    all.retain(|f| f.strong_count() > 0);
    all.push(Arc::downgrade(file));
}

fn next_id() -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Every memory file alive in the process (what a handoff passes on).
fn files() -> &'static Mutex<Vec<Weak<MemFile>>> {
    static FILES: OnceLock<Mutex<Vec<Weak<MemFile>>>> = OnceLock::new();
    FILES.get_or_init(|| Mutex::new(Vec::new()))
}

/// A live block as the registry knows it.
#[derive(Debug, Clone)]
struct Entry {
    len: usize,
    file: u64,
    offset: u64,
    block: Weak<Block>,
}

/// Each live block by the address it is mapped at.
type BlockMap = BTreeMap<usize, Entry>;

/// Where each live block is mapped: finds the block of a chunk from its bytes.
fn blocks() -> &'static Mutex<BlockMap> {
    static BLOCKS: OnceLock<Mutex<BlockMap>> = OnceLock::new();
    BLOCKS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// One block: a mapping, and the piece of file behind it.
#[derive(Debug)]
struct Block {
    map: memory::Mapping,
    file: Option<Arc<MemFile>>,
    offset: u64,
}

impl Block {
    fn new(file: Option<&Arc<MemFile>>, len: usize) -> std::io::Result<Arc<Block>> {
        let (map, file, offset) = match file {
            Some(f) => {
                let offset = f.allocate(len)?;
                let map = memory::Mapping::of_file(f.fd.as_fd(), offset, len, 0)?;
                (map, Some(Arc::clone(f)), offset)
            }
            None => (memory::Mapping::anonymous(len)?, None, 0),
        };
        Ok(Block::register(Block { map, file, offset }))
    }

    /// Makes a block findable by the address of its bytes.
    fn register(block: Block) -> Arc<Block> {
        let block = Arc::new(block);
        let entry = Entry {
            len: block.map.len(),
            file: block.file.as_ref().map_or(0, |f| f.id),
            offset: block.offset,
            block: Arc::downgrade(&block),
        };
        blocks().locked().insert(block.map.addr(), entry);
        block
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        blocks().locked().remove(&self.map.addr());
        if let Some(f) = &self.file {
            f.release(self.offset, self.map.len() as u64);
        }
    }
}

/// A chunk's bytes inside a block (what a [`Bytes`] from the arena owns).
#[derive(Debug)]
struct Slice {
    block: Arc<Block>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        self.block.map.slice(self.start, self.len)
    }
}

/// Where a stored chunk's bytes live: a memory file and an offset in it
/// (file 0: private memory, not passable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The memory file's id in this process.
    pub file: u64,
    /// Byte offset inside the file.
    pub offset: u64,
}

/// Where `data` lives, when it is in a block.
pub fn place_of(data: &[u8]) -> Option<Place> {
    let addr = data.as_ptr() as usize;
    let map = blocks().locked();
    let (&base, e) = map.range(..=addr).next_back()?;
    (addr + data.len() <= base + e.len).then_some(Place {
        file: e.file,
        offset: e.offset + (addr - base) as u64,
    })
}

/// True when `data` is in a block already (storing it again would copy it).
pub fn is_stored(data: &[u8]) -> bool {
    !data.is_empty() && place_of(data).is_some()
}

/// Cuts chunks from blocks, one producer's chunks after another's.
#[derive(Debug, Default)]
pub struct Arena {
    inner: Mutex<ArenaInner>,
}

#[derive(Debug, Default)]
struct ArenaInner {
    file: Option<Arc<MemFile>>,
    /// A memory file could not be made: private blocks from then on.
    private: bool,
    current: Option<Arc<Block>>,
}

impl Arena {
    /// An arena; its memory file is made with the first block.
    pub fn new() -> Self {
        Self::default()
    }

    /// `data` in a block: the same bytes as is when they are in one already,
    /// else a copy. Falls back to a heap copy only if no memory can be mapped.
    pub fn store(&self, data: Bytes) -> Bytes {
        if data.is_empty() || is_stored(&data) {
            return data;
        }
        match self.copy_in(&data) {
            Ok(b) => b,
            Err(e) => {
                if worth_logging() {
                    tracing::warn!(error = %e, "cannot map memory for audio; keeping it on the heap");
                }
                data
            }
        }
    }

    fn copy_in(&self, data: &[u8]) -> std::io::Result<Bytes> {
        let mut inner = self.inner.locked();
        if let Some(b) = &inner.current {
            if let Some(start) = b.map.append(data) {
                return Ok(slice(b, start, data.len()));
            }
        }
        let page = memory::page_size();
        let len = BLOCK_BYTES.max(data.len().div_ceil(page) * page);
        let sealed = inner
            .file
            .as_ref()
            .is_some_and(|f| f.sealed.load(Ordering::Acquire));
        if (inner.file.is_none() || sealed) && !inner.private {
            match MemFile::create() {
                Ok(f) => inner.file = Some(f),
                Err(e) => {
                    tracing::warn!(error = %e, "no memory file for audio (memfd_create): private memory instead; a handoff will copy it");
                    inner.private = true;
                    inner.file = None;
                }
            }
        }
        let block = Block::new(inner.file.as_ref(), len)?;
        let start = block
            .map
            .append(data)
            .ok_or_else(|| std::io::Error::other("block too small"))?;
        let bytes = slice(&block, start, data.len());
        inner.current = Some(block);
        Ok(bytes)
    }
}

fn slice(block: &Arc<Block>, start: usize, len: usize) -> Bytes {
    Bytes::from_owner(Slice {
        block: Arc::clone(block),
        start,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_share_a_block_until_it_is_full() {
        let a = Arena::new();
        let x = a.store(Bytes::from(vec![1u8; 1000]));
        let y = a.store(Bytes::from(vec![2u8; 1000]));
        assert_eq!(&x[..], &[1u8; 1000][..]);
        assert_eq!(&y[..], &[2u8; 1000][..]);
        let (px, py) = (place_of(&x).unwrap(), place_of(&y).unwrap());
        assert_eq!(px.file, py.file);
        assert_eq!(py.offset, px.offset + 1000);
        // Storing stored bytes again does not copy them.
        let again = a.store(y.clone());
        assert_eq!(again.as_ptr(), y.as_ptr());
        // A chunk that does not fit starts a new block.
        let z = a.store(Bytes::from(vec![3u8; BLOCK_BYTES - 1500]));
        assert_ne!(place_of(&z).unwrap().offset / BLOCK_BYTES as u64, 0);
    }

    #[test]
    fn a_block_goes_back_when_its_last_chunk_goes_and_its_room_is_reused() {
        let a = Arena::new();
        let big = vec![7u8; BLOCK_BYTES / 2 + 1];
        let first = a.store(Bytes::from(big.clone()));
        let first_place = place_of(&first).unwrap();
        let second = a.store(Bytes::from(big.clone())); // a new block
        drop(first); // the first block is free now: its offset comes back
        let third = a.store(Bytes::from(big)); // does not fit: another block
        assert_eq!(place_of(&third).unwrap().offset, first_place.offset);
        assert!(place_of(&second).is_some());
        assert_eq!(&third[..3], &[7, 7, 7]);
    }

    #[test]
    fn a_chunk_larger_than_a_block_gets_its_own() {
        let a = Arena::new();
        let data: Vec<u8> = (0..BLOCK_BYTES + 10).map(|i| i as u8).collect();
        let b = a.store(Bytes::from(data.clone()));
        assert_eq!(&b[..], &data[..]);
    }
}
