//! The recent log lines of every model's workers, kept in the daemon for the
//! console (`GET /models/{id}/logs`): one ring per model, bounded in lines
//! and in bytes, and at most `MODELS` rings (the one written least recently
//! goes first). Fed by the stderr relay (`logs`) and by the worker's start
//! and end; cheap to clone, every clone shares the same book.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Lines kept per model.
pub const LINES: usize = 200;
/// Bytes of text kept per model (all its lines together).
pub const BYTES: usize = 64 << 10;
/// Bytes of one line kept; the rest is cut.
pub const LINE_BYTES: usize = 2 << 10;
/// Models with a ring; past this the one written least recently is dropped.
pub const MODELS: usize = 256;

/// One kept line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When it was kept, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: &'static str,
    /// What it said (at most `LINE_BYTES`).
    pub text: String,
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    /// Bumped on every write: which ring was written least recently.
    touched: u64,
}

#[derive(Debug, Default)]
struct Book {
    rings: HashMap<String, Ring>,
    clock: u64,
}

/// Every model's recent worker log lines.
#[derive(Debug, Clone, Default)]
pub struct LogBook {
    inner: Arc<Mutex<Book>>,
}

impl PartialEq for LogBook {
    /// Two handles are equal when they share one book.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl LogBook {
    /// Keeps `text` as `model`'s newest line, dropping its oldest ones past
    /// the bounds (and the least recently written model past `MODELS`).
    pub fn push(&self, model: &str, level: &'static str, text: String) {
        let line = LogLine {
            at_unix_ms: crate::util::unix_ms(SystemTime::now()),
            level,
            text: cut(text, LINE_BYTES),
        };
        let Ok(mut book) = self.inner.lock() else {
            return;
        };
        book.clock += 1;
        let clock = book.clock;
        if !book.rings.contains_key(model) && book.rings.len() >= MODELS {
            let oldest = book
                .rings
                .iter()
                .min_by_key(|(_, r)| r.touched)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                book.rings.remove(&oldest);
            }
        }
        let ring = book.rings.entry(model.to_owned()).or_default();
        ring.touched = clock;
        ring.bytes += line.text.len();
        ring.lines.push_back(line);
        while ring.lines.len() > LINES || (ring.bytes > BYTES && ring.lines.len() > 1) {
            if let Some(old) = ring.lines.pop_front() {
                ring.bytes -= old.text.len();
            }
        }
    }

    /// `model`'s last `n` lines at most, oldest first (none for a model never logged).
    pub fn recent(&self, model: &str, n: usize) -> Vec<LogLine> {
        let Ok(book) = self.inner.lock() else {
            return Vec::new();
        };
        book.rings.get(model).map_or_else(Vec::new, |r| {
            let skip = r.lines.len().saturating_sub(n);
            r.lines.iter().skip(skip).cloned().collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_is_bounded_in_lines_and_bytes() {
        let book = LogBook::default();
        for i in 0..1000 {
            book.push("m", "INFO", format!("line {i}"));
        }
        let lines = book.recent("m", usize::MAX);
        assert_eq!(lines.len(), LINES);
        assert_eq!(lines.last().unwrap().text, "line 999");
        assert_eq!(book.recent("m", 3).len(), 3);
        assert_eq!(book.recent("m", 3)[2].text, "line 999");
        for _ in 0..100 {
            book.push("m", "WARN", "y".repeat(10 * LINE_BYTES));
        }
        let lines = book.recent("m", usize::MAX);
        let bytes: usize = lines.iter().map(|l| l.text.len()).sum();
        assert!(bytes <= BYTES, "{bytes}");
        assert!(
            lines
                .iter()
                .all(|l| l.text.len() <= LINE_BYTES + '…'.len_utf8())
        );
        assert!(book.recent("other", 10).is_empty());
    }

    #[test]
    fn lines_are_cut_on_a_character_boundary() {
        let text = "é".repeat(LINE_BYTES);
        let kept = cut(text, LINE_BYTES - 1);
        assert!(kept.len() <= LINE_BYTES - 1 + '…'.len_utf8());
        assert!(kept.ends_with('…'));
    }

    #[test]
    fn the_least_recently_written_model_goes_first() {
        let book = LogBook::default();
        for i in 0..MODELS {
            book.push(&format!("m{i}"), "INFO", "x".into());
        }
        book.push("m0", "INFO", "again".into());
        book.push("new", "INFO", "x".into());
        assert!(book.recent("m1", 10).is_empty(), "m1 was the oldest");
        assert_eq!(book.recent("m0", 10).len(), 2);
        assert_eq!(book.recent("new", 10).len(), 1);
        assert_eq!(book.clone(), book);
        assert_ne!(book, LogBook::default());
    }
}
