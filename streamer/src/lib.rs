//! StreamMachine's streaming audio server.
//!
//! The audio path (DESIGN.md §2): an Icecast source ([`source`]) is cut into
//! frames ([`format`]) and about-one-second chunks ([`buffer::Chunker`]); its
//! mount puts them into each stream's rewind buffer ([`stream`], [`buffer`]),
//! and listeners ([`output`]) read from any position in it.

pub mod admin;
pub mod alerts;
pub mod analytics;
pub mod api;
pub mod buffer;
pub mod cli;
pub mod error;
pub mod format;
pub mod handoff;
pub mod hls;
pub mod http;
pub mod journal;
pub mod link;
pub mod lockout;
pub mod metrics;
#[cfg(test)]
mod mutation_tests;
pub mod output;
pub mod persist;
pub mod retry;
pub mod roster;
pub mod server;
pub mod source;
pub mod status;
pub mod store;
pub mod stream;
pub mod supervisor;
pub mod sync;
pub mod telemetry;
pub mod transcode;

pub use server::{Bound, Server, ServerError};
