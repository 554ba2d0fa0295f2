//! Rewind dumps as files: saved atomically, loaded with the file's length as
//! a bound.
//!
//! A save writes a temporary file next to the target, fsyncs it and renames
//! it over the target, so a crash at any moment leaves either the old dump or
//! the new one under the real name, never half a file. Temporary names are
//! `<name>.tmp-<pid>-<counter>`: unique per process and per save, so two saves
//! of the same path never write into each other's file. A successful save
//! removes temporary files of the same dump left by other processes (a crash
//! of an earlier run); [`load`] never looks at them.

use std::borrow::Borrow;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::dump::{
    read_dump_with, write_dump, DumpChunk, DumpError, DumpHeader, DumpStats, Limits,
};

/// A loaded dump: its header and its chunks, oldest first.
pub type Loaded = (DumpHeader, Vec<DumpChunk>);

/// Makes temporary names unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a dump to `path` atomically: into a temporary file in the same
/// directory, fsynced, then renamed over `path` (and the directory fsynced,
/// best effort, on Unix). On any error the temporary file is removed and an
/// existing dump at `path` is left untouched. The chunks must match the
/// header as [`write_dump`] requires.
pub fn save<I>(path: &Path, header: &DumpHeader, chunks: I) -> Result<DumpStats, DumpError>
where
    I: IntoIterator,
    I::Item: Borrow<DumpChunk>,
{
    let name = path.file_name().ok_or_else(|| {
        DumpError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("dump path {} has no file name", path.display()),
        ))
    })?;
    let pid = std::process::id();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{pid}-{n}"));
    let tmp = path.with_file_name(&tmp_name);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };

    let result = write_and_rename(&tmp, path, dir, header, chunks);
    if result.is_err() {
        // The temporary file may not exist (or may already be renamed).
        let _ = fs::remove_file(&tmp);
    } else {
        remove_stale_temps(dir, name.as_encoded_bytes(), pid);
    }
    result
}

fn write_and_rename<I>(
    tmp: &Path,
    path: &Path,
    dir: &Path,
    header: &DumpHeader,
    chunks: I,
) -> Result<DumpStats, DumpError>
where
    I: IntoIterator,
    I::Item: Borrow<DumpChunk>,
{
    // Dumps hold the station's audio and titles: readable by the server's
    // user alone (as its Kubernetes volume is).
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    let stats = write_dump(&mut file, header, chunks)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    sync_dir(dir);
    Ok(stats)
}

/// Makes the rename durable. Best effort: some file systems refuse to fsync
/// a directory, and the dump is already complete under its name.
#[cfg(unix)]
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Directories cannot be fsynced portably elsewhere.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) {}

/// Removes `<name>.tmp-*` files of other processes from `dir`: leftovers of a
/// crash. Files of this process are in-flight saves and are kept. Errors are
/// ignored: this is tidying, not part of the save.
fn remove_stale_temps(dir: &Path, name: &[u8], pid: u32) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut prefix = name.to_vec();
    prefix.extend_from_slice(b".tmp-");
    let mut ours = prefix.clone();
    ours.extend_from_slice(format!("{pid}-").as_bytes());
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let bytes = file_name.as_encoded_bytes();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && bytes.starts_with(&prefix) && !bytes.starts_with(&ours) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Loads the dump at `path`, or `Ok(None)` when there is no file. The file's
/// length bounds every length field (on top of `limits`). Temporary files of
/// interrupted saves are never read. A damaged file is an error, never a
/// partial result.
pub fn load(path: &Path, limits: &Limits) -> Result<Option<Loaded>, DumpError> {
    load_with(path, limits, &mut bytes::Bytes::from)
}

/// [`load`], with `keep` deciding where each chunk's audio goes (see
/// [`super::dump::read_dump_with`]).
pub fn load_with(
    path: &Path,
    limits: &Limits,
    keep: &mut dyn FnMut(Vec<u8>) -> bytes::Bytes,
) -> Result<Option<Loaded>, DumpError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(DumpError::Io(io::Error::new(
            io::ErrorKind::IsADirectory,
            format!("dump path {} is a directory", path.display()),
        )));
    }
    let len = meta.len();
    let limits = Limits {
        max_total_bytes: Some(limits.max_total_bytes.map_or(len, |max| max.min(len))),
        ..*limits
    };
    read_dump_with(file, &limits, keep).map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::dump::tests::{chunk, header, small_dump, Rng};
    use super::*;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "sm-dump-test-{}-{tag}-{}",
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn save_then_load_leaves_no_temp() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("radio-1.dump");
        let (h, chunks, bytes) = small_dump();
        let stats = save(&path, &h, &chunks).unwrap();
        assert_eq!(stats.dump_bytes, bytes.len() as u64);
        assert_eq!(fs::read(&path).unwrap(), bytes);
        assert_eq!(dir.names(), ["radio-1.dump"]);
        assert_eq!(load(&path, &Limits::default()).unwrap(), Some((h, chunks)));

        // Saving again replaces the dump.
        let mut rng = Rng::new(5);
        let h2 = header(100, 1);
        let c2 = vec![chunk(&mut rng, 100, 500, 2, "next")];
        save(&path, &h2, &c2).unwrap();
        assert_eq!(dir.names(), ["radio-1.dump"]);
        assert_eq!(load(&path, &Limits::default()).unwrap(), Some((h2, c2)));
    }

    #[test]
    fn missing_file_is_none() {
        let dir = TempDir::new("missing");
        assert_eq!(
            load(&dir.0.join("nope.dump"), &Limits::default()).unwrap(),
            None
        );
        assert_eq!(
            load(&dir.0.join("no-dir/nope.dump"), &Limits::default()).unwrap(),
            None
        );
    }

    #[test]
    fn leftover_temp_files_do_not_confuse_load() {
        let dir = TempDir::new("crash");
        let path = dir.0.join("radio-1.dump");
        let (h, chunks, bytes) = small_dump();

        // A crash during the very first save: only a half temp file exists.
        let stale = dir.0.join("radio-1.dump.tmp-4000000000-0");
        fs::write(&stale, &bytes[..bytes.len() / 2]).unwrap();
        fs::write(dir.0.join("radio-1.dump.tmp"), b"garbage").unwrap();
        assert_eq!(load(&path, &Limits::default()).unwrap(), None);

        // The next save succeeds and tidies the other process's leftover.
        save(&path, &h, &chunks).unwrap();
        assert!(!stale.exists());
        assert_eq!(dir.names(), ["radio-1.dump", "radio-1.dump.tmp"]);

        // A crash during a later save: the old dump is still what loads.
        fs::write(&stale, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(load(&path, &Limits::default()).unwrap(), Some((h, chunks)));
    }

    #[test]
    fn failed_save_keeps_the_old_dump_and_no_temp() {
        let dir = TempDir::new("failed");
        let path = dir.0.join("radio-1.dump");
        let (h, chunks, _) = small_dump();
        save(&path, &h, &chunks).unwrap();
        // Header announces 3 chunks, only 2 given.
        assert!(matches!(
            save(&path, &h, &chunks[..2]),
            Err(DumpError::Inconsistent(_))
        ));
        assert_eq!(dir.names(), ["radio-1.dump"]);
        assert_eq!(
            load(&path, &Limits::default()).unwrap(),
            Some((h.clone(), chunks.clone()))
        );
        // A directory that does not exist.
        assert!(matches!(
            save(&dir.0.join("no-dir/x.dump"), &h, &chunks),
            Err(DumpError::Io(_))
        ));
        assert!(matches!(
            save(Path::new("/"), &h, &chunks),
            Err(DumpError::Io(_))
        ));
    }

    #[test]
    fn damaged_files_are_errors() {
        let dir = TempDir::new("damaged");
        let path = dir.0.join("radio-1.dump");
        let (_, _, bytes) = small_dump();
        fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        assert!(matches!(
            load(&path, &Limits::default()),
            Err(DumpError::Truncated { .. })
        ));
        fs::write(&path, b"").unwrap();
        assert!(matches!(
            load(&path, &Limits::default()),
            Err(DumpError::Truncated { at_byte: 0 })
        ));
        // A directory where the file should be.
        assert!(matches!(
            load(&dir.0, &Limits::default()),
            Err(DumpError::Io(_))
        ));
    }
}
