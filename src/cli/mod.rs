//! The command line: `llama-router <command>`.

pub mod inspect;

use clap::{Parser, Subcommand};

/// Serve many GGUF models from one directory.
#[derive(Debug, Parser)]
#[command(name = "llama-router", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a GGUF model's summary and tensors (any shard of a split set opens the set).
    Inspect(inspect::InspectArgs),
}
