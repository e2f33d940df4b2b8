//! Worker processes: `llama-router worker` runs one model's llama.cpp engine
//! out of the daemon's address space, so a crash costs one model, not the
//! router. `server` and `service` run inside the worker; `process` is the
//! daemon's side: spawning, watching and stopping it (`liveness` pings it).

pub mod args;
mod command;
pub mod exit;
mod liveness;
mod logs;
pub mod process;
pub mod server;
pub mod service;
pub mod sockets;

pub use args::WorkerArgs;
pub use exit::{WorkerEnded, WorkerExit};
pub use process::{WorkerLink, WorkerProcess, WorkerSettings};
