//! Whole-file replacement that readers never see half done.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` so readers see the old or the new file, never
/// a part: a temporary file in the same directory, synced, then renamed
/// over `path`, then the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically_as(path, None, true, |w| w.write_all(bytes))
}

/// [`write_atomically`] for files holding personal data (log lines, user
/// names, addresses): a new file gets `mode` (e.g. `0o640`) before any byte
/// is written, whatever the umask allows.
pub fn write_private_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_atomically_as(path, Some(mode), true, |w| w.write_all(bytes))
}

/// [`write_private_atomically`] with the content written by `write` (into
/// a buffered writer), for large files that need not be built in memory
/// first.
pub fn write_private_atomically_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    write_atomically_as(path, Some(mode), true, write)
}

/// [`write_private_atomically`] without syncing: for files rewritten many
/// times a second whose loss in a power cut does no harm (readers still
/// never see half a file).
pub fn replace_unsynced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_atomically_as(path, Some(mode), false, |w| w.write_all(bytes))
}

fn write_atomically_as(
    path: &Path,
    mode: Option<u32>,
    sync: bool,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if let Some(mode) = mode {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        let f = options.open(&tmp)?;
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        let mut buffered = io::BufWriter::with_capacity(64 << 10, f);
        write(&mut buffered)?;
        let f = buffered.into_inner().map_err(|e| e.into_error())?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if sync {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("pf-atomic-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file left behind"
        );
        assert!(write_atomically(&dir.join("missing/x"), b"").is_err());
        use std::os::unix::fs::PermissionsExt;
        write_private_atomically(&path, b"three", 0o640).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        let big = vec![b'x'; 200_000];
        write_private_atomically_with(&path, 0o640, |w| {
            w.write_all(b"[")?;
            w.write_all(&big)
        })
        .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 200_001);
        let failed = write_private_atomically_with(&path, 0o640, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("serialising failed"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::metadata(&path).unwrap().len(), 200_001, "old file kept");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file left behind"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
