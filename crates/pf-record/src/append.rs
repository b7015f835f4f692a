//! Append-only NDJSON files that the pipeline's last stage writes and an
//! admin's logrotate may rotate underneath it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A file opened with `O_APPEND` that buffers whole lines and writes them
/// in one go. Before each write it checks that the path still names the
/// file it has open, and reopens (creating it) when logrotate has moved it
/// away, so no `copytruncate` is needed. A write that fails part-way is cut
/// back, so the file never ends in half a line.
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    mode: u32,
    file: File,
    identity: (u64, u64),
    buf: Vec<u8>,
}

impl AppendFile {
    /// Opens (or creates with `mode`, e.g. `0o640`) `path` for appending.
    pub fn open(path: &Path, mode: u32) -> io::Result<AppendFile> {
        let (file, identity) = open_append(path, mode)?;
        Ok(AppendFile {
            path: path.to_path_buf(),
            mode,
            file,
            identity,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The buffer to append complete lines to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes the buffered lines out.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current != Some(self.identity) {
            let (file, identity) = open_append(&self.path, self.mode)?;
            self.file = file;
            self.identity = identity;
        }
        let before = self.file.metadata()?.len();
        if let Err(e) = self.file.write_all(&self.buf) {
            let _ = self.file.set_len(before);
            return Err(e);
        }
        self.buf.clear();
        Ok(())
    }

    /// Waits until what was written is on disk (`fdatasync`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn open_append(path: &Path, mode: u32) -> io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pf-append-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reopens_after_rotation_and_keeps_every_line() {
        let dir = temp_dir("rotate");
        let path = dir.join("anomalies.jsonl");
        let mut f = AppendFile::open(&path, 0o640).unwrap();
        f.buf().extend_from_slice(b"{\"n\":1}\n");
        f.flush().unwrap();
        std::fs::rename(&path, dir.join("anomalies.jsonl.1")).unwrap();
        f.buf().extend_from_slice(b"{\"n\":2}\n");
        f.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("anomalies.jsonl.1")).unwrap(),
            "{\"n\":1}\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":2}\n");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "created with at most 0640, got {mode:o}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = temp_dir("existing");
        let path = dir.join("x.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut f = AppendFile::open(&path, 0o640).unwrap();
        f.buf().extend_from_slice(b"new\n");
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
