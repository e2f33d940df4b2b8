//! What a round's requests came to, counted per client and merged: served
//! answers with their times to first token, refusals by status, failures by
//! kind with one example each, and the lines the harness prints for them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client::{Mode, Outcome};

/// Distinct refusal messages kept per status (the rest are counted as "other").
const MESSAGES: usize = 4;

/// What a client does after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The next request, right away.
    Go,
    /// Wait first: as long as `Retry-After` said, else the client's back-off.
    BackOff(Option<Duration>),
}

/// Counts `n` of `message`, keeping at most `MESSAGES` distinct ones.
fn count_message(messages: &mut BTreeMap<String, u64>, message: String, n: u64) {
    let key = if messages.len() < MESSAGES || messages.contains_key(&message) {
        message
    } else {
        "(other messages)".to_owned()
    };
    *messages.entry(key).or_default() += n;
}

#[derive(Debug, Default)]
pub struct Tally {
    pub sent: u64,
    pub streamed: u64,
    pub whole: u64,
    pub disconnected: u64,
    pub stream_ttft: Vec<Duration>,
    pub whole_ttft: Vec<Duration>,
    /// status -> message -> count
    pub refused: BTreeMap<u16, BTreeMap<String, u64>>,
    /// kind -> (count, one example)
    pub failed: BTreeMap<String, (u64, String)>,
    pub reconnects: u64,
}

impl Tally {
    /// Counts one outcome; says what the client should do before its next request.
    pub fn add(&mut self, outcome: Outcome) -> Next {
        self.sent += 1;
        match outcome {
            Outcome::Served { mode, ttft } => {
                match mode {
                    Mode::Stream => self.streamed += 1,
                    Mode::Whole => self.whole += 1,
                    Mode::Disconnect => self.disconnected += 1,
                }
                if mode == Mode::Whole {
                    self.whole_ttft.push(ttft);
                } else {
                    self.stream_ttft.push(ttft);
                }
                Next::Go
            }
            Outcome::Refused {
                status,
                retry_after,
                message,
            } => {
                count_message(self.refused.entry(status).or_default(), message, 1);
                Next::BackOff(retry_after)
            }
            Outcome::Failed { kind, detail } => {
                self.failed.entry(kind).or_insert((0, detail)).0 += 1;
                Next::BackOff(None)
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.streamed += other.streamed;
        self.whole += other.whole;
        self.disconnected += other.disconnected;
        self.stream_ttft.extend(other.stream_ttft);
        self.whole_ttft.extend(other.whole_ttft);
        for (status, messages) in other.refused {
            let ours = self.refused.entry(status).or_default();
            for (message, n) in messages {
                count_message(ours, message, n);
            }
        }
        for (kind, (n, example)) in other.failed {
            self.failed.entry(kind).or_insert((0, example)).0 += n;
        }
        self.reconnects += other.reconnects;
    }

    pub fn refusals(&self) -> u64 {
        self.refused.values().flat_map(|m| m.values()).sum()
    }

    pub fn failures(&self) -> u64 {
        self.failed.values().map(|(n, _)| n).sum()
    }

    /// The lines describing the requests of a round.
    pub fn print(&self) {
        let served = self.streamed + self.whole + self.disconnected;
        println!(
            "  requests     {} sent: {served} served (streamed {}, whole {}, hung up after the first token {}), {} refused, {} failed",
            self.sent,
            self.streamed,
            self.whole,
            self.disconnected,
            self.refusals(),
            self.failures()
        );
        println!(
            "  ttft stream  {}",
            percentiles(&self.stream_ttft, "to the first data event")
        );
        println!(
            "  ttft whole   {}",
            percentiles(&self.whole_ttft, "to the full response")
        );
        if self.reconnects > 0 {
            println!(
                "  reconnects   {} (kept-alive connections the daemon had closed; retried, not errors)",
                self.reconnects
            );
        }
        for (status, messages) in &self.refused {
            let n: u64 = messages.values().sum();
            println!("  refused      http {status}: {n}");
            for (message, n) in messages {
                println!("                 {n:>8} x {}", shorten(message));
            }
        }
        for (kind, (n, example)) in &self.failed {
            println!("  FAILED       {kind}: {n}   e.g. {}", shorten(example));
        }
    }
}

fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(160).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

fn at(sorted: &[Duration], percent: usize) -> Duration {
    let i = (sorted.len().saturating_sub(1) * percent).div_ceil(100);
    sorted.get(i).copied().unwrap_or_default()
}

fn percentiles(times: &[Duration], what: &str) -> String {
    if times.is_empty() {
        return "no answers".to_owned();
    }
    let mut sorted = times.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms   (n={}, {what})",
        ms(at(&sorted, 50)),
        ms(at(&sorted, 99)),
        ms(sorted.last().copied().unwrap_or_default()),
        sorted.len()
    )
}
