//! The metadata section of a GGUF header: keys, typed values, nested arrays.

use indexmap::IndexMap;

use super::cursor::{Cursor, Parse, Stop};
use super::error::Problem;
use super::extent::MIN_ENTRY_BYTES;
use super::header::MAX_ARRAY_DEPTH;
use super::limits::{self, Budget, HeaderLimits};
use super::value::{Array, StringArray, UnreadArray, Value, ValueType};

/// Arrays longer than this are left unread by a [`Decode::Summary`] read:
/// vocabularies, their scores and types, and BPE merges (tens of thousands of
/// elements and more) are; per-layer counts (one per block) are not.
pub const SUMMARY_ARRAY_LEN: u64 = 4096;

/// How much of a header's metadata a read decodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Decode {
    /// Every value (`llama-router inspect`).
    #[default]
    All,
    /// Arrays past [`SUMMARY_ARRAY_LEN`] elements are walked and bounded like
    /// any value, but kept as [`Array::Unread`] (their type and length), and
    /// their elements' contents are not checked. That is all the catalog, the
    /// loader and the VRAM estimate use of them, at a fraction of the cost:
    /// a 262k-token vocabulary is neither copied nor UTF-8 validated.
    Summary,
}

/// Metadata key/value pairs, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub(super) entries: IndexMap<String, Value>,
    /// File offset of each entry's key, index-aligned with `entries`.
    pub(super) offsets: Vec<u64>,
}

impl Metadata {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)
    }

    /// The value of `key` as a non-negative integer.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// The value of `key` as text.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// Where `key`'s entry starts in the file.
    pub fn offset_of(&self, key: &str) -> Option<u64> {
        self.entries
            .get_index_of(key)
            .and_then(|i| self.offsets.get(i).copied())
    }

    /// All entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How a value is read: what to decode, and where its entry ends when a walk
/// has already found out.
#[derive(Clone, Copy)]
struct Reading {
    decode: Decode,
    /// End of the entry, when the value is the entry's whole value.
    entry_end: Option<u64>,
}

pub(super) fn read_metadata<'a>(
    cur: &mut Cursor<'a>,
    count: u64,
    caps: &HeaderLimits,
    decode: Decode,
    entry_ends: &[u64],
) -> Parse<Metadata> {
    let capacity = cur.count(count, MIN_ENTRY_BYTES, "metadata")?;
    let mut metadata = Metadata {
        entries: IndexMap::with_capacity(capacity),
        offsets: Vec::with_capacity(capacity),
    };
    for index in 0..usize::try_from(count).unwrap_or(usize::MAX) {
        let key_offset = cur.offset();
        let key_bytes = limits::key(cur)?;
        if key_bytes.is_empty() {
            return Err(Stop::bad(key_offset, Problem::EmptyKey));
        }
        let key = std::str::from_utf8(key_bytes)
            .map_err(|_| Stop::bad(key_offset, Problem::KeyNotUtf8))?;
        let value_type = read_value_type(cur)?;
        let budget = Budget::new(caps, key_bytes, key_offset, cur);
        let reading = Reading {
            decode,
            entry_end: entry_ends.get(index).copied(),
        };
        let value = read_value(cur, value_type, 0, &budget, reading)?;
        if metadata.entries.contains_key(key) {
            return Err(Stop::bad(
                key_offset,
                Problem::DuplicateKey(limits::shown_key(key_bytes)),
            ));
        }
        metadata.entries.insert(key.to_owned(), value);
        metadata.offsets.push(key_offset);
    }
    Ok(metadata)
}

pub(super) fn read_value_type(cur: &mut Cursor<'_>) -> Parse<ValueType> {
    let at = cur.offset();
    let id = cur.u32("value type")?;
    ValueType::from_id(id).ok_or_else(|| Stop::bad(at, Problem::UnknownValueType(id)))
}

fn read_bool(cur: &mut Cursor<'_>) -> Parse<bool> {
    let at = cur.offset();
    match cur.u8("bool value")? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(Stop::bad(at, Problem::InvalidBool(b))),
    }
}

fn read_value<'a>(
    cur: &mut Cursor<'a>,
    ty: ValueType,
    depth: usize,
    budget: &Budget<'a>,
    reading: Reading,
) -> Parse<Value> {
    fn le<const N: usize>(cur: &mut Cursor<'_>) -> Parse<[u8; N]> {
        let bytes = cur.take(N as u64, "metadata value")?;
        bytes
            .first_chunk::<N>()
            .copied()
            .ok_or(Stop::NeedBytes(cur.offset()))
    }
    Ok(match ty {
        ValueType::U8 => Value::U8(cur.u8("metadata value")?),
        ValueType::I8 => Value::I8(i8::from_le_bytes(le(cur)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(le(cur)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(le(cur)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(le(cur)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(le(cur)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(le(cur)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(le(cur)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(le(cur)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(le(cur)?)),
        ValueType::Bool => Value::Bool(read_bool(cur)?),
        ValueType::String => Value::String(lossy(budget.string(cur, "string value")?)),
        ValueType::Array => {
            Value::Array(read_array(cur, depth.saturating_add(1), budget, reading)?)
        }
    })
}

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes a packed run of `N`-byte little-endian values.
fn decode<const N: usize, T>(bytes: &[u8], from_le: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .filter_map(|chunk| chunk.first_chunk::<N>())
        .map(|chunk| from_le(*chunk))
        .collect()
}

fn read_array<'a>(
    cur: &mut Cursor<'a>,
    depth: usize,
    budget: &Budget<'a>,
    reading: Reading,
) -> Parse<Array> {
    let (element_type, len, capacity) = read_array_head(cur, depth, budget)?;
    if reading.decode == Decode::Summary && len > SUMMARY_ARRAY_LEN {
        skip_elements(cur, element_type, len, depth, budget, reading.entry_end)?;
        return Ok(Array::Unread(UnreadArray { element_type, len }));
    }
    // Elements are parts of the entry, not all of it.
    let inner = Reading {
        entry_end: None,
        ..reading
    };
    if let Some(size) = element_type.fixed_size() {
        let bytes = cur.take(len.saturating_mul(size), "array elements")?;
        return Ok(match element_type {
            ValueType::U8 => Array::U8(bytes.to_vec()),
            ValueType::I8 => Array::I8(decode(bytes, i8::from_le_bytes)),
            ValueType::U16 => Array::U16(decode(bytes, u16::from_le_bytes)),
            ValueType::I16 => Array::I16(decode(bytes, i16::from_le_bytes)),
            ValueType::U32 => Array::U32(decode(bytes, u32::from_le_bytes)),
            ValueType::I32 => Array::I32(decode(bytes, i32::from_le_bytes)),
            ValueType::F32 => Array::F32(decode(bytes, f32::from_le_bytes)),
            ValueType::U64 => Array::U64(decode(bytes, u64::from_le_bytes)),
            ValueType::I64 => Array::I64(decode(bytes, i64::from_le_bytes)),
            ValueType::F64 => Array::F64(decode(bytes, f64::from_le_bytes)),
            ValueType::Bool => {
                let start = cur.offset().saturating_sub(len);
                let mut out = Vec::with_capacity(bytes.len());
                for (i, &b) in (0u64..).zip(bytes) {
                    match b {
                        0 | 1 => out.push(b == 1),
                        _ => {
                            return Err(Stop::bad(
                                start.saturating_add(i),
                                Problem::InvalidBool(b),
                            ));
                        }
                    }
                }
                Array::Bool(out)
            }
            ValueType::String | ValueType::Array => Array::U8(Vec::new()),
        });
    }
    if element_type == ValueType::String {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(capacity);
        for _ in 0..len {
            bytes.extend_from_slice(budget.string(cur, "string element")?);
            ends.push(bytes.len());
        }
        Ok(Array::String(StringArray::from_utf8_lossy(bytes, ends)))
    } else {
        let mut out = Vec::with_capacity(capacity);
        for _ in 0..len {
            out.push(read_array(cur, depth.saturating_add(1), budget, inner)?);
        }
        Ok(Array::Array(out))
    }
}

/// Walks past one value without building it, checking it against `budget`.
pub(super) fn skip_value<'a>(
    cur: &mut Cursor<'a>,
    ty: ValueType,
    depth: usize,
    budget: &Budget<'a>,
) -> Parse<()> {
    match (ty, ty.fixed_size()) {
        (_, Some(size)) => cur.take(size, "metadata value").map(drop),
        (ValueType::String, None) => budget.string(cur, "string value").map(drop),
        _ => skip_array(cur, depth.saturating_add(1), budget),
    }
}

fn skip_array<'a>(cur: &mut Cursor<'a>, depth: usize, budget: &Budget<'a>) -> Parse<()> {
    let (element_type, len, _) = read_array_head(cur, depth, budget)?;
    skip_elements(cur, element_type, len, depth, budget, None)
}

/// An array's element type and length, `depth` arrays deep, checked against
/// the nesting limit, the file and the caps; with a safe capacity for its
/// elements.
pub(super) fn read_array_head(
    cur: &mut Cursor<'_>,
    depth: usize,
    budget: &Budget<'_>,
) -> Parse<(ValueType, u64, usize)> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(Stop::bad(
            cur.offset(),
            Problem::ArrayTooDeep {
                limit: MAX_ARRAY_DEPTH,
            },
        ));
    }
    let element_type = read_value_type(cur)?;
    let len = cur.u64("array length")?;
    let capacity = cur.count(len, element_type.min_size(), "array element")?;
    // `count` checked len * min_size against the file, so this cannot overflow.
    budget.check(cur, len.saturating_mul(element_type.min_size()))?;
    Ok((element_type, len, capacity))
}

/// Walks past an array's `len` elements, whose head has been read and checked.
///
/// When the array ends its entry and a walk of the same bytes found where
/// (`entry_end`), the cursor jumps there: the walk checked every element's
/// length against the file and the caps already.
fn skip_elements<'a>(
    cur: &mut Cursor<'a>,
    element_type: ValueType,
    len: u64,
    depth: usize,
    budget: &Budget<'a>,
    entry_end: Option<u64>,
) -> Parse<()> {
    if let Some(size) = element_type.fixed_size() {
        return cur
            .take(len.saturating_mul(size), "array elements")
            .map(drop);
    }
    if let Some(end) = entry_end.filter(|&end| end >= cur.offset()) {
        return cur
            .take(end.saturating_sub(cur.offset()), "array elements")
            .map(drop);
    }
    for _ in 0..len {
        match element_type {
            // Named as a decoding read names it.
            ValueType::String => budget.string(cur, "string element").map(drop)?,
            _ => skip_value(cur, element_type, depth, budget)?,
        }
    }
    Ok(())
}
