//! Reading a GGUF header from a file: header-only reads and memory maps.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::cursor::Stop;
use super::error::{GgufError, Problem};
use super::extent::HeaderWalk;
use super::header::{GgufHeader, parse_prefix};
use super::limits::HeaderLimits;
use super::metadata::Decode;

/// Largest header the header-only path reads before giving up, unless the
/// metadata cap asks for more (see [`HeaderLimits::header_bytes`]).
///
/// Real headers are a few MiB (a 256k-token vocabulary is about 6 MiB); this
/// bound keeps a hostile file from making the catalog read gigabytes.
pub const MAX_HEADER_BYTES: u64 = 256 << 20;

/// First read of the header-only path.
const INITIAL_READ: u64 = 512 << 10;

/// How much each later read adds at least. The walk resumes where it
/// stopped, so a small step costs a syscall, not a walk from the start; it
/// keeps what was just read in the CPU's cache while it is walked. (The
/// kernel's readahead stays on: without it, a cold header read waits on each
/// step, 3x slower than a plain read in `make bench`.)
const READ_STEP: u64 = 128 << 10;

/// Most room reserved past the next read on the walk's guess of the header's end.
const GUESS_LIMIT: u64 = 64 << 20;

/// Parses a whole file held in memory (for example a memory map), with the default caps.
pub fn parse_slice(bytes: &[u8], path: &Path) -> Result<GgufHeader, GgufError> {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    parse_prefix(bytes, len, &HeaderLimits::default(), Decode::All, &[])
        .map_err(|stop| stop_to_error(stop, path, len))
}

fn stop_to_error(stop: Stop, path: &Path, file_len: u64) -> GgufError {
    match stop {
        Stop::Bad { offset, problem } => GgufError::format(path, offset, problem),
        // Only reachable if the file is shorter than the parser believed.
        Stop::NeedBytes(n) => GgufError::format(
            path,
            file_len,
            Problem::Truncated {
                what: "header",
                needed: n.saturating_sub(file_len),
                available: 0,
            },
        ),
    }
}

/// Reads and validates a file's header without reading its tensor data, with
/// the default caps, decoding every value.
pub fn read_header(path: &Path) -> Result<GgufHeader, GgufError> {
    read_header_with(path, &HeaderLimits::default(), Decode::All)
}

/// Reads and validates a file's header without reading its tensor data.
///
/// Reads a first chunk and grows it only as far as the header extends, walking
/// each new part once; a metadata value past `caps` is refused from its
/// declared length, before its bytes are read. Then it parses the header once,
/// decoding what `decode` asks for.
pub fn read_header_with(
    path: &Path,
    caps: &HeaderLimits,
    decode: Decode,
) -> Result<GgufHeader, GgufError> {
    let file = File::open(path).map_err(|source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_header_of(&file, path, caps, decode)
}

/// [`read_header_with`] on a file already open (`path` names it in errors):
/// what is read is that file, whatever `path` has become since.
pub fn read_header_of(
    file: &File,
    path: &Path,
    caps: &HeaderLimits,
    decode: Decode,
) -> Result<GgufHeader, GgufError> {
    let max_header = caps.header_bytes();
    let io_err = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file_len = file.metadata().map_err(io_err)?.len();
    let mut buf = Vec::new();
    let mut want = INITIAL_READ.min(file_len);
    let mut walk = HeaderWalk::default();
    loop {
        fill(file, &mut buf, usize::try_from(want).unwrap_or(usize::MAX)).map_err(io_err)?;
        if (buf.len() as u64) < want {
            // The file shrank since we sized it; parse what is really there.
            file_len = buf.len() as u64;
        }
        match walk.advance(&buf, file_len, caps) {
            // The walk saw the whole header: parse it, once.
            Ok(_) => {
                return parse_prefix(&buf, file_len, caps, decode, walk.entry_ends())
                    .map_err(|s| stop_to_error(s, path, file_len));
            }
            Err(Stop::NeedBytes(n)) if n <= file_len && (buf.len() as u64) < file_len => {
                if n > max_header {
                    return Err(GgufError::format(
                        path,
                        buf.len() as u64,
                        Problem::HeaderTooLarge { limit: max_header },
                    ));
                }
                // The next step, but not past where the header likely ends.
                let likely = walk.likely_end();
                let step = want.saturating_add(READ_STEP);
                let next = if likely > want {
                    step.min(likely)
                } else {
                    step
                };
                want = n.max(next).min(file_len).min(max_header);
                // Room for the rest at once (growing a buffer this size copies
                // it), an eighth over the guess. A guess a file steers, so
                // bounded: real vocabularies are under 16 MiB, and one long
                // string is sized exactly, by `n`.
                let likely = likely
                    .saturating_add(likely.saturating_sub(want) / 8)
                    .min(want.saturating_add(GUESS_LIMIT))
                    .max(want)
                    .min(file_len)
                    .min(max_header);
                buf.reserve_exact(
                    usize::try_from(likely)
                        .unwrap_or(0)
                        .saturating_sub(buf.len()),
                );
            }
            // The parse names the problem the way every other path does.
            Err(scan_stop) => {
                let stop = parse_prefix(&buf, file_len, caps, decode, &[])
                    .err()
                    .unwrap_or(scan_stop);
                return Err(stop_to_error(stop, path, file_len));
            }
        }
    }
}

/// Reads on into `buf` until it holds `want` bytes or the file ends.
///
/// Straight into the spare capacity, one `read` per step where the kernel
/// allows: zeroing the buffer first costs a third of the copy, and
/// `read_to_end` on a `Take` starts again from 8 KiB reads each time.
fn fill(file: &File, buf: &mut Vec<u8>, want: usize) -> std::io::Result<()> {
    // Sized ahead by the caller where it can guess; else grown geometrically.
    buf.reserve(want.saturating_sub(buf.len()));
    while buf.len() < want {
        match read_into_spare(file, buf, want.saturating_sub(buf.len())) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `pread(2)` of at most `most` bytes, at the file's offset `buf.len()`,
/// appended to `buf` (within its capacity). By offset, not the descriptor's
/// position: a descriptor the caller shares reads the same.
#[allow(unsafe_code)]
fn read_into_spare(file: &File, buf: &mut Vec<u8>, most: usize) -> std::io::Result<usize> {
    let offset =
        libc::off64_t::try_from(buf.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(most);
    // SAFETY: `spare` is writable memory owned by `buf`, at least `len`
    // bytes long; pread(2) writes at most `len` bytes at its start.
    let n = unsafe { libc::pread64(file.as_raw_fd(), spare.as_mut_ptr().cast(), len, offset) };
    let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
    // SAFETY: pread(2) returned `n <= len`: the first `n` spare bytes are
    // initialized, by that read.
    unsafe { buf.set_len(buf.len().saturating_add(n.min(len))) };
    Ok(n)
}

/// A file mapped read-only into memory with its validated header.
///
/// Each shard of a split set gets its own mapping; tensors are addressed by
/// (shard, offset, size) within it.
pub struct MappedFile {
    path: PathBuf,
    map: Mmap,
    header: GgufHeader,
}

impl MappedFile {
    /// Maps `path` and validates it.
    ///
    /// The mapping stays valid only while the file keeps its length: callers
    /// that touch tensor pages must check the file has not shrunk first.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the map is read-only and private to this process; a file
        // truncated underneath it is the documented hazard the loader guards.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let header = parse_slice(&map, path)?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            map,
            header,
        })
    }

    /// The mapped file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The bytes of the tensor at `index` in this file's header, without copying.
    pub fn tensor_data(&self, index: usize) -> Option<&[u8]> {
        let t = self.header.tensors.get(index)?;
        let start = usize::try_from(t.offset).ok()?;
        let end = start.checked_add(usize::try_from(t.size).ok()?)?;
        self.map.get(start..end)
    }
}
