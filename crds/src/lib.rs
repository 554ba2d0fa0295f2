//! Types shared between the StreamMachine streamer and its Kubernetes operator.
//!
//! [`config`] is the streamer's configuration file contract (DESIGN.md §3): the
//! streamer loads it, and the operator renders it into a ConfigMap, so both use
//! these exact types.

pub mod config;

pub use config::{Config, ConfigError};
