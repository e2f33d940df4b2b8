//! A small GGUF writer: test files, benchmark fixtures and fuzz seeds.
//!
//! It writes valid files by default and lets a caller set raw fields
//! (version, type ids, offsets, names as bytes) to build hostile ones.

// Test tooling: callers choose the sizes, overflow is theirs to avoid.
#![allow(clippy::arithmetic_side_effects)]

use std::io;
use std::path::Path;

use super::cursor::align_up;
use super::ggml_type::GgmlType;
use super::header::{DEFAULT_ALIGNMENT, KEY_ALIGNMENT};
use super::value::{Array, Value};

/// One tensor to write.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// Name bytes (need not be valid UTF-8).
    pub name: Vec<u8>,
    /// Dimensions, ne0 first.
    pub dims: Vec<u64>,
    /// ggml type id (need not be a known type).
    pub type_id: u32,
    /// Offset relative to the data section; None places it after the previous one.
    pub offset: Option<u64>,
    /// Bytes of data to write for it.
    pub data_len: u64,
}

/// Builds a GGUF file in memory.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(Vec<u8>, Value)>,
    tensors: Vec<TensorSpec>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

impl GgufWriter {
    /// An empty version-3 file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the version field.
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Adds a metadata entry; `general.alignment` (UINT32) also sets the padding used.
    pub fn kv(mut self, key: &str, value: Value) -> Self {
        if key == KEY_ALIGNMENT {
            if let Value::U32(a) = value {
                if a.is_power_of_two() {
                    self.alignment = a.into();
                }
            }
        }
        self.metadata.push((key.as_bytes().to_vec(), value));
        self
    }

    /// Adds a metadata entry with a raw key.
    pub fn raw_kv(mut self, key: &[u8], value: Value) -> Self {
        self.metadata.push((key.to_vec(), value));
        self
    }

    /// Adds a well-formed tensor of `ty` with the given shape, placed after the previous one.
    pub fn tensor(self, name: &str, ty: GgmlType, dims: &[u64]) -> Self {
        let elements: u64 = dims.iter().product();
        let data_len = elements / ty.block_size() * ty.type_size();
        self.raw_tensor(TensorSpec {
            name: name.as_bytes().to_vec(),
            dims: dims.to_vec(),
            type_id: ty as u32,
            offset: None,
            data_len,
        })
    }

    /// Adds a tensor exactly as specified.
    pub fn raw_tensor(mut self, spec: TensorSpec) -> Self {
        self.tensors.push(spec);
        self
    }

    /// The file's bytes. Tensor data is a repeating byte pattern.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_bytes(&mut out, key);
            out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut next = 0u64;
        let mut placed = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let offset = t.offset.unwrap_or(next);
            next = align_up(offset.saturating_add(t.data_len), self.alignment).unwrap_or(u64::MAX);
            placed.push((offset, t.data_len));
            put_bytes(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let data_start = align_up(out.len() as u64, self.alignment).unwrap_or(u64::MAX) as usize;
        out.resize(data_start, 0);
        for (offset, len) in placed.into_iter().filter(|&(_, len)| len > 0) {
            let start = data_start.saturating_add(offset as usize);
            let end = start.saturating_add(len as usize);
            if out.len() < end {
                out.resize(end, 0);
            }
            if let Some(data) = out.get_mut(start..end) {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = (i % 251) as u8;
                }
            }
        }
        out
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(v) => put_bytes(out, v.as_bytes()),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, array: &Array) {
    out.extend_from_slice(&(array.element_type() as u32).to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, items: &[T], le: fn(T) -> [u8; N]) {
        for &x in items {
            out.extend_from_slice(&le(x));
        }
    }
    match array {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each(out, v, i8::to_le_bytes),
        Array::U16(v) => each(out, v, u16::to_le_bytes),
        Array::I16(v) => each(out, v, i16::to_le_bytes),
        Array::U32(v) => each(out, v, u32::to_le_bytes),
        Array::I32(v) => each(out, v, i32::to_le_bytes),
        Array::F32(v) => each(out, v, f32::to_le_bytes),
        Array::U64(v) => each(out, v, u64::to_le_bytes),
        Array::I64(v) => each(out, v, i64::to_le_bytes),
        Array::F64(v) => each(out, v, f64::to_le_bytes),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_bytes(out, s.as_bytes())),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        // Its elements were never read: each is written as its smallest form,
        // all zero bytes (0, "", an empty array of u8).
        Array::Unread(a) => {
            let bytes = a.len.saturating_mul(a.element_type.min_size());
            out.resize(out.len().saturating_add(bytes as usize), 0);
        }
    }
}
