//! GGUF metadata values: the 13 value types, scalars and (nested) arrays.

use std::fmt;

/// The type tag that precedes every metadata value in a GGUF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// Every value type, in id order.
    pub const ALL: [ValueType; 13] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::Bool,
        ValueType::String,
        ValueType::Array,
        ValueType::U64,
        ValueType::I64,
        ValueType::F64,
    ];

    /// The type with this on-disk id.
    pub fn from_id(id: u32) -> Option<Self> {
        usize::try_from(id)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// Bytes one value of this type takes when its size is fixed.
    pub fn fixed_size(self) -> Option<u64> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }

    /// The fewest bytes a value of this type can occupy: bounds allocation by file size.
    pub fn min_size(self) -> u64 {
        match self {
            // u64 length prefix
            ValueType::String => 8,
            // u32 element type + u64 count
            ValueType::Array => 12,
            _ => self.fixed_size().unwrap_or(1),
        }
    }

    /// The GGUF spec's name for the type (`UINT32`, `STRING`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "UINT8",
            ValueType::I8 => "INT8",
            ValueType::U16 => "UINT16",
            ValueType::I16 => "INT16",
            ValueType::U32 => "UINT32",
            ValueType::I32 => "INT32",
            ValueType::F32 => "FLOAT32",
            ValueType::Bool => "BOOL",
            ValueType::String => "STRING",
            ValueType::Array => "ARRAY",
            ValueType::U64 => "UINT64",
            ValueType::I64 => "INT64",
            ValueType::F64 => "FLOAT64",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    /// Decoded as UTF-8; invalid sequences become U+FFFD (llama.cpp does not validate values either).
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A typed metadata array; every element has the array's element type.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(StringArray),
    /// Arrays of arrays: each inner array carries its own element type.
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    /// An array a summary read walked past without decoding (see `Decode::Summary`).
    Unread(UnreadArray),
}

/// What a summary read keeps of a large array: its element type and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreadArray {
    /// The type of the elements.
    pub element_type: ValueType,
    /// Number of elements (bounded by the file's size).
    pub len: u64,
}

impl Value {
    /// The value's type tag.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as a non-negative integer, whatever integer type stores it.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl Array {
    /// The type of the array's elements.
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
            Array::Unread(a) => a.element_type,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Unread(a) => usize::try_from(a.len).unwrap_or(usize::MAX),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The largest element of an integer array, as u64 (for per-layer counts).
    pub fn max_u64(&self) -> Option<u64> {
        fn max_of<T: Copy>(v: &[T], f: impl Fn(T) -> Option<u64>) -> Option<u64> {
            v.iter().filter_map(|&x| f(x)).max()
        }
        match self {
            Array::U8(v) => max_of(v, |x| Some(x.into())),
            Array::U16(v) => max_of(v, |x| Some(x.into())),
            Array::U32(v) => max_of(v, |x| Some(x.into())),
            Array::U64(v) => max_of(v, Some),
            Array::I8(v) => max_of(v, |x| u64::try_from(x).ok()),
            Array::I16(v) => max_of(v, |x| u64::try_from(x).ok()),
            Array::I32(v) => max_of(v, |x| u64::try_from(x).ok()),
            Array::I64(v) => max_of(v, |x| u64::try_from(x).ok()),
            _ => None,
        }
    }
}

/// The strings of an array stored back to back: two allocations however many
/// strings there are (a 262k-token vocabulary is one of these).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StringArray {
    text: String,
    /// End offset in `text` of each string.
    ends: Vec<usize>,
}

impl StringArray {
    /// An empty array with room for `strings` strings of `bytes` bytes in all.
    pub fn with_capacity(strings: usize, bytes: usize) -> Self {
        StringArray {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(strings),
        }
    }

    /// Builds the array from raw bytes laid back to back and each string's end.
    ///
    /// Validates the UTF-8 of all the bytes at once (far cheaper than string by
    /// string); only if that fails, or a character straddles two strings, does
    /// it fall back to replacing invalid sequences string by string.
    pub fn from_utf8_lossy(bytes: Vec<u8>, ends: Vec<usize>) -> Self {
        let fits = ends.windows(2).all(|w| w.first() <= w.get(1))
            && ends.last().is_none_or(|&end| end <= bytes.len());
        match String::from_utf8(bytes) {
            Ok(text) if fits && ends.iter().all(|&end| text.is_char_boundary(end)) => {
                StringArray { text, ends }
            }
            Ok(text) => Self::lossy_each(text.as_bytes(), &ends),
            Err(e) => Self::lossy_each(e.as_bytes(), &ends),
        }
    }

    fn lossy_each(bytes: &[u8], ends: &[usize]) -> Self {
        let mut out = StringArray::with_capacity(ends.len(), bytes.len());
        let mut start = 0;
        for &end in ends {
            let piece = bytes.get(start..end).unwrap_or_default();
            out.push(&String::from_utf8_lossy(piece));
            start = end.max(start);
        }
        out
    }

    /// Appends a string.
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no strings.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The string at `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = match index.checked_sub(1) {
            Some(prev) => *self.ends.get(prev)?,
            None => 0,
        };
        self.text.get(start..end)
    }

    /// The strings in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .filter_map(|(start, &end)| self.text.get(start..end))
    }
}

impl<S: AsRef<str>> FromIterator<S> for StringArray {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut out = StringArray::default();
        for s in iter {
            out.push(s.as_ref());
        }
        out
    }
}

impl<S: AsRef<str>> From<Vec<S>> for StringArray {
    fn from(strings: Vec<S>) -> Self {
        strings.into_iter().collect()
    }
}

impl fmt::Debug for StringArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_array_keeps_order_and_empties() {
        let a = StringArray::from(vec!["ab", "", "ç"]);
        assert_eq!(a.len(), 3);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec!["ab", "", "ç"]);
        assert_eq!(
            (a.get(0), a.get(1), a.get(2), a.get(3)),
            (Some("ab"), Some(""), Some("ç"), None)
        );
        assert!(StringArray::default().is_empty());
    }

    #[test]
    fn raw_strings_are_validated_once_and_repaired_when_needed() {
        let a = StringArray::from_utf8_lossy(b"abc\xc3\xa7".to_vec(), vec![1, 3, 5]);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec!["a", "bc", "ç"]);
        // Valid as a whole, but "ç" is cut in two between strings.
        let a = StringArray::from_utf8_lossy(b"\xc3\xa7".to_vec(), vec![1, 2]);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec!["\u{fffd}", "\u{fffd}"]);
        let a = StringArray::from_utf8_lossy(b"a\xffb".to_vec(), vec![1, 3]);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec!["a", "\u{fffd}b"]);
    }
}
