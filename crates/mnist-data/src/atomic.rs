//! Crash-safe file writes: write a temporary file beside the target, flush it, then rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// The temporary name used while `path` is being written (`.name.tmp-PID` in the same folder,
/// so the final rename never crosses file systems).
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Removes the temporaries of earlier writes of `path` left by processes that were killed
/// midway (a partial download), leaving those of processes still running. Where that cannot be
/// told (no `/proc`), only temporaries untouched for a day go. Best effort: errors are ignored.
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let proc_fs = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let stale = if proc_fs {
            !Path::new(&format!("/proc/{pid}")).exists()
        } else {
            let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            age.is_some_and(|a| a.as_secs() > 24 * 3600)
        };
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `bytes` to `path` atomically: readers see the old file or the whole new one, never a
/// partial write, even if the process is killed midway.
///
/// # Errors
/// [`DataError::Io`] naming `path` when the folder is not writable or the disk is full.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.gz");
        // A process id far above any live one (Linux caps them at 2²²), ours, and another file's.
        let dead = dir.path().join(".a.gz.tmp-4294967295");
        let ours = temp_path_for(&f);
        let other = dir.path().join(".b.gz.tmp-4294967295");
        for p in [&dead, &ours, &other] {
            std::fs::write(p, b"partial").unwrap();
        }
        remove_stale_temps(&f);
        if Path::new("/proc/self").exists() {
            assert!(!dead.exists(), "a dead process's temporary is left");
        }
        assert!(ours.exists() && other.exists());
    }

    #[test]
    fn writes_and_replaces_without_leaving_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.bin");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = write_atomic(&dir.path().join("no/such/dir/x"), b"x").unwrap_err().to_string();
        assert!(err.contains("no/such/dir/x"), "{err}");
    }
}
