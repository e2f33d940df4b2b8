//! Logging: human text, JSON lines, or the systemd journal with structured
//! fields (`MODEL`, `MODEL_STATE`, `WORKER_PID`, `REQUEST_ID`, `ERROR`:
//! tracing fields named in lower case become upper-case journal fields).
//! The level comes from `--log-level` / `log_level`, else `RUST_LOG`, else
//! `info`, and can change on SIGHUP.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Syslog identifier of the daemon's journal entries.
pub const SYSLOG_IDENTIFIER: &str = "llama-router";

/// Where and how log events are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// The journal when stderr is connected to it (`JOURNAL_STREAM`), text otherwise.
    #[default]
    Auto,
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// Native journal protocol with structured fields.
    Journald,
}

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level is not a valid filter.
    #[error("invalid log level {spec:?}: {source}")]
    BadLevel {
        /// What was given.
        spec: String,
        /// Why it does not parse.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The filter could not be swapped (the subscriber is gone).
    #[error("cannot change the log level: {0}")]
    Reload(#[from] reload::Error),
}

/// Changes the log level of the running subscriber.
pub struct LogLevelHandle(reload::Handle<EnvFilter, Registry>);

impl LogLevelHandle {
    /// Applies a new level or filter (`debug`, `llama_router=trace,info`).
    pub fn set(&self, spec: &str) -> Result<(), TelemetryError> {
        self.0.reload(parse_level(spec)?)?;
        Ok(())
    }
}

fn parse_level(spec: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(spec).map_err(|source| TelemetryError::BadLevel {
        spec: spec.to_owned(),
        source,
    })
}

/// The level to use: the configured one, else `RUST_LOG`, else `info`.
pub fn effective_level(configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "info".to_owned())
}

/// Whether `JOURNAL_STREAM` (set by systemd) names the stream stderr is.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let stream = stream.to_string_lossy();
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()))
}

/// Installs the global subscriber. Falls back to text if the journal is asked for but unreachable.
pub fn init(format: LogFormat, level: &str) -> Result<LogLevelHandle, TelemetryError> {
    init_with_tap(format, level, None)
}

/// [`init`], and `tap` sees every event's message whatever the level lets
/// through (the worker reads llama.cpp's offload report from its log lines).
pub fn init_with_tap(
    format: LogFormat,
    level: &str,
    tap: Option<fn(&str)>,
) -> Result<LogLevelHandle, TelemetryError> {
    let (filter, handle) = reload::Layer::new(parse_level(level)?);
    let use_journal = match format {
        LogFormat::Journald => true,
        LogFormat::Auto => stderr_is_journal(),
        LogFormat::Text | LogFormat::Json => false,
    };
    let mut journal_error = None;
    let output: Box<dyn Layer<Registry> + Send + Sync> = if use_journal {
        match tracing_journald::layer() {
            Ok(journal) => journal
                .with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned())
                .with_field_prefix(None)
                .boxed(),
            Err(e) => {
                journal_error = Some(e);
                text_layer()
            }
        }
    } else if format == LogFormat::Json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        text_layer()
    };
    // The filter wraps the output so that reloading it changes what is written.
    Registry::default()
        .with(output.with_filter(filter))
        // Only llama.cpp's own lines (llama-cpp-2's target): an unfiltered
        // layer would switch on every trace-level event of every crate.
        .with(tap.map(|f| {
            Tap(f).with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.target() == LLAMA_CPP_TARGET
            }))
        }))
        .init();
    if let Some(e) = journal_error {
        tracing::warn!(error = %e, "cannot reach the systemd journal; logging text to stderr");
    }
    Ok(LogLevelHandle(handle))
}

/// The tracing target of llama.cpp's log lines (llama-cpp-2's `send_logs_to_tracing`).
const LLAMA_CPP_TARGET: &str = "llama-cpp-2";

/// Hands each event's message to a function.
struct Tap(fn(&str));

impl<S: tracing::Subscriber> Layer<S> for Tap {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "message" {
                    value.clone_into(self.0);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    *self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        (self.0)(&message);
    }
}

fn text_layer() -> Box<dyn Layer<Registry> + Send + Sync> {
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .boxed()
}
