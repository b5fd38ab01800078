//! Atomic file writes: a reader (or a run resumed after a crash) sees either the old file or the
//! whole new one, never a torn one.
//!
//! The recipe: write a temporary file in the destination's own directory (so the rename stays on
//! one file system), flush and `fsync` it, rename it over the destination, then `fsync` the
//! directory so the rename itself survives a power cut. On any error the temporary file is removed
//! and the destination is left as it was.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Distinguishes temporary files of concurrent writers inside one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path_for(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::format(path, "cannot write: the path has no file name"))?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}.{n}", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

/// Writes `path` atomically with the bytes `fill` produces. The parent directory must exist.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path_for(path)?;
    let result = (|| -> std::io::Result<()> {
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("writing", path, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("renaming a finished temporary file onto", path, e));
    }
    sync_parent_dir(path)
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// `fsync` of the directory holding `path`, so that a rename into it is durable.
fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Directories cannot be opened for fsync on every platform; on Unix they can.
    #[cfg(unix)]
    {
        let d = File::open(dir).map_err(|e| Error::io("opening the directory of", path, e))?;
        d.sync_all().map_err(|e| Error::io("syncing the directory of", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bs-atomic-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let d = scratch_dir("ok");
        let p = d.join("a.bin");
        write_atomic_bytes(&p, b"old").unwrap();
        write_atomic_bytes(&p, b"new contents").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new contents");
        let names: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failing_writer_keeps_the_old_file() {
        let d = scratch_dir("fail");
        let p = d.join("a.bin");
        write_atomic_bytes(&p, b"old").unwrap();
        let err = write_atomic(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full (injected)"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full (injected)"), "{err}");
        assert!(err.to_string().contains("a.bin"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let p = std::env::temp_dir().join("bs-atomic-no-such-dir/x/y.bin");
        let err = write_atomic_bytes(&p, b"x").unwrap_err();
        assert!(err.to_string().contains("y.bin"), "{err}");
    }
}
