//! llama.cpp's metadata dump, bounded: the C++ beside this file
//! (`metadata_dump.cpp`, compiled and linked by `build.rs`).
//!
//! When llama.cpp opens a model it logs every metadata key with the first
//! 40 characters of its value. To get those 40 characters it renders the
//! whole value first (`gguf_kv_to_str`), and for an array that is every
//! element: Gemma 3's 262,144 token strings, escaped, and as many scores,
//! each through `std::to_string`. That is about 170 ms of a 690 ms
//! vocabulary load on 2 cores, on every load and every swap, for 40
//! characters of log. The link wraps the function (`-Wl,--wrap`): an array
//! is rendered only as far as its callers show it, so the log lines are the
//! same, byte for byte. Scalars and strings go to llama.cpp's own function;
//! none of its callers keeps an array's text.
//!
//! A llama.cpp that renamed or dropped the function fails the link (the
//! shim calls the original by name), so an upgrade cannot lose the wrap
//! silently; the test below checks the wrap is in effect.

#[cfg(test)]
mod tests {
    use std::ffi::{CString, c_char, c_int};

    use crate::gguf::writer::GgufWriter;
    use crate::gguf::{Array, StringArray, Value};

    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn llama_router_metadata_dump_check(path: *const c_char, longest: *mut usize) -> c_int;
    }

    /// Runs the shim's check on a file: how many values the link shows
    /// differently from llama.cpp's own function, and its longest text.
    fn check(writer: &GgufWriter) -> (c_int, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        writer.write(&path).unwrap();
        let path = CString::new(path.into_os_string().into_encoded_bytes()).unwrap();
        let mut longest = 0usize;
        // SAFETY: a NUL-terminated path and a valid out pointer; the
        // function only reads the file and writes `longest`.
        #[allow(unsafe_code)]
        let differ = unsafe { llama_router_metadata_dump_check(path.as_ptr(), &mut longest) };
        (differ, longest)
    }

    #[test]
    fn the_dump_shows_what_llama_cpp_shows_and_renders_no_more() {
        let big = 100_000usize;
        let tokens: Vec<String> = (0..big).map(|i| format!("tok\"\\{i}")).collect();
        let writer = GgufWriter::new()
            .kv("general.architecture", Value::String("llama".into()))
            .kv("general.name", Value::String("line\none \"quoted\"".into()))
            .kv("some.u32", Value::U32(7))
            .kv("some.f32", Value::F32(-0.25))
            .kv("some.bool", Value::Bool(true))
            .kv(
                "tokens",
                Value::Array(Array::String(StringArray::from(
                    tokens.iter().map(String::as_str).collect::<Vec<_>>(),
                ))),
            )
            .kv(
                "scores",
                Value::Array(Array::F32((0..big).map(|i| i as f32 / -7.0).collect())),
            )
            .kv("types", Value::Array(Array::I32(vec![3; big])))
            .kv("short.u8", Value::Array(Array::U8(vec![1, 2, 3])))
            .kv("short.i64", Value::Array(Array::I64(vec![-1, i64::MAX])))
            .kv("short.f64", Value::Array(Array::F64(vec![0.5, 1e10])))
            .kv("short.bool", Value::Array(Array::Bool(vec![true, false])))
            .kv(
                "short.strings",
                Value::Array(Array::String(StringArray::from(vec!["a", "", "\\\""]))),
            )
            .kv("empty", Value::Array(Array::U16(Vec::new())))
            // Exactly around the 40 characters shown.
            .kv(
                "edge.39",
                Value::Array(Array::String(StringArray::from(vec![
                    "x".repeat(35).as_str(),
                ]))),
            )
            .kv(
                "edge.41",
                Value::Array(Array::String(StringArray::from(vec![
                    "x".repeat(37).as_str(),
                ]))),
            )
            .kv("edge.many", Value::Array(Array::U8(vec![9; 30])));
        let (differ, longest) = check(&writer);
        assert_eq!(differ, 0, "the log would show other text than llama.cpp's");
        // The real function renders the 100,000 tokens in full (over 1 MB):
        // a link without the wrap shows here.
        assert!(
            longest < 200,
            "an array was rendered in full ({longest} characters)"
        );
    }
}
