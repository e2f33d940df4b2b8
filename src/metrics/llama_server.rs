//! One model's figures under llama-server's metric names (`llamacpp:*`),
//! for `GET /metrics?model=ID` as llama-server's router mode answers it.
//! Only what we measure is there: prompt and generated tokens, the seconds
//! spent on each, their average rates, and the requests in flight.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

/// The content type of [`Metrics::llama_server`]'s text (llama-server's).
pub const LLAMA_SERVER_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

impl Metrics {
    /// `model`'s figures by llama-server's names, as Prometheus text.
    pub fn llama_server(&self, model: &str) -> String {
        let label = Self::label(model);
        let i = &self.inner;
        let prompt_tokens = i.prompt_tokens.get_or_create(&label).get();
        let predicted_tokens = i.generated_tokens.get_or_create(&label).get();
        let prompt_seconds = i.prompt_seconds.get_or_create(&label).get();
        let predicted_seconds = i.predicted_seconds.get_or_create(&label).get();
        let processing = i.requests_active.get_or_create(&label).get();
        let rate = |tokens: u64, seconds: f64| {
            if seconds > 0.0 {
                tokens as f64 / seconds
            } else {
                0.0
            }
        };
        let mut r = Registry::default();
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        let seconds = |v: f64| {
            let c = Counter::<f64, AtomicU64>::default();
            c.inc_by(v);
            c
        };
        let gauge = |v: f64| {
            let g = Gauge::<f64, AtomicU64>::default();
            g.set(v);
            g
        };
        r.register(
            "llamacpp:prompt_tokens",
            "Number of prompt tokens processed.",
            counter(prompt_tokens),
        );
        r.register(
            "llamacpp:prompt_seconds",
            "Prompt process time in seconds.",
            seconds(prompt_seconds),
        );
        r.register(
            "llamacpp:prompt_tokens_seconds",
            "Average prompt throughput in tokens/s.",
            gauge(rate(prompt_tokens, prompt_seconds)),
        );
        r.register(
            "llamacpp:tokens_predicted",
            "Number of generation tokens processed.",
            counter(predicted_tokens),
        );
        r.register(
            "llamacpp:tokens_predicted_seconds",
            "Predict process time in seconds.",
            seconds(predicted_seconds),
        );
        r.register(
            "llamacpp:predicted_tokens_seconds",
            "Average generation throughput in tokens/s.",
            gauge(rate(predicted_tokens, predicted_seconds)),
        );
        r.register(
            "llamacpp:requests_processing",
            "Number of requests processing.",
            gauge(processing as f64),
        );
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &r);
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_models_figures_come_under_llama_servers_names() {
        let m = Metrics::new();
        m.finished("a", 10, 5, Duration::from_millis(500), 8.0);
        m.tokens("a", 5);
        m.finished("b", 99, 2, Duration::from_secs(1), 1.0);
        let _busy = m.active("a");
        let text = m.llama_server("a");
        for line in [
            "llamacpp:prompt_tokens_total 10",
            "llamacpp:tokens_predicted_total 5",
            "llamacpp:prompt_seconds_total 0.5",
            "llamacpp:prompt_tokens_seconds 20.0",
            "llamacpp:tokens_predicted_seconds_total 0.5",
            "llamacpp:requests_processing 1.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains("99"), "another model's figures: {text}");
    }
}
