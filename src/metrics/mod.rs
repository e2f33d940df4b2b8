//! Prometheus metrics: what the daemon counts, and the text a scrape of
//! `/metrics` gets. Counters and histograms are fed by the supervisor's model
//! events ([`recorder`]) and by the inference relay; gauges of state are read
//! from the actors at scrape time, so they are never stale. The console's
//! figures (requests now, recent generations in [`timings`]) come from here too.

mod llama_server;
pub mod recorder;
pub mod timings;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use self::llama_server::LLAMA_SERVER_CONTENT_TYPE;
use crate::supervisor::StatusView;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of per-model series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// Model id.
    pub model: String,
}

/// Labels of the models-by-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Labels of the crash reports counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrashLabel {
    /// Model id.
    pub model: String,
    /// `SIGSEGV`, ..., or `panic`.
    pub signal: String,
}

/// Labels of per-device gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    /// `vulkan`, `rocm`, `cuda`, `cpu` or `sysfs`.
    pub backend: String,
    /// Device index within its backend.
    pub device: String,
    /// Device name.
    pub name: String,
    /// `discrete`, `integrated` (UMA), `cpu`, `accelerator` or `unknown`.
    pub kind: String,
}

type HistogramFamily = Family<ModelLabel, Histogram, fn() -> Histogram>;

/// Seconds from 10 ms to about 10 min: loads and worker starts.
fn load_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Seconds from 5 ms to about 40 s: time to first token.
fn ttft_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Tokens per second from 1 to about 2,000.
fn tokens_per_second() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

struct Inner {
    registry: Registry,
    models: Family<StateLabel, Gauge>,
    host_cache_bytes: Gauge,
    host_cache_limit_bytes: Gauge,
    vram_total_bytes: Family<DeviceLabel, Gauge>,
    vram_used_bytes: Family<DeviceLabel, Gauge>,
    loads: Family<ModelLabel, Counter>,
    load_failures: Family<ModelLabel, Counter>,
    unloads: Family<ModelLabel, Counter>,
    evictions: Family<ModelLabel, Counter>,
    crashes: Family<ModelLabel, Counter>,
    crash_reports: Family<CrashLabel, Counter>,
    load_duration: HistogramFamily,
    requests_queued: Gauge,
    requests_active: Family<ModelLabel, Gauge>,
    prompt_tokens: Family<ModelLabel, Counter>,
    generated_tokens: Family<ModelLabel, Counter>,
    time_to_first_token: HistogramFamily,
    generation_speed: HistogramFamily,
    /// Requests active on any model (not exported: the family sums to it).
    requests_active_total: Gauge,
    /// Seconds to the first token, and of generation after it, summed per
    /// model (not exported here: llama-server's names, [`llama_server`]).
    prompt_seconds: Family<ModelLabel, Counter<f64, AtomicU64>>,
    predicted_seconds: Family<ModelLabel, Counter<f64, AtomicU64>>,
    timings: timings::Timings,
}

/// The daemon's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every series, registered and at zero.
    pub fn new() -> Self {
        let mut inner = Inner {
            registry: Registry::with_prefix("llama_router"),
            models: Family::default(),
            host_cache_bytes: Gauge::default(),
            host_cache_limit_bytes: Gauge::default(),
            vram_total_bytes: Family::default(),
            vram_used_bytes: Family::default(),
            loads: Family::default(),
            load_failures: Family::default(),
            unloads: Family::default(),
            evictions: Family::default(),
            crashes: Family::default(),
            crash_reports: Family::default(),
            load_duration: Family::new_with_constructor(load_seconds),
            requests_queued: Gauge::default(),
            requests_active: Family::default(),
            prompt_tokens: Family::default(),
            generated_tokens: Family::default(),
            time_to_first_token: Family::new_with_constructor(ttft_seconds),
            generation_speed: Family::new_with_constructor(tokens_per_second),
            requests_active_total: Gauge::default(),
            prompt_seconds: Family::default(),
            predicted_seconds: Family::default(),
            timings: timings::Timings::default(),
        };
        let r = &mut inner.registry;
        r.register("models", "Models by state", inner.models.clone());
        r.register(
            "host_cache_bytes",
            "Bytes of host RAM held by loaded models",
            inner.host_cache_bytes.clone(),
        );
        r.register(
            "host_cache_limit_bytes",
            "--host-cache-bytes (0 = no limit)",
            inner.host_cache_limit_bytes.clone(),
        );
        r.register(
            "vram_total_bytes",
            "GPU memory per device",
            inner.vram_total_bytes.clone(),
        );
        r.register(
            "vram_used_bytes",
            "GPU memory in use per device (by anything)",
            inner.vram_used_bytes.clone(),
        );
        r.register("model_loads", "Completed loads", inner.loads.clone());
        r.register(
            "model_load_failures",
            "Loads that failed",
            inner.load_failures.clone(),
        );
        r.register(
            "model_unloads",
            "Unloads for any reason (evictions included)",
            inner.unloads.clone(),
        );
        r.register(
            "model_evictions",
            "Unloads to make room for another model",
            inner.evictions.clone(),
        );
        r.register(
            "worker_crashes",
            "Workers that crashed, hung, failed to start or did not fit in VRAM",
            inner.crashes.clone(),
        );
        r.register(
            "worker_crash_reports",
            "Crash reports written: workers that died of a fault signal or panicked",
            inner.crash_reports.clone(),
        );
        r.register(
            "model_load_duration_seconds",
            "From the start of a load to the model being ready",
            inner.load_duration.clone(),
        );
        r.register(
            "requests_queued",
            "Requests waiting for their model (load, free slot, worker start)",
            inner.requests_queued.clone(),
        );
        r.register(
            "requests_active",
            "Requests being served by a model's worker",
            inner.requests_active.clone(),
        );
        r.register(
            "prompt_tokens",
            "Prompt tokens of generations that finished",
            inner.prompt_tokens.clone(),
        );
        r.register(
            "generated_tokens",
            "Tokens generated",
            inner.generated_tokens.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "From the engine receiving a request to its first token",
            inner.time_to_first_token.clone(),
        );
        r.register(
            "generation_tokens_per_second",
            "Generation speed after the first token, per request",
            inner.generation_speed.clone(),
        );
        Metrics {
            inner: Arc::new(inner),
        }
    }

    fn label(model: &str) -> ModelLabel {
        ModelLabel {
            model: model.to_owned(),
        }
    }

    /// A load finished after `took`.
    pub fn loaded(&self, model: &str, took: Option<Duration>) {
        let label = Self::label(model);
        self.inner.loads.get_or_create(&label).inc();
        if let Some(took) = took {
            self.inner
                .load_duration
                .get_or_create(&label)
                .observe(took.as_secs_f64());
        }
    }

    /// A load failed.
    pub fn load_failed(&self, model: &str) {
        self.inner
            .load_failures
            .get_or_create(&Self::label(model))
            .inc();
    }

    /// A model began unloading; `evicted` when it made room for another.
    pub fn unloading(&self, model: &str, evicted: bool) {
        let label = Self::label(model);
        self.inner.unloads.get_or_create(&label).inc();
        if evicted {
            self.inner.evictions.get_or_create(&label).inc();
        }
    }

    /// A model's worker crashed, hung or failed to start.
    pub fn crashed(&self, model: &str) {
        self.inner.crashes.get_or_create(&Self::label(model)).inc();
    }

    /// A crash report was written for `model`'s worker, which `signal` ended.
    pub fn crash_reported(&self, model: &str, signal: &str) {
        let label = CrashLabel {
            model: model.to_owned(),
            signal: signal.to_owned(),
        };
        self.inner.crash_reports.get_or_create(&label).inc();
    }

    /// A request waits for its model until the guard is dropped.
    pub fn queued(&self) -> GaugeGuard {
        GaugeGuard::new(self.inner.requests_queued.clone())
    }

    /// A request is served by `model` until the guard is dropped.
    pub fn active(&self, model: &str) -> GaugeGuard {
        let gauge = self
            .inner
            .requests_active
            .get_or_create(&Self::label(model))
            .clone();
        GaugeGuard::with_total(gauge, self.inner.requests_active_total.clone())
    }

    /// Requests (active on any model, queued) right now.
    pub fn requests(&self) -> (i64, i64) {
        (
            self.inner.requests_active_total.get(),
            self.inner.requests_queued.get(),
        )
    }

    /// Every model's recent generations.
    pub fn timings(&self) -> &timings::Timings {
        &self.inner.timings
    }

    /// `model` generated `tokens` more tokens (counted as they stream, so
    /// requests cancelled midway count too).
    pub fn tokens(&self, model: &str, tokens: usize) {
        if tokens > 0 {
            self.inner
                .generated_tokens
                .get_or_create(&Self::label(model))
                .inc_by(u64::try_from(tokens).unwrap_or(u64::MAX));
        }
    }

    /// A generation finished with these figures.
    pub fn finished(
        &self,
        model: &str,
        prompt_tokens: u32,
        completion_tokens: u32,
        time_to_first_token: Duration,
        tokens_per_second: f64,
    ) {
        let label = Self::label(model);
        let i = &self.inner;
        i.prompt_tokens
            .get_or_create(&label)
            .inc_by(u64::from(prompt_tokens));
        if completion_tokens > 0 {
            i.time_to_first_token
                .get_or_create(&label)
                .observe(time_to_first_token.as_secs_f64());
            i.prompt_seconds
                .get_or_create(&label)
                .inc_by(time_to_first_token.as_secs_f64());
        }
        if completion_tokens > 1 && tokens_per_second.is_finite() && tokens_per_second > 0.0 {
            let after_first = f64::from(completion_tokens - 1) / tokens_per_second;
            i.predicted_seconds
                .get_or_create(&label)
                .inc_by(after_first);
        }
        // The rate needs at least two tokens to mean anything.
        if completion_tokens > 1 && tokens_per_second.is_finite() {
            i.generation_speed
                .get_or_create(&label)
                .observe(tokens_per_second);
        }
        if completion_tokens > 0 {
            let speed = if completion_tokens > 1 {
                tokens_per_second
            } else {
                0.0
            };
            i.timings.record(
                model,
                timings::timing_now(time_to_first_token, speed, prompt_tokens, completion_tokens),
            );
        }
    }

    /// Sets a device's VRAM gauges.
    pub fn device(&self, device: &DeviceLabel, total_bytes: u64, used_bytes: u64) {
        let i = &self.inner;
        i.vram_total_bytes
            .get_or_create(device)
            .set(saturating_i64(total_bytes));
        i.vram_used_bytes
            .get_or_create(device)
            .set(saturating_i64(used_bytes));
    }

    /// The OpenMetrics text of every series, with the state gauges set from `status`.
    pub fn render(&self, status: &StatusView) -> String {
        let i = &self.inner;
        for (state, count) in &status.by_state {
            i.models
                .get_or_create(&StateLabel {
                    state: state.name(),
                })
                .set(i64::from(*count));
        }
        i.host_cache_bytes
            .set(saturating_i64(status.host_cache_used));
        i.host_cache_limit_bytes
            .set(saturating_i64(status.host_cache_limit));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &i.registry);
        text
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Holds a gauge (and maybe a total over its family) one higher while it lives.
#[derive(Debug)]
pub struct GaugeGuard {
    gauge: Gauge,
    total: Option<Gauge>,
}

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        GaugeGuard { gauge, total: None }
    }

    fn with_total(gauge: Gauge, total: Gauge) -> Self {
        gauge.inc();
        total.inc();
        GaugeGuard {
            gauge,
            total: Some(total),
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        if let Some(total) = &self.total {
            total.dec();
        }
    }
}
