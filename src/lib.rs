//! llama-router: serves many GGUF models from one directory, each in its own
//! worker process, driven over gRPC and an OpenAI-compatible HTTP API.
//!
//! The binary is `src/main.rs`; this library holds everything it is made of,
//! so that tests and benchmarks can use the same code.

pub mod api;
pub mod api_key;
pub mod catalog;
pub mod child;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod gguf;
pub mod gpu;
pub mod inference;
pub mod loader;
pub mod metrics;
pub mod params;
pub mod proto;
pub mod runtime_dir;
pub mod settings;
pub mod supervisor;
pub mod systemd;
pub mod telemetry;
pub mod util;
pub mod worker;
