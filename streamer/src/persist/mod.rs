//! Persistence of a stream's rewind buffer.
//!
//! [`dump`] defines the versioned binary *rewind dump* format (its layout is
//! documented there byte by byte) and streams it to any writer or from any
//! reader; [`save`] and [`load`] put it in a file atomically
//! (write a temporary file, fsync, rename).

pub mod dump;
mod file;
pub mod rewind;

pub use dump::{
    decode_record, encode_record_head, read_dump, read_dump_with, write_dump, DumpChunk, DumpError,
    DumpHeader, DumpStats, DumpWriter, Limits, FORMAT_VERSION, MAGIC,
};
pub use file::{load, load_with, save, Loaded};
