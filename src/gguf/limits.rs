//! Caps on what a header's metadata may hold, and the budget that enforces
//! them while a header is walked or parsed.
//!
//! The caps are checked from the lengths the file declares, before the bytes
//! are read or anything is allocated for them: a 250 MB string in a header
//! costs the reader a few bytes of look-ahead, not 250 MB of memory.

use super::cursor::{Cursor, Parse, Stop};
use super::error::Problem;

/// Default cap on one metadata value (a string or a whole array), in bytes.
///
/// The largest values real files carry are a vocabulary (262k tokens: about
/// 6 MiB of strings), its per-token scores and types (1 MiB each), BPE merges
/// (about 5 MiB) and `tokenizer.huggingface.json`, a whole `tokenizer.json`
/// stored as ONE string (33 MiB for Gemma's 262k-token vocabulary). That last
/// one is why strings get no smaller cap than arrays: 64 MiB admits twice the
/// largest real value and still refuses a hostile one long before it costs
/// the daemon memory.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 64 << 20;

/// Default cap on all of a header's metadata together (keys, types, values).
///
/// Real headers sum to well under 64 MiB even with a 33 MiB embedded
/// tokenizer.json. A header read holds the raw bytes and the parsed values at
/// once, so this bounds one read at about twice this much memory.
pub const DEFAULT_MAX_METADATA_BYTES: u64 = 128 << 20;

/// Longest metadata key: the GGUF spec bounds keys to 2^16 - 1 bytes.
pub const MAX_KEY_BYTES: u64 = 65_535;

/// Headers may hold this much beyond the metadata cap: the tensor infos (a
/// 10k-tensor model needs about 1 MiB of them).
const TENSOR_INFO_ALLOWANCE: u64 = 128 << 20;

/// Where metadata starts in a GGUF file (after magic, version and two counts).
pub(crate) const METADATA_START: u64 = 24;

/// Longest part of a key quoted in an error message.
const KEY_SHOWN: usize = 80;

/// How much metadata a header may hold (config keys `max_metadata_value_bytes`
/// and `max_metadata_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    /// Most bytes one value (a string, or an array with all its elements) may take.
    pub max_value_bytes: u64,
    /// Most bytes all metadata entries together may take.
    pub max_metadata_bytes: u64,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits {
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
        }
    }
}

impl HeaderLimits {
    /// Most bytes the header-only reader reads: the metadata cap plus room for
    /// tensor infos, and never less than the historical 256 MiB.
    pub fn header_bytes(&self) -> u64 {
        super::MAX_HEADER_BYTES.max(
            self.max_metadata_bytes
                .saturating_add(TENSOR_INFO_ALLOWANCE),
        )
    }
}

/// Counts one metadata value's bytes (and the metadata's so far) against the caps.
#[derive(Clone, Copy)]
pub(crate) struct Budget<'a> {
    limits: HeaderLimits,
    key: &'a [u8],
    key_offset: u64,
    value_start: u64,
}

impl<'a> Budget<'a> {
    /// The budget of the value of `key` (whose entry starts at `key_offset`),
    /// which starts at the cursor.
    pub(crate) fn new(
        limits: &HeaderLimits,
        key: &'a [u8],
        key_offset: u64,
        cur: &Cursor<'_>,
    ) -> Self {
        Self::at(limits, key, key_offset, cur.offset())
    }

    /// The budget of the value of `key` (whose entry starts at `key_offset`),
    /// which starts at `value_start`.
    pub(crate) fn at(
        limits: &HeaderLimits,
        key: &'a [u8],
        key_offset: u64,
        value_start: u64,
    ) -> Self {
        Budget {
            limits: *limits,
            key,
            key_offset,
            value_start,
        }
    }

    /// The furthest offset the value may reach under both caps: a read that
    /// ends there or before passes [`Budget::check`].
    pub(crate) fn last_end(&self) -> u64 {
        self.value_start
            .saturating_add(self.limits.max_value_bytes)
            .min(METADATA_START.saturating_add(self.limits.max_metadata_bytes))
    }

    /// Refuses a value that would pass a cap once `more` bytes past the cursor are taken.
    pub(crate) fn check(&self, cur: &Cursor<'_>, more: u64) -> Parse<()> {
        let end = cur.offset().saturating_add(more);
        let value = end.saturating_sub(self.value_start);
        if value > self.limits.max_value_bytes {
            return Err(Stop::bad(
                self.key_offset,
                Problem::ValueTooLarge {
                    key: shown_key(self.key),
                    size: value,
                    limit: self.limits.max_value_bytes,
                },
            ));
        }
        let total = end.saturating_sub(METADATA_START);
        if total > self.limits.max_metadata_bytes {
            return Err(Stop::bad(
                self.key_offset,
                Problem::MetadataTooLarge {
                    key: shown_key(self.key),
                    size: total,
                    limit: self.limits.max_metadata_bytes,
                },
            ));
        }
        Ok(())
    }

    /// The next length-prefixed string, checked against the caps before it is taken.
    pub(crate) fn string(&self, cur: &mut Cursor<'a>, what: &'static str) -> Parse<&'a [u8]> {
        let len = cur.u64(what)?;
        // A length past the end of the file is a truncation, named as such.
        if len <= cur.remaining_in_file() {
            self.check(cur, len)?;
        }
        cur.take(len, what)
    }
}

/// A metadata key's bytes, checked against [`MAX_KEY_BYTES`] before they are taken.
pub(crate) fn key<'a>(cur: &mut Cursor<'a>) -> Parse<&'a [u8]> {
    let at = cur.offset();
    let len = cur.u64("metadata key")?;
    if len > MAX_KEY_BYTES {
        return Err(Stop::bad(
            at,
            Problem::KeyTooLong {
                len,
                limit: MAX_KEY_BYTES,
            },
        ));
    }
    cur.take(len, "metadata key")
}

/// A key as error messages quote it: lossy UTF-8, cut to a readable length.
pub(crate) fn shown_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    match text.char_indices().nth(KEY_SHOWN) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text.into_owned(),
    }
}
