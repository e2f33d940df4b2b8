//! The rows of llama-server's options other than the engine settings (those
//! are generated with the fields in `params`): which ModelSettings key each
//! names, which are router-wide, harmless or refused.

use super::{Kind, LlamaOption, Meaning, RouterOption};

const fn row(
    flags: &'static [&'static str],
    env: Option<&'static str>,
    takes_value: bool,
    meaning: Meaning,
) -> LlamaOption {
    LlamaOption {
        flags,
        env,
        takes_value,
        meaning,
    }
}

const fn model(key: &'static str, kind: Kind) -> Meaning {
    Meaning::Model { key, kind }
}

/// Every option but the engine settings (those come from `params`).
pub(super) const OTHERS: &[LlamaOption] = &[
    row(
        &["models-dir"],
        Some("LLAMA_ARG_MODELS_DIR"),
        true,
        Meaning::Router(RouterOption::ModelsDir),
    ),
    row(
        &["models-max"],
        Some("LLAMA_ARG_MODELS_MAX"),
        true,
        Meaning::Router(RouterOption::ModelsMax),
    ),
    row(
        &["models-preset"],
        Some("LLAMA_ARG_MODELS_PRESET"),
        true,
        Meaning::Router(RouterOption::ModelsPreset),
    ),
    row(
        &["models-autoload"],
        Some("LLAMA_ARG_MODELS_AUTOLOAD"),
        false,
        Meaning::Router(RouterOption::Autoload(true)),
    ),
    row(
        &["no-models-autoload"],
        None,
        false,
        Meaning::Router(RouterOption::Autoload(false)),
    ),
    row(
        &["host"],
        Some("LLAMA_ARG_HOST"),
        true,
        Meaning::Router(RouterOption::Host),
    ),
    row(
        &["port"],
        Some("LLAMA_ARG_PORT"),
        true,
        Meaning::Router(RouterOption::Port),
    ),
    row(
        &["api-key"],
        Some("LLAMA_API_KEY"),
        true,
        Meaning::Router(RouterOption::ApiKey),
    ),
    row(
        &["mlock"],
        Some("LLAMA_ARG_MLOCK"),
        false,
        model("mlock", Kind::Flag),
    ),
    row(
        &["chat-template"],
        Some("LLAMA_ARG_CHAT_TEMPLATE"),
        true,
        model("chat_template", Kind::Template),
    ),
    row(
        &["chat-template-file"],
        Some("LLAMA_ARG_CHAT_TEMPLATE_FILE"),
        true,
        model("chat_template", Kind::Path),
    ),
    row(
        &["sleep-idle-seconds"],
        None,
        true,
        model("idle_ttl", Kind::Seconds),
    ),
    row(
        &["a", "alias"],
        Some("LLAMA_ARG_ALIAS"),
        true,
        model("aliases", Kind::List),
    ),
    row(
        &["load-on-startup"],
        None,
        true,
        model("load_on_startup", Kind::Flag),
    ),
    row(
        &["stop-timeout"],
        None,
        true,
        model("stop_timeout", Kind::Number),
    ),
    row(
        &["temp", "temperature"],
        Some("LLAMA_ARG_TEMPERATURE"),
        true,
        model("sampling.temperature", Kind::Number),
    ),
    row(
        &["top-k"],
        Some("LLAMA_ARG_TOP_K"),
        true,
        model("sampling.top_k", Kind::Number),
    ),
    row(
        &["top-p"],
        Some("LLAMA_ARG_TOP_P"),
        true,
        model("sampling.top_p", Kind::Number),
    ),
    row(
        &["min-p"],
        Some("LLAMA_ARG_MIN_P"),
        true,
        model("sampling.min_p", Kind::Number),
    ),
    row(
        &["repeat-penalty"],
        Some("LLAMA_ARG_REPEAT_PENALTY"),
        true,
        model("sampling.repeat_penalty", Kind::Number),
    ),
    row(
        &["presence-penalty"],
        Some("LLAMA_ARG_PRESENCE_PENALTY"),
        true,
        model("sampling.presence_penalty", Kind::Number),
    ),
    row(
        &["frequency-penalty"],
        Some("LLAMA_ARG_FREQUENCY_PENALTY"),
        true,
        model("sampling.frequency_penalty", Kind::Number),
    ),
    row(
        &["repeat-last-n"],
        None,
        true,
        model("sampling.penalty_last_n", Kind::Number),
    ),
    // We always render templates with Jinja and always batch continuously.
    row(
        &["jinja"],
        Some("LLAMA_ARG_JINJA"),
        false,
        Meaning::Harmless,
    ),
    row(
        &["cb", "cont-batching"],
        Some("LLAMA_ARG_CONT_BATCHING"),
        false,
        Meaning::Harmless,
    ),
    // /metrics is always served; there is no web UI, no slots endpoint and no POST /props.
    row(
        &["metrics"],
        Some("LLAMA_ARG_ENDPOINT_METRICS"),
        false,
        Meaning::Harmless,
    ),
    row(
        &["ui", "webui", "no-ui", "no-webui"],
        Some("LLAMA_ARG_UI"),
        false,
        Meaning::Harmless,
    ),
    row(
        &["slots", "no-slots"],
        Some("LLAMA_ARG_ENDPOINT_SLOTS"),
        false,
        Meaning::Harmless,
    ),
    row(
        &["props"],
        Some("LLAMA_ARG_ENDPOINT_PROPS"),
        false,
        Meaning::Harmless,
    ),
    row(&["warmup", "no-warmup"], None, false, Meaning::Harmless),
    row(
        &["offline"],
        Some("LLAMA_ARG_OFFLINE"),
        false,
        Meaning::Harmless,
    ),
    // `cache-prompt` itself is the engine setting's row.
    row(
        &["no-cache-prompt"],
        Some("LLAMA_ARG_NO_CACHE_PROMPT"),
        false,
        model("cache_prompt", Kind::NoFlag),
    ),
    // Logging is ours (--log-level, the journal); llama.cpp's lines are forwarded.
    row(&["log-disable"], None, false, Meaning::Harmless),
    row(
        &["log-file"],
        Some("LLAMA_ARG_LOG_FILE"),
        true,
        Meaning::Harmless,
    ),
    row(
        &["log-colors"],
        Some("LLAMA_ARG_LOG_COLORS"),
        true,
        Meaning::Harmless,
    ),
    row(
        &["log-prefix", "no-log-prefix"],
        Some("LLAMA_ARG_LOG_PREFIX"),
        false,
        Meaning::Harmless,
    ),
    row(
        &["log-timestamps", "no-log-timestamps"],
        Some("LLAMA_ARG_LOG_TIMESTAMPS"),
        false,
        Meaning::Harmless,
    ),
    row(
        &["v", "verbose", "log-verbose"],
        None,
        false,
        Meaning::Harmless,
    ),
    row(
        &["lv", "verbosity", "log-verbosity"],
        Some("LLAMA_ARG_LOG_VERBOSITY"),
        true,
        Meaning::Harmless,
    ),
    row(
        &["threads-http"],
        Some("LLAMA_ARG_THREADS_HTTP"),
        true,
        Meaning::Harmless,
    ),
    row(
        &["to", "timeout"],
        Some("LLAMA_ARG_TIMEOUT"),
        true,
        Meaning::Harmless,
    ),
    row(
        &["no-jinja"],
        None,
        false,
        Meaning::Unsupported("chat templates are always rendered with Jinja"),
    ),
    row(
        &["nocb", "no-cont-batching"],
        None,
        false,
        Meaning::Unsupported("batching is always continuous"),
    ),
    row(
        &["m", "model"],
        Some("LLAMA_ARG_MODEL"),
        true,
        Meaning::Unsupported("models come from --models-dir: put the file there"),
    ),
    row(
        &["hf", "hfr", "hf-repo"],
        Some("LLAMA_ARG_HF_REPO"),
        true,
        Meaning::Unsupported("nothing is downloaded: put the file in --models-dir"),
    ),
    row(
        &["api-key-file"],
        Some("LLAMA_ARG_API_KEY_FILE"),
        true,
        Meaning::Unsupported("one key: give it with LLAMA_API_KEY or --api-key"),
    ),
];
