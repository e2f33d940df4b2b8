//! Any bytes through the GGUF parser: it may refuse them, never panic, hang or overallocate.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use llama_router::gguf::{GgufError, parse_slice};

fuzz_target!(|data: &[u8]| {
    match parse_slice(data, Path::new("fuzz.gguf")) {
        Ok(header) => {
            // Whatever parses must describe tensors inside the input.
            for t in &header.tensors {
                let end = t.offset.checked_add(t.size).expect("tensor end overflows");
                assert!(end <= data.len() as u64, "tensor {} past the end", t.name);
            }
        }
        Err(GgufError::Format { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
});
