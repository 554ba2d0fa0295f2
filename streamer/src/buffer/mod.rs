//! The rewind buffer and what goes into it (DESIGN.md §2).

pub mod arena;
pub mod chunk;
pub mod chunker;
pub mod rewind;

pub use chunk::{Chunk, ChunkDraft, Title};
pub use chunker::Chunker;
pub use rewind::{Position, RewindBuffer};
