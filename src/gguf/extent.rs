//! Where a header ends, found by walking its structure without building any
//! value, so the header-only reader can size its read before it parses once.
//!
//! The walk is resumable. When it runs out of bytes it keeps its place, and
//! once the caller has read more it goes on from there. A 262k-token
//! vocabulary is walked once, however many reads the header takes. The walk
//! also notes where each metadata entry ends, which lets a summary parse jump
//! over the arrays it does not decode instead of walking them again.
//!
//! It applies the same bounds as the parse, the metadata caps included (a
//! value past them is refused before its bytes are read); content checks are
//! left to the parse.

use std::ops::Range;

use super::cursor::{Cursor, Parse, Stop};
use super::header::{read_preamble, read_tensor_info};
use super::limits::{self, Budget, HeaderLimits};
use super::metadata::{read_array_head, read_value_type};
use super::value::ValueType;

/// Least bytes one metadata entry takes: key length, value type, a 1-byte value.
pub(crate) const MIN_ENTRY_BYTES: u64 = 8 + 4 + 1;
/// Least bytes one tensor info takes: name length, a 1-byte name, dimension
/// count, type and offset.
pub(crate) const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 4 + 8;

/// A tensor info's usual size, for guessing where a header ends.
const TYPICAL_TENSOR_INFO_BYTES: u64 = 56;

/// A walk over a header, resumable when its buffer grows.
#[derive(Debug, Default)]
pub(crate) struct HeaderWalk {
    /// Offset of the next item to walk: everything before it has been checked.
    pos: u64,
    stage: Stage,
    /// The metadata entry being walked.
    entry: Option<Entry>,
    /// What is left of the entry's value, innermost last.
    pending: Vec<Pending>,
    /// Where each metadata entry walked so far ends, in file order.
    entry_ends: Vec<u64>,
    /// Where the header probably ends, guessed when the walk last stopped.
    likely_end: u64,
    /// The guess a run of strings or tensor infos made as it stopped.
    guess: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
enum Stage {
    #[default]
    Preamble,
    Entries {
        left: u64,
        tensors: u64,
    },
    Tensors {
        left: u64,
    },
    Done,
}

/// The entry whose value is being walked: what its caps are counted from.
#[derive(Debug, Clone)]
struct Entry {
    key_offset: u64,
    /// Where the key's bytes are in the buffer.
    key: Range<usize>,
    value_start: u64,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    /// A value of this type, `depth` arrays deep.
    Value { ty: ValueType, depth: usize },
    /// The rest of an array's elements (strings or arrays; fixed-size ones
    /// are taken in one piece).
    Elements {
        ty: ValueType,
        left: u64,
        depth: usize,
    },
}

impl HeaderWalk {
    /// Walks on through `buf`, the first bytes of a file `file_len` bytes
    /// long, and returns the header's end once it has seen all of it.
    ///
    /// [`Stop::NeedBytes`] leaves the walk where it stopped: call again with
    /// a longer prefix of the same file.
    pub(crate) fn advance(&mut self, buf: &[u8], file_len: u64, caps: &HeaderLimits) -> Parse<u64> {
        self.guess = None;
        loop {
            let step = match self.stage {
                Stage::Done => return Ok(self.pos),
                Stage::Preamble => self.preamble(buf, file_len),
                Stage::Entries { left, tensors } => {
                    self.entries(buf, file_len, caps, left, tensors)
                }
                Stage::Tensors { left } => self.tensors(buf, file_len, left),
            };
            if let Err(stop) = step {
                if let Stop::NeedBytes(n) = stop {
                    // Past the item in hand, the rest at its least (tensor
                    // infos at their usual size), unless a run of items gave
                    // a better guess.
                    self.likely_end = self.guess.take().unwrap_or_else(|| {
                        let (entries, tensors) = match self.stage {
                            Stage::Entries { left, tensors } => (left.saturating_sub(1), tensors),
                            Stage::Tensors { left } => (0, left),
                            _ => (0, 0),
                        };
                        n.saturating_add(entries.saturating_mul(MIN_ENTRY_BYTES))
                            .saturating_add(tensors.saturating_mul(TYPICAL_TENSOR_INFO_BYTES))
                    });
                }
                return Err(stop);
            }
        }
    }

    /// Where the header probably ends, guessed when the walk last stopped
    /// for bytes: inside a run of strings or tensor infos, as far again as
    /// the items left at the size the ones walked had; else past the item in
    /// hand, the rest at its least. A reader sizes its reads by it (a guess,
    /// not a bound: reading past a header's end costs readahead of tensor
    /// data).
    pub(crate) fn likely_end(&self) -> u64 {
        self.likely_end.max(self.pos)
    }

    /// Guesses the header ends after `left` more items of `each` bytes (and
    /// whatever else is left, at its least).
    fn guess_end(&mut self, left: u64, each: Option<u64>) {
        if let Some(each) = each {
            let tensors = match self.stage {
                Stage::Entries { tensors, .. } => tensors.saturating_mul(TYPICAL_TENSOR_INFO_BYTES),
                _ => 0,
            };
            self.guess = Some(
                self.pos
                    .saturating_add(left.saturating_mul(each))
                    .saturating_add(tensors),
            );
        }
    }

    /// Where each metadata entry ends, for the entries walked so far.
    pub(crate) fn entry_ends(&self) -> &[u64] {
        &self.entry_ends
    }

    fn cursor<'a>(&self, buf: &'a [u8], file_len: u64) -> Cursor<'a> {
        Cursor::at(buf, file_len, self.pos)
    }

    fn preamble(&mut self, buf: &[u8], file_len: u64) -> Parse<()> {
        let mut cur = self.cursor(buf, file_len);
        read_preamble(&mut cur)?;
        let tensors = cur.u64("tensor count")?;
        let left = cur.u64("metadata count")?;
        cur.count(left, MIN_ENTRY_BYTES, "metadata")?;
        self.pos = cur.offset();
        self.stage = Stage::Entries { left, tensors };
        Ok(())
    }

    fn entries(
        &mut self,
        buf: &[u8],
        file_len: u64,
        caps: &HeaderLimits,
        left: u64,
        tensors: u64,
    ) -> Parse<()> {
        if let Some(entry) = &self.entry {
            let entry = entry.clone();
            while !self.pending.is_empty() {
                self.value_step(buf, file_len, caps, &entry)?;
            }
            self.entry = None;
            self.entry_ends.push(self.pos);
            self.stage = Stage::Entries {
                left: left.saturating_sub(1),
                tensors,
            };
            return Ok(());
        }
        let mut cur = self.cursor(buf, file_len);
        if left == 0 {
            cur.count(tensors, MIN_TENSOR_INFO_BYTES, "tensor")?;
            self.stage = Stage::Tensors { left: tensors };
            return Ok(());
        }
        let key_offset = cur.offset();
        let key_len = limits::key(&mut cur)?.len();
        let key_end = cur.position();
        let ty = read_value_type(&mut cur)?;
        self.entry = Some(Entry {
            key_offset,
            key: key_end.saturating_sub(key_len)..key_end,
            value_start: cur.offset(),
        });
        self.pending.push(Pending::Value { ty, depth: 0 });
        self.pos = cur.offset();
        Ok(())
    }

    fn tensors(&mut self, buf: &[u8], file_len: u64, left: u64) -> Parse<()> {
        let (start, first_left) = (self.pos, left);
        let mut left = left;
        while left > 0 {
            let mut cur = self.cursor(buf, file_len);
            if let Err(stop) = read_tensor_info(&mut cur) {
                let walked = first_left.saturating_sub(left);
                let each = self.pos.saturating_sub(start).checked_div(walked);
                // Names like `blk.17.attn_k_norm.weight` and two dimensions.
                self.guess_end(left, Some(each.unwrap_or(TYPICAL_TENSOR_INFO_BYTES)));
                return Err(stop);
            }
            self.pos = cur.offset();
            left = left.saturating_sub(1);
            self.stage = Stage::Tensors { left };
        }
        self.stage = Stage::Done;
        Ok(())
    }

    /// Walks the innermost pending part of `entry`'s value: all of it, or
    /// as far as `buf` reaches, committing each item walked.
    fn value_step(
        &mut self,
        buf: &[u8],
        file_len: u64,
        caps: &HeaderLimits,
        entry: &Entry,
    ) -> Parse<()> {
        // Only error messages quote the key; the buffer still holds it.
        let key = buf.get(entry.key.clone()).unwrap_or_default();
        let budget = Budget::at(caps, key, entry.key_offset, entry.value_start);
        let mut cur = self.cursor(buf, file_len);
        let Some(top) = self.pending.pop() else {
            return Ok(());
        };
        match top {
            Pending::Value { ty, depth } => {
                let walked = match (ty, ty.fixed_size()) {
                    (_, Some(size)) => cur.take(size, "metadata value").map(|_| None),
                    (ValueType::String, None) => {
                        budget.string(&mut cur, "string value").map(|_| None)
                    }
                    _ => array_head(&mut cur, depth.saturating_add(1), &budget),
                };
                match walked {
                    // An array's elements, when they are not taken at once.
                    Ok(rest) => self.pending.extend(rest),
                    // Nothing was committed: the value is walked again next time.
                    Err(stop) => {
                        self.pending.push(top);
                        return Err(stop);
                    }
                }
            }
            Pending::Elements { ty, left, depth } => {
                if left == 0 {
                    return Ok(());
                }
                if ty == ValueType::String {
                    return self.strings(&mut cur, &budget, left, depth);
                }
                // An array of arrays: the next element is an array, walked as a value.
                self.pending.push(Pending::Elements {
                    ty,
                    left: left.saturating_sub(1),
                    depth,
                });
                self.pending.push(Pending::Value { ty, depth });
                return Ok(());
            }
        }
        self.pos = cur.offset();
        Ok(())
    }

    /// Walks an array's remaining `left` strings in one tight loop (a
    /// vocabulary is most of a header), keeping its place if `buf` ends first.
    fn strings<'a>(
        &mut self,
        cur: &mut Cursor<'a>,
        budget: &Budget<'a>,
        left: u64,
        depth: usize,
    ) -> Parse<()> {
        let (start, first_left) = (cur.offset(), left);
        let mut left = left;
        while left > 0 {
            left = left.saturating_sub(cur.skip_strings(left, budget.last_end()));
            self.pos = cur.offset();
            if left == 0 {
                break;
            }
            // The next string is not wholly in hand or not under the caps:
            // the checked read says which (or takes it after all).
            if let Err(stop) = budget.string(cur, "string element") {
                let walked = first_left.saturating_sub(left);
                let bytes = self.pos.saturating_sub(start);
                self.guess_end(left, bytes.checked_div(walked));
                self.pending.push(Pending::Elements {
                    ty: ValueType::String,
                    left,
                    depth,
                });
                return Err(stop);
            }
            left = left.saturating_sub(1);
            self.pos = cur.offset();
        }
        Ok(())
    }
}

/// Reads an array's element type and length, checked against the file and
/// the caps; takes fixed-size elements at once. Returns what is left to walk.
fn array_head(cur: &mut Cursor<'_>, depth: usize, budget: &Budget<'_>) -> Parse<Option<Pending>> {
    let (ty, len, _) = read_array_head(cur, depth, budget)?;
    if let Some(size) = ty.fixed_size() {
        cur.take(len.saturating_mul(size), "array elements")?;
        return Ok(None);
    }
    Ok(Some(Pending::Elements {
        ty,
        left: len,
        depth,
    }))
}
