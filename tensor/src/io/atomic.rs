//! Atomic file writes: a reader (or a run resumed after a crash) sees either the old file or the
//! whole new one, never a torn one.
//!
//! The recipe: write a temporary file in the destination's own directory (so the rename stays on
//! one file system), flush and `fsync` it, rename it over the destination, then `fsync` the
//! directory so the rename itself survives a power cut. On any error the temporary file is removed
//! and the destination is left as it was.
//!
//! A process killed mid-write (SIGKILL, power cut) leaves its temporary behind, never a torn
//! destination; [`remove_stale_temporaries`] clears such leftovers when a run resumes.
//!
//! For tests of what callers do when the disk fails, [`inject_write_failure`] makes later writes
//! to matching paths fail as a full disk would.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Distinguishes temporary files of concurrent writers inside one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The marker between a destination's name and the writer's pid in a temporary's name:
/// `.NAME.tmp.PID.N`.
const TEMP_MARKER: &str = ".tmp.";

/// A write failure [`inject_write_failure`] can simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// `ENOSPC` once the data is written, before the rename: a full disk.
    DiskFull,
    /// `EROFS` when the temporary file is created: a read-only file system or directory (a
    /// permission test cannot stand in for it, as root ignores directory permissions).
    ReadOnly,
}

impl WriteFault {
    fn error(self) -> std::io::Error {
        // The operating system's own codes, so messages read as the real failure would.
        std::io::Error::from_raw_os_error(match self {
            WriteFault::DiskFull => 28,
            WriteFault::ReadOnly => 30,
        })
    }
}

/// Path substrings whose writes fail, and how.
static INJECTED_FAILURES: Mutex<Vec<(String, WriteFault)>> = Mutex::new(Vec::new());

/// Makes every later atomic write to a path containing `path_substring` fail with `fault`, as
/// long as the returned guard lives. For tests of error handling: a test passes a substring
/// unique to its own scratch directory, so tests running in parallel are not affected.
#[must_use = "the failure is removed when the guard is dropped"]
pub fn inject_write_failure(path_substring: &str, fault: WriteFault) -> InjectedWriteFailure {
    let entry = (path_substring.to_string(), fault);
    INJECTED_FAILURES.lock().unwrap_or_else(|e| e.into_inner()).push(entry.clone());
    InjectedWriteFailure(entry)
}

/// Keeps an injected write failure in force until dropped.
pub struct InjectedWriteFailure((String, WriteFault));

impl Drop for InjectedWriteFailure {
    fn drop(&mut self) {
        let mut list = INJECTED_FAILURES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = list.iter().position(|e| *e == self.0) {
            list.remove(i);
        }
    }
}

fn injected_failure(path: &Path, at: WriteFault) -> std::io::Result<()> {
    let list = INJECTED_FAILURES.lock().unwrap_or_else(|e| e.into_inner());
    let text = path.to_string_lossy();
    match list.iter().any(|(s, f)| *f == at && text.contains(s.as_str())) {
        true => Err(at.error()),
        false => Ok(()),
    }
}

fn temp_path_for(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::format(path, "cannot write: the path has no file name"))?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!("{TEMP_MARKER}{}.{n}", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

/// Writes `path` atomically with the bytes `fill` produces. The parent directory must exist.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path_for(path)?;
    let result = (|| -> std::io::Result<()> {
        injected_failure(path, WriteFault::ReadOnly)?;
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        w.flush()?;
        injected_failure(path, WriteFault::DiskFull)?;
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

/// Whether `name` is a temporary of [`write_atomic`] (`.NAME.tmp.PID.N`).
fn is_temporary_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else { return false };
    let Some(at) = rest.rfind(TEMP_MARKER) else { return false };
    let mut tail = rest[at + TEMP_MARKER.len()..].split('.');
    let all_digits = |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    at > 0 && all_digits(tail.next()) && all_digits(tail.next()) && tail.next().is_none()
}

/// Deletes the temporaries that interrupted atomic writes of other processes left in `dir` and
/// in its subdirectories up to `depth` levels down; returns how many. Temporaries of this process
/// are kept (a write may be in flight). A missing `dir` counts as empty.
pub fn remove_stale_temporaries(dir: &Path, depth: usize) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    let own = format!("{TEMP_MARKER}{}.", std::process::id());
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io("reading the type of", &path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_dir() && depth > 0 {
            removed += remove_stale_temporaries(&path, depth - 1)?;
        } else if kind.is_file() && is_temporary_name(&name) && !name.contains(&own) {
            fs::remove_file(&path).map_err(|e| Error::io("removing the stale temporary", &path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
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
    fn injected_write_faults_keep_the_old_file_and_name_it() {
        let d = scratch_dir("inject");
        let p = d.join("manifest.json");
        write_atomic_bytes(&p, b"old").unwrap();
        let full = inject_write_failure(&d.to_string_lossy(), WriteFault::DiskFull);
        let err = write_atomic_bytes(&p, b"new").unwrap_err().to_string();
        assert!(err.contains("No space left on device") && err.contains("manifest.json"), "{err}");
        drop(full);
        let read_only = inject_write_failure(&d.to_string_lossy(), WriteFault::ReadOnly);
        let err = write_atomic_bytes(&p, b"new").unwrap_err().to_string();
        drop(read_only);
        assert!(err.contains("Read-only file system") && err.contains("manifest.json"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "the temporary is removed");
        write_atomic_bytes(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temporaries_of_other_processes_are_removed() {
        let d = scratch_dir("stale");
        fs::create_dir_all(d.join("sub")).unwrap();
        let own = format!(".a.bin.tmp.{}.0", std::process::id());
        for name in [".a.bin.tmp.1.0", "sub/.s.json.tmp.99.12", own.as_str(), "a.bin", ".hidden", ".x.tmp.1", "b.tmp.1.2"] {
            fs::write(d.join(name), b"x").unwrap();
        }
        assert_eq!(remove_stale_temporaries(&d, 1).unwrap(), 2);
        let mut left: Vec<String> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let mut want = vec![own, "a.bin".into(), ".hidden".into(), ".x.tmp.1".into(), "b.tmp.1.2".into(), "sub".into()];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(fs::read_dir(d.join("sub")).unwrap().count(), 0);
        assert_eq!(remove_stale_temporaries(&d.join("missing"), 1).unwrap(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let p = std::env::temp_dir().join("bs-atomic-no-such-dir/x/y.bin");
        let err = write_atomic_bytes(&p, b"x").unwrap_err();
        assert!(err.to_string().contains("y.bin"), "{err}");
    }
}
