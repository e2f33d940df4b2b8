//! A worker's stderr in the daemon: its JSON log lines re-emitted as the
//! daemon's own events (with the model's name), and the last lines kept for
//! crash reports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};

/// Lines of a worker's stderr kept for crash reports.
pub const STDERR_TAIL_LINES: usize = 64;

/// Re-emits the worker's log lines (JSON from its tracing) as our own events
/// with the model's name, and keeps the last lines for crash reports.
pub(super) async fn forward_stderr(
    stderr: tokio::process::ChildStderr,
    model: String,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let (level, text) = parse_log_line(&line);
        match level {
            "ERROR" => tracing::error!(model = %model, worker_pid = pid, "{text}"),
            "WARN" => tracing::warn!(model = %model, worker_pid = pid, "{text}"),
            "INFO" => tracing::debug!(model = %model, worker_pid = pid, "{text}"),
            _ => tracing::trace!(model = %model, worker_pid = pid, "{text}"),
        }
        if let Ok(mut tail) = tail.lock() {
            if tail.len() >= STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
    }
}

/// (level, text) of a worker's stderr line: its JSON log format, or raw text
/// (llama.cpp's aborts, panics) as an error.
fn parse_log_line(line: &str) -> (&'static str, String) {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
        return ("ERROR", line.trim_end().to_owned());
    };
    let level = match json.get("level").and_then(|l| l.as_str()) {
        Some("ERROR") => "ERROR",
        Some("WARN") => "WARN",
        Some("INFO") => "INFO",
        Some("DEBUG") => "DEBUG",
        _ => "TRACE",
    };
    let fields = json.get("fields");
    let message = fields
        .and_then(|f| f.get("message"))
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .trim_end();
    let module = fields
        .and_then(|f| f.get("module"))
        .and_then(|m| m.as_str())
        .or_else(|| json.get("target").and_then(|t| t.as_str()))
        .unwrap_or("worker");
    (level, format!("{module}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_log_lines_keep_level_and_module() {
        let line = r#"{"timestamp":"t","level":"WARN","fields":{"message":"low memory","module":"llama.cpp::load"},"target":"llama-cpp-2"}"#;
        assert_eq!(
            parse_log_line(line),
            ("WARN", "llama.cpp::load: low memory".to_owned())
        );
        assert_eq!(
            parse_log_line("GGML_ASSERT(x) failed\n"),
            ("ERROR", "GGML_ASSERT(x) failed".to_owned())
        );
    }
}
