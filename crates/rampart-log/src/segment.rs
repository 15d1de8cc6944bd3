//! Segment files: naming, creation with private permissions, the temporary
//! files of segment rewrites, positioned reads and directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rampart_identity::fsutil;

const SUFFIX: &str = ".seg";
/// Appended to a segment's name while a rewrite of it is being written.
const TMP_SUFFIX: &str = ".tmp";
const DIGITS: usize = 20;

pub(crate) fn path_for(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:0DIGITS$}{SUFFIX}"))
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, sorted by first offset. Other files are
/// ignored.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_name) {
            Some(base) => out.push((base, entry.path())),
            None => tracing::debug!(file = ?name, "ignoring non-segment file in log dir"),
        }
    }
    out.sort_by_key(|(base, _)| *base);
    Ok(out)
}

/// Where a rewrite of the segment at `path` is written before it is renamed
/// over it: `<name>.tmp`, which [`list`] never takes for a segment.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Deletes the `*.tmp` files in `dir`, left by a rewrite cut short by a
/// crash (the segment it was replacing is still whole), and makes the
/// deletion durable. Returns how many were deleted.
pub(crate) fn remove_leftovers(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let is_tmp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(TMP_SUFFIX));
        if !is_tmp || !entry.file_type()?.is_file() {
            continue;
        }
        tracing::info!(file = %entry.path().display(), "deleting a leftover temporary file in log dir");
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Creates a new, empty segment (mode 0600) and makes its name durable.
pub(crate) fn create(dir: &Path, base: u64) -> io::Result<(PathBuf, File)> {
    let path = path_for(dir, base);
    drop(fsutil::create_private_file(&path)?);
    let file = open_for_write(&path)?;
    sync_dir(dir)?;
    Ok((path, file))
}

/// Opens the active segment for positioned writes (not `O_APPEND`: the file
/// may hold preallocated zeros past its last block, and blocks are written
/// over them).
pub(crate) fn open_for_write(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

pub(crate) fn open_for_read(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Fsyncs a directory so that created, renamed or removed names are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened as files here; their metadata is
        // journaled by the file system.
        let _ = dir;
        Ok(())
    }
}

/// Writes all of `buf` to `file` at `pos`, without moving a shared cursor.
pub(crate) fn write_at(file: &File, pos: u64, buf: &[u8]) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.write_all_at(buf, pos)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0usize;
        while done < buf.len() {
            let n = file.seek_write(&buf[done..], pos + done as u64)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// Writes zeros to `file` over `from..to`. Zeros really written (not a hole,
/// nor `fallocate`'s unwritten extents) are what make later fdatasyncs
/// cheap: a block written over them changes no metadata, so the file
/// system has no journal commit to make.
pub(crate) fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut pos = from;
    while pos < to {
        let n = usize::try_from(to - pos)
            .unwrap_or(usize::MAX)
            .min(ZEROS.len());
        write_at(file, pos, &ZEROS[..n])?;
        pos += n as u64;
    }
    Ok(())
}

/// Fills `buf` from `file` at `pos`, without moving a shared cursor.
pub(crate) fn read_at(file: &File, pos: u64, buf: &mut [u8]) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, pos)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0usize;
        while done < buf.len() {
            let n = file.seek_read(&mut buf[done..], pos + done as u64)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = path_for(Path::new("/x"), 42);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.seg");
        assert_eq!(parse_name(name), Some(42));
        assert_eq!(parse_name("42.seg"), None);
        assert_eq!(parse_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_name("99999999999999999999.seg"), None);
        let tmp = tmp_path(&p);
        assert_eq!(
            tmp.file_name().unwrap().to_str().unwrap(),
            "00000000000000000042.seg.tmp"
        );
        assert_eq!(parse_name("00000000000000000042.seg.tmp"), None);
    }
}
