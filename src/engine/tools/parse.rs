//! Tool calls out of a model's answer, for the common template families:
//! Hermes/Qwen `<tool_call>{...}</tool_call>`, Mistral `[TOOL_CALLS][...]`,
//! Llama 3.x `<|python_tag|>` or a bare `{"name", "parameters"}` object,
//! and the generic style's `{"tool_call": ...}` / `{"response": ...}`.
//! A call must name an offered tool; anything else stays text.
//!
//! [`Holdback`] does this on a stream: text goes out as it comes until a
//! call may be starting, and what follows is held for the end.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::super::chat::ToolCall;
use super::{Choice, Style};

/// Where the families' calls start.
const MARKERS: [&str; 3] = ["<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"];
/// Where a Hermes call ends.
const HERMES_END: &str = "</tool_call>";

/// What an answer held: its text, and the calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// The text outside the calls (the generic style's `response`).
    pub content: String,
    /// The calls, in order.
    pub calls: Vec<ToolCall>,
}

/// A fresh call id, `call_` and 24 hex digits.
pub fn call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "call_{:08x}{:016x}",
        std::process::id(),
        nanos.rotate_left(17) ^ n
    )
}

/// One call from a JSON value, when it is a call of an offered tool:
/// `{"name", "arguments" | "parameters"}`, or OpenAI's `{"function": {...}}`.
fn call_of(value: &Value, names: &[&str]) -> Option<ToolCall> {
    let value = value.get("function").unwrap_or(value);
    let name = value.get("name")?.as_str()?;
    if !names.contains(&name) {
        return None;
    }
    // Arguments are a JSON object; some models write it as a JSON string,
    // as OpenAI sends it. Anything else is no call.
    let arguments = match value.get("arguments").or_else(|| value.get("parameters")) {
        None => "{}".to_owned(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(object @ Value::Object(_)) => object.to_string(),
            _ => return None,
        },
        Some(object @ Value::Object(_)) => object.to_string(),
        Some(_) => return None,
    };
    Some(ToolCall {
        id: call_id(),
        name: name.to_owned(),
        arguments,
    })
}

/// The calls in a JSON value: one call, an array of them, or the generic
/// style's `{"tool_call": ...}` / `{"tool_calls": [...]}`. None unless
/// every entry is a call.
fn calls_of(value: &Value, names: &[&str]) -> Option<Vec<ToolCall>> {
    let value = value
        .get("tool_call")
        .or_else(|| value.get("tool_calls"))
        .unwrap_or(value);
    match value {
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|v| call_of(v, names)).collect()
        }
        Value::Object(_) => call_of(value, names).map(|c| vec![c]),
        _ => None,
    }
}

/// JSON values written one after another (`{..}; {..}` or `{..}\n{..}`).
fn json_values(text: &str) -> Option<Vec<Value>> {
    let mut values = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        values.push(stream.next()?.ok()?);
        rest = rest.get(stream.byte_offset()..)?.trim_start();
        // `;` between Llama 3.x calls.
        rest = rest.strip_prefix(';').unwrap_or(rest).trim_start();
    }
    (!values.is_empty()).then_some(values)
}

/// The calls in text that is nothing but JSON calls.
fn json_calls(text: &str, names: &[&str]) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    for value in json_values(text.trim())? {
        calls.append(&mut calls_of(&value, names)?);
    }
    Some(calls)
}

/// Hermes blocks: `<tool_call>{json}</tool_call>`, the last one's end tag optional.
fn hermes(text: &str, names: &[&str]) -> Option<Parsed> {
    let (before, mut rest) = text.split_once(MARKERS[0])?;
    let mut parsed = Parsed {
        content: before.trim_end().to_owned(),
        calls: Vec::new(),
    };
    loop {
        let (body, after) = rest.split_once(HERMES_END).unwrap_or((rest, ""));
        parsed.calls.append(&mut json_calls(body, names)?);
        match after.split_once(MARKERS[0]) {
            Some((between, next)) if between.trim().is_empty() => rest = next,
            Some(_) => return None,
            None => {
                let tail = after.trim();
                if !tail.is_empty() {
                    if !parsed.content.is_empty() {
                        parsed.content.push('\n');
                    }
                    parsed.content.push_str(tail);
                }
                return Some(parsed);
            }
        }
    }
}

/// The calls (and remaining text) of a whole answer.
pub fn parse(text: &str, style: Style, names: &[&str]) -> Parsed {
    let text_only = || Parsed {
        content: text.to_owned(),
        calls: Vec::new(),
    };
    if style == Style::Generic {
        if let Ok(value) = serde_json::from_str::<Value>(text.trim()) {
            if let Some(Value::String(response)) = value.get("response") {
                return Parsed {
                    content: response.clone(),
                    calls: Vec::new(),
                };
            }
        }
    }
    if let Some(parsed) = hermes(text, names) {
        return parsed;
    }
    for marker in &MARKERS[1..] {
        if let Some((before, after)) = text.split_once(marker) {
            return match json_calls(after, names) {
                Some(calls) => Parsed {
                    content: before.trim_end().to_owned(),
                    calls,
                },
                None => text_only(),
            };
        }
    }
    match json_calls(text, names) {
        Some(calls) => Parsed {
            content: String::new(),
            calls,
        },
        None => text_only(),
    }
}

/// How much of a stream's text may go out before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Nothing: the whole answer is a call or JSON (a constrained answer).
    Nothing,
    /// Text, up to where a call may start.
    UntilCall,
}

/// A stream's text, held back from where a tool call may start.
#[derive(Debug)]
pub struct Holdback {
    release: Release,
    style: Style,
    names: Vec<String>,
    /// Everything generated.
    text: String,
    /// How much of `text` went out.
    sent: usize,
    /// Where a call starts, once one may have.
    call_at: Option<usize>,
}

impl Holdback {
    /// For an answer in `style` under `choice`, calling one of `names`.
    pub fn new(style: Style, choice: &Choice, names: Vec<String>) -> Self {
        let release = match (style, choice) {
            (Style::Native, Choice::Auto) => Release::UntilCall,
            _ => Release::Nothing,
        };
        Holdback {
            release,
            style,
            names,
            text: String::new(),
            sent: 0,
            call_at: None,
        }
    }

    /// Takes the next piece; returns the text that may go out now.
    pub fn push(&mut self, piece: &str) -> String {
        self.text.push_str(piece);
        if self.release == Release::Nothing || self.call_at.is_some() {
            return String::new();
        }
        let pending = self.text.get(self.sent..).unwrap_or_default();
        let found = MARKERS.iter().filter_map(|m| pending.find(m)).min();
        // A bare JSON call (Llama 3.x) starts the answer: hold all of it,
        // leading white space too.
        let json_start = self.sent == 0 && {
            let t = pending.trim_start();
            t.starts_with('{') || t.starts_with('[')
        };
        let until = match (json_start, found) {
            (true, _) => {
                self.call_at = Some(0);
                0
            }
            (false, Some(at)) => {
                self.call_at = Some(self.sent + at);
                at
            }
            // Keep back an end that may be the start of a marker (or of the
            // first JSON character after leading white space).
            (false, None) if pending.trim().is_empty() && self.sent == 0 => 0,
            (false, None) => pending.len() - held_suffix(pending),
        };
        let out = pending.get(..until).unwrap_or_default().to_owned();
        self.sent += out.len();
        out
    }

    /// At the end: the text still to go out, and the calls.
    pub fn finish(self) -> Parsed {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let held = self.text.get(self.sent..).unwrap_or_default();
        parse(held, self.style, &names)
    }
}

/// How many bytes at the end of `text` could begin a marker.
fn held_suffix(text: &str) -> usize {
    MARKERS
        .iter()
        .flat_map(|m| {
            (1..m.len())
                .filter_map(|n| m.get(..n))
                .filter(|prefix| text.ends_with(prefix))
                .map(str::len)
        })
        .max()
        .unwrap_or(0)
}
