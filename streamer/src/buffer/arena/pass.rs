//! Passing arenas to a successor process (a handoff): the memory files go
//! over the handoff socket, the successor maps the same pages, and no audio
//! is copied.
//!
//! Who may give pages back to the system is what must be exact. From the
//! moment the predecessor describes its buffers ([`freeze`]) it cuts no new
//! block from those files and gives nothing back (a freed block is only
//! noted): the successor may be mapping any of it. If the handoff fails it
//! thaws and gives the noted blocks back. The successor gives nothing back
//! either until the predecessor has let go ([`Imported::adopt`]); then it
//! owns the files: it frees what it does not use (blocks the predecessor
//! had freed meanwhile, blocks no chunk of its own refers to) and gives
//! blocks back as its buffers evict them.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::{blocks, files, memory, Block, MemFile};
use crate::sync::MutexExt;

/// A memory file as a handoff describes it: its id in the sender, and its
/// live blocks as (offset, length, bytes written).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PassedFile {
    /// The sender's id of the file (chunk places name it).
    pub id: u64,
    /// Live blocks: file offset, length, bytes written.
    pub blocks: Vec<(u64, u64, u64)>,
}

/// The predecessor's memory files, frozen for a handoff.
#[derive(Debug)]
pub struct Frozen {
    files: Vec<Arc<MemFile>>,
}

/// Freezes every memory file of this process: no new blocks are cut from
/// them and none is given back until [`Frozen::thaw`].
pub fn freeze() -> Frozen {
    let live: Vec<Arc<MemFile>> = files().locked().iter().filter_map(Weak::upgrade).collect();
    freeze_these(live)
}

fn freeze_these(live: Vec<Arc<MemFile>>) -> Frozen {
    for f in &live {
        let _st = f.state.locked();
        f.punch.store(false, Ordering::Release);
        f.sealed.store(true, Ordering::Release);
    }
    Frozen { files: live }
}

impl Frozen {
    /// The files with their descriptors and live blocks, to send.
    pub fn describe(&self) -> Vec<(PassedFile, BorrowedFd<'_>)> {
        let map = blocks().locked();
        self.files
            .iter()
            .map(|f| {
                let blocks = map
                    .values()
                    .filter(|e| e.file == f.id)
                    .filter_map(|e| {
                        let b = e.block.upgrade()?;
                        Some((e.offset, e.len as u64, b.map.filled() as u64))
                    })
                    .collect();
                (PassedFile { id: f.id, blocks }, f.fd.as_fd())
            })
            .collect()
    }

    /// The handoff failed: this process keeps its buffers and gives back
    /// what was freed meanwhile. (The files stay sealed: new blocks come
    /// from new files.)
    pub fn thaw(self) {
        for f in &self.files {
            let mut st = f.state.locked();
            f.punch.store(true, Ordering::Release);
            for (offset, len) in std::mem::take(&mut st.deferred) {
                f.give_back(&mut st, offset, len);
            }
        }
    }
}

/// A passed file's blocks: offset → (length, bytes written).
type PassedBlocks = BTreeMap<u64, (u64, u64)>;

/// The successor's view of the predecessor's memory files, before it owns
/// them: chunks are cut from their blocks; nothing is given back.
#[derive(Debug, Default)]
pub struct Imported {
    files: HashMap<u64, (Arc<MemFile>, PassedBlocks)>,
    /// Blocks mapped so far, by (sender's file id, offset).
    mapped: std::sync::Mutex<HashMap<(u64, u64), Arc<Block>>>,
}

/// Why a passed chunk cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// Mapping or reading a passed file failed.
    #[error("passed memory file: {0}")]
    Io(#[from] std::io::Error),
    /// A chunk outside the blocks the predecessor described.
    #[error("no passed block holds {len} bytes at offset {offset} of file {file}")]
    NoBlock {
        /// The sender's file id.
        file: u64,
        /// Offset in the file.
        offset: u64,
        /// Bytes wanted.
        len: u64,
    },
}

impl Imported {
    /// Nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a passed file and the description of its blocks.
    pub fn add_file(&mut self, passed: PassedFile, fd: OwnedFd) -> Result<(), PassError> {
        let file = MemFile::received(fd)?;
        let blocks = passed
            .blocks
            .into_iter()
            .map(|(offset, len, filled)| (offset, (len, filled.min(len))))
            .collect();
        self.files.insert(passed.id, (file, blocks));
        Ok(())
    }

    /// The `len` bytes at `offset` of the sender's file `file`, without a copy.
    pub fn bytes(&self, file: u64, offset: u64, len: u64) -> Result<Bytes, PassError> {
        let missing = PassError::NoBlock { file, offset, len };
        let Some((mem, blocks)) = self.files.get(&file) else {
            return Err(missing);
        };
        let Some((&start, &(block_len, filled))) = blocks.range(..=offset).next_back() else {
            return Err(missing);
        };
        let end = offset
            .checked_add(len)
            .ok_or(PassError::NoBlock { file, offset, len })?;
        if end > start + filled {
            return Err(missing);
        }
        let mut mapped = self.mapped.locked();
        let block = match mapped.get(&(file, start)) {
            Some(b) => Arc::clone(b),
            None => {
                let (Ok(map_len), Ok(map_filled)) =
                    (usize::try_from(block_len), usize::try_from(filled))
                else {
                    return Err(missing);
                };
                let map = memory::Mapping::of_file(mem.fd.as_fd(), start, map_len, map_filled)?;
                let b = Block::register(Block {
                    map,
                    file: Some(Arc::clone(mem)),
                    offset: start,
                });
                mapped.insert((file, start), Arc::clone(&b));
                b
            }
        };
        let (Ok(at), Ok(len)) = (usize::try_from(offset - start), usize::try_from(len)) else {
            return Err(missing);
        };
        Ok(super::slice(&block, at, len))
    }

    /// The predecessor has let go: this process owns the files. What no
    /// buffer here uses is given back now; the rest as it is evicted.
    pub fn adopt(self) {
        let Imported { files, mapped } = self;
        drop(mapped);
        for (mem, _) in files.values() {
            let mut st = mem.state.locked();
            mem.punch.store(true, Ordering::Release);
            st.deferred.clear();
            let mut live: Vec<(u64, u64)> = blocks()
                .locked()
                .values()
                .filter(|e| e.file == mem.id && e.block.strong_count() > 0)
                .map(|e| (e.offset, e.len as u64))
                .collect();
            live.sort_unstable();
            let mut at = 0u64;
            for (offset, len) in live.into_iter().chain(std::iter::once((st.len, 0))) {
                if offset > at {
                    if let Err(e) = memory::punch(mem.fd.as_fd(), at, offset - at) {
                        tracing::warn!(error = %e, "cannot free unused audio memory passed by the predecessor");
                    }
                }
                at = at.max(offset + len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{place_of, Arena};
    use super::*;

    /// What a successor makes of `frozen`, the descriptors duplicated as
    /// SCM_RIGHTS would.
    fn pass_within_the_process(frozen: &Frozen) -> Imported {
        let mut imported = Imported::new();
        for (p, fd) in frozen.describe() {
            imported
                .add_file(p, fd.try_clone_to_owned().unwrap())
                .unwrap();
        }
        imported
    }

    /// Pages the memory file behind `a` holds (its allocated blocks).
    fn pages_held(a: &Arena) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let file = a.inner.locked().file.clone().unwrap();
        let f = std::fs::File::from(file.fd.try_clone().unwrap());
        f.metadata().unwrap().blocks()
    }

    /// An arena holding 30 chunks of 200 kB, the pages its file holds, and
    /// its file frozen.
    fn six_megabytes_frozen() -> (Arena, Vec<Bytes>, u64, Frozen) {
        let a = Arena::new();
        let chunks: Vec<Bytes> = (0..30u8)
            .map(|i| a.store(Bytes::from(vec![i; 200_000])))
            .collect();
        let full = pages_held(&a);
        let file = a.inner.locked().file.clone().unwrap();
        let frozen = freeze_these(vec![file]);
        (a, chunks, full, frozen)
    }

    #[test]
    fn a_frozen_file_gives_nothing_back_until_thawed() {
        let (a, chunks, full, frozen) = six_megabytes_frozen();
        drop(chunks);
        assert_eq!(pages_held(&a), full, "frozen: freed blocks are only noted");
        frozen.thaw();
        assert!(
            pages_held(&a) < full / 4,
            "thawed: {} of {full}",
            pages_held(&a)
        );
    }

    #[test]
    fn a_successor_frees_only_once_it_adopts_and_then_what_it_does_not_use() {
        let (a, chunks, full, frozen) = six_megabytes_frozen();
        let imported = pass_within_the_process(&frozen);
        // The successor keeps only the last chunk; the sender lets go of all.
        let last = chunks.last().unwrap();
        let p = place_of(last).unwrap();
        let kept = imported.bytes(p.file, p.offset, last.len() as u64).unwrap();
        drop(chunks);
        drop(frozen);
        assert_eq!(pages_held(&a), full, "nothing freed before adoption");
        imported.adopt();
        let after = pages_held(&a);
        assert!(after < full / 4, "adopted: {after} of {full}");
        assert!(kept.iter().all(|b| *b == 29), "the kept chunk is intact");
    }

    /// A handoff within one process: the "successor" maps the passed files
    /// through new descriptors (as SCM_RIGHTS gives them) and sees the same
    /// bytes; nothing is freed under either side until adoption.
    #[test]
    fn passed_chunks_are_the_same_memory_and_survive_the_senders_eviction() {
        let a = Arena::new();
        let chunks: Vec<Bytes> = (0..40u8)
            .map(|i| a.store(Bytes::from(vec![i; 100_000])))
            .collect();
        let old_file = place_of(&chunks[0]).unwrap().file;
        // (Only this arena's file: other tests' arenas live in this process.)
        let file = a.inner.locked().file.clone().unwrap();
        let frozen = freeze_these(vec![file]);
        let imported = pass_within_the_process(&frozen);
        let again: Vec<Bytes> = chunks
            .iter()
            .map(|c| {
                let p = place_of(c).unwrap();
                imported.bytes(p.file, p.offset, c.len() as u64).unwrap()
            })
            .collect();
        // The sender evicts everything while frozen: nothing is punched.
        let first = chunks[0].clone();
        drop(chunks);
        drop(first);
        for (i, c) in again.iter().enumerate() {
            assert!(c.iter().all(|b| *b == i as u8), "chunk {i} intact");
        }
        // A chunk beyond what was described is refused.
        let p = place_of(&again[39]).unwrap();
        assert!(imported.bytes(p.file + 999, p.offset, 1).is_err());
        imported.adopt();
        for (i, c) in again.iter().enumerate() {
            assert!(
                c.iter().all(|b| *b == i as u8),
                "chunk {i} intact after adoption"
            );
        }
        // A new block after a freeze is cut from a new file.
        let fresh = a.store(Bytes::from(vec![1u8; super::super::BLOCK_BYTES - 100]));
        assert_ne!(place_of(&fresh).unwrap().file, old_file);
    }
}
