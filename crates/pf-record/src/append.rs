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
/// back, so the file never ends in half a line; one that a kill interrupted
/// (the kernel stops a large write at a fatal signal) is cut back when the
/// file is next opened.
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    mode: u32,
    file: File,
    identity: (u64, u64),
    buf: Vec<u8>,
    cut_back: u64,
}

impl AppendFile {
    /// Opens (or creates with `mode`, e.g. `0o640`) `path` for appending.
    /// A last line without its newline, left by a writer that died
    /// mid-write, is removed: see [`AppendFile::cut_back`].
    pub fn open(path: &Path, mode: u32) -> io::Result<AppendFile> {
        let (file, identity) = open_append(path, mode)?;
        let cut_back = cut_partial_line(&file)?;
        Ok(AppendFile {
            path: path.to_path_buf(),
            mode,
            file,
            identity,
            buf: Vec::with_capacity(64 * 1024),
            cut_back,
        })
    }

    /// How many bytes of an unfinished last line [`AppendFile::open`]
    /// removed (0 if the file ended in a newline or was empty).
    pub fn cut_back(&self) -> u64 {
        self.cut_back
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

/// Truncates `file` after its last newline, reading back from the end in
/// blocks so that a large file costs no more than its last line.
fn cut_partial_line(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
            }
            return Ok(len - keep);
        }
        end = start;
    }
    if len > 0 {
        file.set_len(0)?;
    }
    Ok(len)
}

fn open_append(path: &Path, mode: u32) -> io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new()
        .read(true)
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
    fn an_unfinished_last_line_is_cut_back_on_open() {
        let dir = temp_dir("partial");
        let path = dir.join("x.jsonl");
        // A whole line, then one a killed writer left without its end; the
        // long first line makes the search cross a block boundary.
        let long = "a".repeat(100_000);
        std::fs::write(&path, format!("{long}\n{{\"n\":2,\"cut")).unwrap();
        let mut f = AppendFile::open(&path, 0o640).unwrap();
        assert_eq!(f.cut_back(), 11);
        f.buf().extend_from_slice(b"{\"n\":2}\n");
        f.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{long}\n{{\"n\":2}}\n")
        );
        // No newline at all: the whole file was one unfinished line.
        std::fs::write(&path, "{\"half").unwrap();
        assert_eq!(AppendFile::open(&path, 0o640).unwrap().cut_back(), 6);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // A complete file is left alone.
        std::fs::write(&path, "ok\n").unwrap();
        assert_eq!(AppendFile::open(&path, 0o640).unwrap().cut_back(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ok\n");
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
