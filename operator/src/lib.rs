//! The StreamMachine Kubernetes operator (DESIGN.md §7).
//!
//! * [`build`]: pure functions from a SourceMount and its Streams to the child
//!   objects (ConfigMap, Secret, Deployments or DaemonSet, Services, budget).
//! * [`validate`]: what the CRD schema cannot check, as `Ready=False` reasons.
//! * [`controller`]: the reconcilers and the controllers that run them.
//! * [`status`]: asking a master for its streams (listeners, buffer, source).
//! * [`rollout`]: the upgrade order (master first, slaves once it serves).
//! * [`leader`]: Lease-based leader election (a second replica is a hot standby).
//! * [`lifecycle`]: start-up (CRDs served?), leading or standing by, shutdown.
//! * [`conditions`], [`metrics`], [`http`], [`names`]: the pieces they share.

pub mod build;
pub mod conditions;
pub mod controller;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod names;
pub mod rollout;
pub mod status;
#[doc(hidden)]
pub mod testdata;
pub mod validate;

/// Where `crdgen` writes the CRD YAML, relative to the workspace root.
pub const CRD_DIRS: &[&str] = &["crds/yaml", "helm/streammachine/crds"];
