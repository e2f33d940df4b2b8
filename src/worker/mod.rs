//! The daemon's side of worker processes (the process itself is `child/`):
//! `process` spawns, watches and stops one, `command` builds its command,
//! `logs` relays and bounds its output, `logbook` keeps every model's recent
//! lines for the console, `liveness` pings it, `exit` says how
//! it ended, `sockets` owns the directory of their sockets, `sleep` parks
//! and wakes one, `spare` keeps a worker started ahead of need, and `args`
//! is the command line both sides share.

pub mod args;
mod command;
mod crash;
pub mod exit;
pub mod in_flight;
mod liveness;
pub mod logbook;
mod logs;
pub mod process;
mod sleep;
pub mod sockets;
pub mod spare;

pub use args::WorkerArgs;
pub use exit::{WorkerEnded, WorkerExit};
pub use logbook::LogBook;
pub use process::{WorkerLink, WorkerProcess};
pub use sleep::SleepError;
