//! The `llama-router` binary: parses the command line and runs a command.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use llama_router::cli::{Cli, Command, inspect};

/// Exit status for input the program refuses (a bad file, a bad request).
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(args) => match inspect::render(&args) {
            Ok(text) => write_stdout(text.as_bytes()),
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
    }
}

/// Writes all of `bytes`; a closed pipe (`| head`) is a normal end, not an error.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            ExitCode::FAILURE
        }
    }
}
