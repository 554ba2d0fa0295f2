//! Types shared between the StreamMachine streamer and its Kubernetes operator.
//!
//! [`config`] is the streamer's configuration file contract (DESIGN.md §3), its
//! own crate (`streammachine-config`, which the streamer depends on alone):
//! the streamer loads it, and the operator renders it into a ConfigMap, so both
//! use these exact types.
//!
//! [`v1alpha1`] (feature `crd`) holds the Kubernetes custom resources the
//! operator serves: `SourceMount` and `Stream` (DESIGN.md §6).

pub use streammachine_config as config;
#[cfg(feature = "crd")]
pub mod v1alpha1;

pub use config::{Config, ConfigError};
