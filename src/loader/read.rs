//! Bringing one range of a file into the page cache, without a mapping.
//!
//! `sendfile(2)` from the file to `/dev/null` fills the page cache without
//! copying a byte to user space. Calling the loader in-process on a cold demo
//! model (2-core VM, median of 9, in turns), it took 140-155 ms against 165-177
//! for `pread` into an 8 MiB buffer (whose copy misses the CPU cache that
//! `cat`'s 128 KiB one hits) and 151-164 for `cat`.
//! Where there is no `/dev/null` or the file system cannot splice, a reader
//! falls back to `pread` into a scratch buffer.

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

use memmap2::Mmap;

use super::{CHUNK, LoadError, io_error};

/// Where a reader puts the bytes it reads: `/dev/null` through `sendfile`
/// (the page cache is filled, nothing is copied) or, without `/dev/null` or on
/// a file system that cannot splice, a scratch buffer through `pread`.
pub(super) struct Sink {
    null: Option<File>,
    /// Allocated on the first copy.
    scratch: Vec<u8>,
}

impl Sink {
    pub(super) fn open() -> Sink {
        // Only the real one: a regular file there (a broken container) would
        // be written a copy of the model.
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .ok()
            .filter(|null| {
                null.metadata().is_ok_and(|m| {
                    m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3)
                })
            });
        Sink {
            null,
            scratch: Vec::new(),
        }
    }

    /// A sink that copies (the fallback), for tests.
    #[cfg(test)]
    pub(super) fn copying() -> Sink {
        Sink {
            null: None,
            scratch: Vec::new(),
        }
    }

    /// Whether reads go through `sendfile`, for tests.
    #[cfg(test)]
    pub(super) fn splices(&self) -> bool {
        self.null.is_some()
    }

    /// Brings the `len` bytes at `start` of `file` into the page cache; a
    /// short file is `Changed`.
    pub(super) fn read(
        &mut self,
        file: &File,
        path: &Path,
        start: u64,
        len: u64,
    ) -> Result<(), LoadError> {
        if let Some(null) = &self.null {
            match send_to(null, file, path, start, len) {
                Ok(read) => return read,
                Err(Unspliceable) => self.null = None,
            }
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; CHUNK as usize];
        }
        // A buffer's worth at a time.
        let end = start.saturating_add(len);
        let mut at = start;
        while at < end {
            let piece = (end - at).min(CHUNK) as usize;
            let want = self.scratch.get_mut(..piece).unwrap_or_default();
            read_chunk(file, path, want, at)?;
            at = at.saturating_add(piece as u64);
        }
        Ok(())
    }
}

/// `sendfile` refused the pair of files (not an I/O error: copy instead).
struct Unspliceable;

/// `sendfile`s the `len` bytes at `start` of `file` to `null`; a short file
/// is `Changed`.
fn send_to(
    null: &File,
    file: &File,
    path: &Path,
    start: u64,
    len: u64,
) -> Result<Result<(), LoadError>, Unspliceable> {
    use nix::errno::Errno;
    let end = start.saturating_add(len);
    let (Ok(mut offset), Ok(end_offset)) = (i64::try_from(start), i64::try_from(end)) else {
        return Err(Unspliceable);
    };
    while offset < end_offset {
        let want = usize::try_from(end_offset.saturating_sub(offset)).unwrap_or(usize::MAX);
        match nix::sys::sendfile::sendfile64(null, file, Some(&mut offset), want) {
            Ok(0) => return Ok(Err(shorter_than(file, path, end))),
            // sendfile advanced `offset` itself.
            Ok(_) | Err(Errno::EINTR) => {}
            // EPERM: a seccomp filter stricter than the unit's refused it.
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EPERM) => {
                return Err(Unspliceable);
            }
            Err(e) => return Ok(Err(io_error(path)(std::io::Error::from(e)))),
        }
    }
    Ok(Ok(()))
}

/// `file` ended before `expected`: it changed since it was opened.
fn shorter_than(file: &File, path: &Path, expected: u64) -> LoadError {
    LoadError::Changed {
        path: path.to_path_buf(),
        expected,
        found: file.metadata().map(|m| m.len()).unwrap_or(0),
    }
}

/// Reads `want.len()` bytes at `start` of `file`; a short file is `Changed`.
fn read_chunk(file: &File, path: &Path, want: &mut [u8], start: u64) -> Result<(), LoadError> {
    let end = start.saturating_add(want.len() as u64);
    let mut filled = 0usize;
    while filled < want.len() {
        let rest = want.get_mut(filled..).unwrap_or_default();
        match file.read_at(rest, start.saturating_add(filled as u64)) {
            Ok(0) => return Err(shorter_than(file, path, end)),
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(path)(e)),
        }
    }
    Ok(())
}

/// Whether the `len` bytes at `start` of `map` are all in the page cache
/// (`mincore(2)`: it reads the page tables and never faults a page in, so a
/// truncated file cannot raise SIGBUS here). False when it cannot tell: since
/// Linux 5.0 that includes a file the daemon may not write (it then reports
/// only pages this process has mapped), which is read again as before.
pub(super) fn resident(map: &Mmap, start: u64, len: u64) -> bool {
    let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
        return false;
    };
    let Some(range) = map.get(start..start.saturating_add(len)) else {
        return false;
    };
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Some(page) = usize::try_from(page).ok().filter(|&p| p > 0) else {
        return false;
    };
    if range.is_empty() || start % page != 0 {
        return range.is_empty();
    }
    let mut pages = vec![0u8; range.len().div_ceil(page)];
    // SAFETY: `range` lies inside a live mapping and starts on a page
    // boundary (checked above); `pages` has one byte per page of it, as
    // mincore(2) asks. mincore only reads the page tables.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::mincore(
            range.as_ptr().cast_mut().cast::<libc::c_void>(),
            range.len(),
            pages.as_mut_ptr(),
        )
    };
    rc == 0 && pages.iter().all(|p| p & 1 == 1)
}
