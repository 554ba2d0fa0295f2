//! The StreamMachine Kubernetes operator (DESIGN.md §7).
//!
//! * [`build`]: pure functions from a SourceMount and its Streams to the child
//!   objects (ConfigMap, Secret, Deployments or DaemonSet, Services, budget).
//! * [`validate`]: what the CRD schema cannot check, as `Ready=False` reasons.
//! * [`names`]: names, labels, ports and paths of the children.

pub mod build;
pub mod names;
#[doc(hidden)]
pub mod testdata;
pub mod validate;

/// Where `crdgen` writes the CRD YAML, relative to the workspace root.
pub const CRD_DIRS: &[&str] = &["crds/yaml", "helm/streammachine/crds"];
