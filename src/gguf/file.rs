//! Reading a GGUF header from a file: header-only reads and memory maps.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::cursor::Stop;
use super::error::{GgufError, Problem};
use super::header::{GgufHeader, header_extent, parse_prefix};
use super::limits::HeaderLimits;

/// Largest header the header-only path reads before giving up, unless the
/// metadata cap asks for more (see [`HeaderLimits::header_bytes`]).
///
/// Real headers are a few MiB (a 256k-token vocabulary is about 6 MiB); this
/// bound keeps a hostile file from making the catalog read gigabytes.
pub const MAX_HEADER_BYTES: u64 = 256 << 20;

/// First read of the header-only path; grown as the parse asks for more.
const INITIAL_READ: u64 = 512 << 10;

/// Parses a whole file held in memory (for example a memory map), with the default caps.
pub fn parse_slice(bytes: &[u8], path: &Path) -> Result<GgufHeader, GgufError> {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    parse_prefix(bytes, len, &HeaderLimits::default())
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

/// Reads and validates a file's header without reading its tensor data, with the default caps.
pub fn read_header(path: &Path) -> Result<GgufHeader, GgufError> {
    read_header_with(path, &HeaderLimits::default())
}

/// Reads and validates a file's header without reading its tensor data.
///
/// Reads a first chunk and grows it only as far as the header extends; a
/// metadata value past `caps` is refused from its declared length, before
/// its bytes are read.
pub fn read_header_with(path: &Path, caps: &HeaderLimits) -> Result<GgufHeader, GgufError> {
    let max_header = caps.header_bytes();
    let io_err = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut file_len = file.metadata().map_err(io_err)?.len();
    let mut buf = Vec::new();
    let mut want = INITIAL_READ.min(file_len);
    loop {
        let missing = want.saturating_sub(buf.len() as u64);
        (&mut file)
            .take(missing)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        if (buf.len() as u64) < want {
            // The file shrank since we sized it; parse what is really there.
            file_len = buf.len() as u64;
        }
        match header_extent(&buf, file_len, caps) {
            // The scan saw the whole header: parse it, once.
            Ok(_) => {
                return parse_prefix(&buf, file_len, caps)
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
                want = n.max(want.saturating_mul(2)).min(file_len).min(max_header);
            }
            // The parse names the problem the way every other path does.
            Err(scan_stop) => {
                let stop = parse_prefix(&buf, file_len, caps)
                    .err()
                    .unwrap_or(scan_stop);
                return Err(stop_to_error(stop, path, file_len));
            }
        }
    }
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
