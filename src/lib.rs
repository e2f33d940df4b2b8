//! llama-router: serves many GGUF models from one directory, each in its own
//! worker process, driven over gRPC and an OpenAI-compatible HTTP API.
//!
//! # Processes
//!
//! One daemon (`llama-router serve`, [`daemon`]) runs the actors: the
//! [`catalog`] of the models directory, the [`supervisor`] of every model's
//! lifecycle (one model actor per load: [`loader`], [`gpu`] admission, and
//! the [`worker`] process it starts), the [`inference`] layer, and the
//! gRPC and HTTP interfaces ([`api`]). Each running model has one worker
//! process (`llama-router worker`, [`child`]) holding its llama.cpp
//! [`engine`]; it speaks gRPC ([`proto`]) to the daemon over a private Unix
//! socket, so a crash costs that model only.
//!
//! # Layers
//!
//! A module imports only modules of a strictly lower rank (ARCHITECTURE.md
//! ranks every one; `integration/layering.rs` enforces it):
//!
//! ```text
//! 10 daemon                                          start-up, listeners, reload, shutdown
//!  9 cli                                             the command line
//!  8 api                                             gRPC services, OpenAI HTTP, listeners
//!  7 inference                                       bounds, lease, worker call, relay
//!  6 metrics systemd                                 read the supervisor's events and views
//!  5 supervisor child                                lifecycle rules | the worker process
//!  4 config worker                                   configuration | the daemon's side of a worker
//!  3 settings                                        per-model tables resolved over the defaults
//!  2 catalog loader gpu engine crashes               the leaves
//!  1 gguf                                            the file format
//!  0 util api_key proto runtime_dir telemetry params  helpers, wire types, trust, logs, engine settings
//! ```
//!
//! The binary is `src/main.rs`; this library holds everything it is made of,
//! so that tests and benchmarks can use the same code.

pub mod api;
pub mod api_key;
pub mod catalog;
pub mod child;
pub mod cli;
pub mod config;
pub mod crashes;
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
