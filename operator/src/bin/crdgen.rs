//! Writes the CRD YAML generated from `crds/src/v1alpha1.rs` into `crds/yaml/`
//! and `helm/streammachine/crds/` (run from anywhere in the workspace):
//!
//! ```text
//! cargo run -p streammachine-operator --bin crdgen          # write
//! cargo run -p streammachine-operator --bin crdgen -- --check  # exit 1 on drift
//! ```

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = match streammachine_crds::v1alpha1::crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut drift = false;
    for dir in streammachine_operator::CRD_DIRS {
        let dir = root.join(dir);
        for f in &files {
            let path = dir.join(&f.name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == f.yaml {
                continue;
            }
            if check {
                eprintln!("crdgen: {} differs from the types", path.display());
                drift = true;
                continue;
            }
            if let Err(e) =
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &f.yaml))
            {
                eprintln!("crdgen: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
        }
    }
    if drift {
        eprintln!("crdgen: run `cargo run -p streammachine-operator --bin crdgen` and commit");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
