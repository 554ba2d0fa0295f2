//! Types shared between the StreamMachine streamer and its Kubernetes operator.
//!
//! [`config`] is the streamer's configuration file contract (DESIGN.md §3): the
//! streamer loads it, and the operator renders it into a ConfigMap, so both use
//! these exact types.
//!
//! [`v1alpha1`] (feature `crd`) holds the Kubernetes custom resources the
//! operator serves: `SourceMount` and `Stream` (DESIGN.md §6).

pub mod config;
#[cfg(feature = "crd")]
pub mod v1alpha1;

pub use config::{Config, ConfigError};
