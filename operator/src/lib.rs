//! The StreamMachine Kubernetes operator (DESIGN.md §7).

/// Where `crdgen` writes the CRD YAML, relative to the workspace root.
pub const CRD_DIRS: &[&str] = &["crds/yaml", "helm/streammachine/crds"];
