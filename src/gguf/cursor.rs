//! A bounds-checked little-endian reader over a prefix of a file.
//!
//! The cursor may see only the first bytes of a file (the header-only path).
//! A read past what it sees but inside the file asks for more bytes
//! ([`Stop::NeedBytes`]); a read past the end of the file is a truncation.
//! Every count read from the file is checked against the bytes left in the
//! file before anything is allocated for it.

use super::error::Problem;

/// How far ahead of a string walk bytes are touched: a page, so the walk's
/// chain of dependent loads (each string's length gives the next one's
/// offset) finds its bytes in L1 rather than waits on L2 for each.
const PREFETCH: usize = 4096;

/// Why parsing stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The file is bad at this offset.
    Bad { offset: u64, problem: Problem },
    /// The parse needs the first `n` bytes of the file; the caller saw fewer.
    NeedBytes(u64),
}

impl Stop {
    pub(crate) fn bad(offset: u64, problem: Problem) -> Self {
        Stop::Bad { offset, problem }
    }
}

pub(crate) type Parse<T> = Result<T, Stop>;

/// Reads little-endian values from `buf`, which holds the first `buf.len()` bytes of a file of `file_len` bytes.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file_len: u64,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`; `file_len` must be at least `buf.len()`.
    pub(crate) fn new(buf: &'a [u8], file_len: u64) -> Self {
        let seen = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        Cursor {
            buf,
            pos: 0,
            file_len: file_len.max(seen),
        }
    }

    /// A cursor at `offset` in `buf` (a walk resuming where it stopped).
    pub(crate) fn at(buf: &'a [u8], file_len: u64, offset: u64) -> Self {
        let mut cur = Cursor::new(buf, file_len);
        cur.pos = usize::try_from(offset).unwrap_or(usize::MAX);
        cur
    }

    /// Current offset in the buffer.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Current offset from the start of the file.
    pub(crate) fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// Total length of the file.
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes between the cursor and the end of the file.
    pub(crate) fn remaining_in_file(&self) -> u64 {
        self.file_len.saturating_sub(self.offset())
    }

    /// Bytes between the cursor and the end of what the cursor can see.
    fn remaining_in_buf(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: u64, what: &'static str) -> Parse<&'a [u8]> {
        let start = self.offset();
        if n > self.remaining_in_file() {
            return Err(Stop::bad(
                start,
                Problem::Truncated {
                    what,
                    needed: n,
                    available: self.remaining_in_file(),
                },
            ));
        }
        let end = start.saturating_add(n);
        let slice = usize::try_from(end)
            .ok()
            .and_then(|end| self.buf.get(self.pos..end).map(|s| (end, s)));
        match slice {
            Some((end, s)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(Stop::NeedBytes(end)),
        }
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self, what: &'static str) -> Parse<[u8; N]> {
        let bytes = self.take(N as u64, what)?;
        bytes
            .first_chunk::<N>()
            .copied()
            .ok_or(Stop::NeedBytes(self.offset()))
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Parse<u8> {
        self.array::<1>(what).map(|[b]| b)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Parse<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Parse<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Steps over up to `most` length-prefixed strings, each while it lies
    /// wholly in the buffer and ends at or before offset `last_end`; returns
    /// how many. The walk of a vocabulary spends its time here, so this is a
    /// bare loop; whatever stops it is left to a checked read to name.
    pub(crate) fn skip_strings(&mut self, most: u64, last_end: u64) -> u64 {
        let limit = usize::try_from(last_end)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        let mut pos = self.pos;
        let mut done = 0u64;
        let mut touched = 0u8;
        while done < most {
            // An independent load: out of the chain, it only warms the cache.
            touched ^= self
                .buf
                .get(pos.wrapping_add(PREFETCH))
                .copied()
                .unwrap_or(0);
            let Some(len) = self.buf.get(pos..).and_then(|b| b.first_chunk::<8>()) else {
                break;
            };
            let end = usize::try_from(u64::from_le_bytes(*len))
                .ok()
                .and_then(|len| pos.checked_add(8)?.checked_add(len));
            match end {
                Some(end) if end <= limit => pos = end,
                _ => break,
            }
            done = done.wrapping_add(1);
        }
        self.pos = pos;
        // Kept, so the touching loads are not optimised away.
        std::hint::black_box(touched);
        done
    }

    /// Validates a count of items, each at least `min_item_bytes` long, against the bytes
    /// left in the file, and returns a safe capacity to reserve for them.
    pub(crate) fn count(
        &self,
        count: u64,
        min_item_bytes: u64,
        what: &'static str,
    ) -> Parse<usize> {
        let too_large = || {
            Stop::bad(
                self.offset(),
                Problem::CountTooLarge {
                    what,
                    count,
                    remaining: self.remaining_in_file(),
                },
            )
        };
        let needed = count.checked_mul(min_item_bytes).ok_or_else(too_large)?;
        if needed > self.remaining_in_file() {
            return Err(too_large());
        }
        // Reserve no more than the bytes already in hand could hold.
        let visible = (self.remaining_in_buf() as u64)
            .checked_div(min_item_bytes)
            .unwrap_or(count);
        Ok(usize::try_from(count.min(visible)).unwrap_or(0))
    }
}

/// `value` rounded up to a multiple of `alignment` (a power of two), or None on overflow.
pub(crate) fn align_up(value: u64, alignment: u64) -> Option<u64> {
    let mask = alignment.checked_sub(1)?;
    value.checked_add(mask).map(|v| v & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_visible_prefix_ask_for_more() {
        let mut c = Cursor::new(&[1, 0, 0, 0], 100);
        assert_eq!(c.u32("x").unwrap(), 1);
        assert!(matches!(c.u64("y"), Err(Stop::NeedBytes(12))));
    }

    #[test]
    fn reads_past_the_file_are_truncation() {
        let mut c = Cursor::new(&[1, 2], 2);
        let err = c.u32("version").unwrap_err();
        assert!(matches!(
            err,
            Stop::Bad {
                offset: 0,
                problem: Problem::Truncated {
                    needed: 4,
                    available: 2,
                    ..
                }
            }
        ));
    }

    #[test]
    fn counts_are_bounded_by_file_bytes_not_trusted() {
        let c = Cursor::new(&[0; 16], 1 << 20);
        assert!(c.count(1 << 63, 8, "tensor").is_err());
        assert!(c.count(u64::MAX, 2, "tensor").is_err());
        // Fits the file, but capacity is limited to what is visible.
        assert_eq!(c.count(1000, 8, "x").unwrap(), 2);
    }

    #[test]
    fn align_up_handles_overflow() {
        assert_eq!(align_up(33, 32), Some(64));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX, 32), None);
    }
}
