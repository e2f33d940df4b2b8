//! A worker's output in the daemon, with bounded memory whatever the worker
//! writes: its stderr (JSON log lines re-emitted as the daemon's own events,
//! with the model's name; the last lines kept for crash reports) and its
//! stdout (the READY line, then drained). Pipes are read in fixed chunks,
//! never a line at a time, so one endless line costs `LINE_CAP` bytes, not
//! its length; a worker that floods is reported to its owner to be killed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{oneshot, watch};

use super::exit::{Flood, FloodLimit};

/// Lines of a worker's stderr kept for crash reports.
pub const STDERR_TAIL_LINES: usize = 64;
/// Bytes of a worker's stderr kept for crash reports (the tail's text, all lines together).
pub const STDERR_TAIL_BYTES: usize = 64 << 10;
/// Bytes of one output line that are kept; the rest is counted and dropped.
pub const LINE_CAP: usize = 4 << 10;
/// Output (stdout and stderr together) a worker may write per `FLOOD_PERIOD`
/// before it is killed: far above what llama.cpp logs even at debug level.
pub const FLOOD_BYTES: u64 = 64 << 20;
/// Lines a worker may write per `FLOOD_PERIOD`: each costs us a log event.
pub const FLOOD_LINES: u64 = 100_000;
/// The window `FLOOD_BYTES` is counted over.
pub const FLOOD_PERIOD: Duration = Duration::from_secs(10);
/// Bytes read from a pipe at a time.
const CHUNK: usize = 16 << 10;
/// Lines of stdout (where a worker writes only READY) logged; the rest are only counted.
const STDOUT_LINES_LOGGED: usize = 100;

/// The last lines of a worker's stderr, bounded in count and in bytes.
#[derive(Debug, Default)]
pub struct StderrTail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl StderrTail {
    /// Keeps `line`, dropping the oldest lines past either bound.
    pub fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > STDERR_TAIL_LINES
            || (self.bytes > STDERR_TAIL_BYTES && self.lines.len() > 1)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// Every kept line, oldest first.
    pub fn lines(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }
}

/// Counts a worker's output against `FLOOD_BYTES` and `FLOOD_LINES` per
/// `FLOOD_PERIOD`, and publishes the verdict once it floods.
#[derive(Debug)]
pub struct OutputMeter {
    /// Start of the current window, bytes and lines in it.
    window: Mutex<(Instant, u64, u64)>,
    limit: u64,
    line_limit: u64,
    period: Duration,
    verdict: watch::Sender<Option<Flood>>,
}

impl OutputMeter {
    /// A meter with the default bounds.
    pub fn new() -> Arc<Self> {
        Self::with_limit(FLOOD_BYTES, FLOOD_LINES, FLOOD_PERIOD)
    }

    /// A meter allowing `limit` bytes and `line_limit` lines per `period`.
    pub fn with_limit(limit: u64, line_limit: u64, period: Duration) -> Arc<Self> {
        Arc::new(OutputMeter {
            window: Mutex::new((Instant::now(), 0, 0)),
            limit,
            line_limit,
            period,
            verdict: watch::channel(None).0,
        })
    }

    /// Counts `bytes`; why the worker must die once it has flooded (the
    /// caller publishes it when its last line is kept).
    fn count(&self, bytes: &[u8]) -> Result<(), Flood> {
        if let Some(why) = self.verdict() {
            return Err(why);
        }
        let Ok(mut window) = self.window.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        if now.duration_since(window.0) > self.period {
            *window = (now, 0, 0);
        }
        let lines = bytes.iter().filter(|b| **b == b'\n').count();
        window.1 = window
            .1
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        window.2 = window
            .2
            .saturating_add(u64::try_from(lines).unwrap_or(u64::MAX));
        let limit = if window.1 > self.limit {
            FloodLimit::Bytes(self.limit)
        } else if window.2 > self.line_limit {
            FloodLimit::Lines(self.line_limit)
        } else {
            return Ok(());
        };
        Err(Flood {
            limit,
            period: self.period,
        })
    }

    /// Makes the verdict known (the first one stays).
    fn publish(&self, why: Flood) {
        self.verdict.send_if_modified(|v| {
            if v.is_some() {
                return false;
            }
            *v = Some(why);
            true
        });
    }

    /// Why the worker must die, if it flooded.
    pub fn verdict(&self) -> Option<Flood> {
        *self.verdict.borrow()
    }

    /// Resolves once the worker has flooded, with why.
    pub async fn flooded(&self) -> Flood {
        let mut verdict = self.verdict.subscribe();
        let why = verdict.wait_for(Option::is_some).await.map(|v| *v);
        match why {
            Ok(Some(why)) => why,
            // The sender lives in `self`: never closed while we borrow it.
            _ => std::future::pending().await,
        }
    }
}

/// Splits a byte stream into lines of at most `LINE_CAP` bytes; the cut part
/// of a longer line is only counted, and a marker says how much went.
#[derive(Debug, Default)]
struct LineSplitter {
    line: Vec<u8>,
    cut: u64,
}

impl LineSplitter {
    fn push(&mut self, mut chunk: &[u8], emit: &mut impl FnMut(String)) {
        while !chunk.is_empty() {
            let end = chunk.iter().position(|b| *b == b'\n');
            let (part, rest) = chunk.split_at(end.unwrap_or(chunk.len()));
            let room = LINE_CAP.saturating_sub(self.line.len());
            let (kept, cut) = part.split_at(room.min(part.len()));
            self.line.extend_from_slice(kept);
            self.cut += u64::try_from(cut.len()).unwrap_or(u64::MAX);
            match rest.split_first() {
                Some((_newline, after)) => {
                    self.finish(emit);
                    chunk = after;
                }
                None => chunk = rest,
            }
        }
    }

    /// Emits the line in progress, if any (at a newline, at EOF, or when the reading stops).
    fn finish(&mut self, emit: &mut impl FnMut(String)) {
        if self.line.is_empty() && self.cut == 0 {
            return;
        }
        let mut text = String::from_utf8_lossy(&self.line).trim_end().to_owned();
        if self.cut > 0 {
            text.push_str(&format!("… [{} more bytes of this line cut]", self.cut));
        }
        self.line.clear();
        self.cut = 0;
        emit(text);
    }
}

/// Reads `pipe` in chunks until EOF, an error or a flood (then it stops
/// reading and drops the pipe), handing each bounded line to `emit`.
async fn relay(
    mut pipe: impl AsyncRead + Unpin,
    meter: &OutputMeter,
    mut emit: impl FnMut(String),
) {
    let mut buf = vec![0u8; CHUNK];
    let mut lines = LineSplitter::default();
    let flood = loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => n,
        };
        let chunk = buf.get(..n).unwrap_or_default();
        let counted = meter.count(chunk);
        lines.push(chunk, &mut emit);
        if let Err(why) = counted {
            break Some(why);
        }
    };
    lines.finish(&mut emit);
    // Only now: the crash report then has the flood's last line.
    if let Some(why) = flood {
        meter.publish(why);
    }
}

/// Re-emits the worker's log lines (JSON from its tracing) as our own events
/// with the model's name, and keeps the last lines for crash reports and in
/// the console's log book.
pub(super) async fn forward_stderr(
    stderr: tokio::process::ChildStderr,
    model: String,
    pid: u32,
    tail: Arc<Mutex<StderrTail>>,
    meter: Arc<OutputMeter>,
    book: super::logbook::LogBook,
) {
    relay(stderr, &meter, |line| {
        let (level, text) = parse_log_line(&line);
        match level {
            "ERROR" => tracing::error!(model = %model, worker_pid = pid, "{text}"),
            "WARN" => tracing::warn!(model = %model, worker_pid = pid, "{text}"),
            "INFO" => tracing::debug!(model = %model, worker_pid = pid, "{text}"),
            _ => tracing::trace!(model = %model, worker_pid = pid, "{text}"),
        }
        book.push(&model, level, text.clone());
        if let Ok(mut tail) = tail.lock() {
            tail.push(text);
        }
    })
    .await;
}

/// Watches stdout for `ready_line` (then `ready` fires) and drains the rest,
/// so a worker can neither block on a full pipe nor make us buffer it.
pub(super) async fn watch_stdout(
    stdout: tokio::process::ChildStdout,
    model: String,
    ready_line: &'static str,
    ready: oneshot::Sender<()>,
    meter: Arc<OutputMeter>,
) {
    let mut ready = Some(ready);
    let mut logged = 0usize;
    relay(stdout, &meter, |line| {
        if line.trim() == ready_line {
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
                return;
            }
        }
        logged += 1;
        if logged <= STDOUT_LINES_LOGGED {
            tracing::debug!(model = %model, "worker stdout: {line}");
        } else if logged == STDOUT_LINES_LOGGED + 1 {
            tracing::debug!(model = %model, "worker stdout: more lines, not logged");
        }
    })
    .await;
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

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        for c in chunks {
            s.push(c, &mut |l| out.push(l));
        }
        s.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn lines_are_split_across_chunks_and_capped() {
        assert_eq!(split(&[b"ab", b"c\nde\n", b"f"]), ["abc", "de", "f"]);
        let long = vec![b'x'; LINE_CAP + 1000];
        let out = split(&[&long, &long, b"\nnext\n"]);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].starts_with(&"x".repeat(LINE_CAP)));
        assert!(
            out[0].ends_with(&format!(
                "… [{} more bytes of this line cut]",
                LINE_CAP + 2000
            )),
            "{}",
            &out[0][LINE_CAP..]
        );
        assert_eq!(out[1], "next");
    }

    #[test]
    fn the_tail_is_bounded_in_lines_and_bytes() {
        let mut tail = StderrTail::default();
        for i in 0..1000 {
            tail.push(format!("line {i}"));
        }
        assert_eq!(tail.lines().count(), STDERR_TAIL_LINES);
        assert_eq!(tail.lines().next_back(), Some("line 999"));
        for _ in 0..100 {
            tail.push("y".repeat(LINE_CAP));
        }
        assert!(tail.bytes <= STDERR_TAIL_BYTES);
        assert_eq!(tail.lines().count(), STDERR_TAIL_BYTES / LINE_CAP);
    }

    #[tokio::test]
    async fn a_flood_stops_the_relay_with_a_verdict() {
        let meter = OutputMeter::with_limit(1 << 20, 1000, Duration::from_secs(60));
        // An endless line: the relay must stop at the limit, holding LINE_CAP bytes.
        let endless = tokio::io::repeat(b'z');
        let mut lines = Vec::new();
        relay(endless, &meter, |l| lines.push(l)).await;
        assert_eq!(lines.len(), 1);
        assert!(lines[0].len() < LINE_CAP + 100);
        let verdict = meter.verdict().unwrap();
        assert_eq!(
            verdict.to_string(),
            "worker killed: it wrote more than 1 MiB of output in 60 s"
        );
        assert_eq!(meter.flooded().await, verdict);

        // Short lines: the line bound trips long before the byte bound.
        let meter = OutputMeter::with_limit(1 << 30, 1000, Duration::from_secs(60));
        let mut count = 0;
        let short_lines = std::io::Cursor::new(b"y\n".repeat(1 << 20));
        relay(short_lines, &meter, |_| count += 1).await;
        assert!(count > 1000 && count <= 1000 + CHUNK, "{count}");
        assert_eq!(
            meter.verdict().unwrap().to_string(),
            "worker killed: it wrote more than 1000 lines of output in 60 s"
        );
    }
}
