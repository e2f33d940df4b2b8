//! llama-server's names: derived from the settings, unique, and written through serde.

use super::*;
use crate::params::{CacheType, GpuLayers, ModelParams};

#[test]
fn every_engine_setting_has_llama_server_names_and_no_name_is_taken_twice() {
    let keys = serde_json::to_value(ModelParams::default()).unwrap();
    let keys: Vec<&String> = keys.as_object().unwrap().keys().collect();
    let named: Vec<&str> = LLAMA_SERVER_NAMES.iter().map(|n| n.key).collect();
    assert_eq!(keys.len(), named.len());
    assert!(
        keys.iter().all(|k| named.contains(&k.as_str())),
        "{keys:?} vs {named:?}"
    );
    let mut seen = std::collections::BTreeSet::new();
    for o in options() {
        for name in o.flags.iter().copied().chain(o.env) {
            assert!(seen.insert(name), "{name} is listed twice");
        }
    }
}

#[test]
fn names_find_their_setting_and_values_convert_as_llama_server_means_them() {
    let mut s = ModelSettings::default();
    for (name, text) in [
        ("c", "2048"),
        ("ngl", "all"),
        ("ctk", "q8_0"),
        ("LLAMA_ARG_N_PARALLEL", "3"),
        ("fa", "true"),
        ("t", "-1"),
        ("top-k", "5"),
        ("sleep-idle-seconds", "30"),
    ] {
        let option = find(name).unwrap_or_else(|| panic!("{name}"));
        let Meaning::Model { key, kind } = option.meaning else {
            panic!("{name} is not a model setting");
        };
        apply(&mut s, name, key, kind, text).unwrap();
    }
    let p = s.params;
    assert_eq!(p.ctx_size, Some(2048));
    assert_eq!(p.gpu_layers, Some(GpuLayers::All));
    assert_eq!(p.cache_type_k, Some(CacheType::Q8_0));
    assert_eq!(p.parallel, Some(3));
    assert_eq!(p.flash_attn, Some(crate::params::FlashAttn::On));
    assert_eq!(p.threads, None, "-1 is llama-server's default");
    assert_eq!(s.sampling.top_k, Some(5));
    assert_eq!(s.idle_ttl, Some(30));
    let err = apply(&mut s, "ctk", "cache_type_k", Kind::Engine, "bf16").unwrap_err();
    assert!(err.to_string().contains("bf16"), "{err}");
    assert!(apply(&mut s, "c", "ctx_size", Kind::Engine, "0").is_err());
    assert!(
        apply(
            &mut s,
            "chat-template",
            "chat_template",
            Kind::Template,
            "{{x}}"
        )
        .is_err()
    );
    assert_eq!(
        find("ctx-size").map(|o| display(&o)),
        Some("--ctx-size".to_owned())
    );
    assert!(find("nope").is_none());
}

#[test]
fn layers_merge_key_by_key() {
    let mut under = ModelSettings::default();
    apply(&mut under, "c", "ctx_size", Kind::Engine, "100").unwrap();
    apply(
        &mut under,
        "temp",
        "sampling.temperature",
        Kind::Number,
        "0.5",
    )
    .unwrap();
    let mut over = ModelSettings::default();
    apply(&mut over, "np", "parallel", Kind::Engine, "2").unwrap();
    apply(&mut over, "top-k", "sampling.top_k", Kind::Number, "3").unwrap();
    let both = layer(&under, &over);
    assert_eq!(
        (both.params.ctx_size, both.params.parallel),
        (Some(100), Some(2))
    );
    assert_eq!(
        (both.sampling.temperature, both.sampling.top_k),
        (Some(0.5), Some(3))
    );
}

#[test]
fn cache_prompt_is_a_switch_with_a_no_form() {
    let value = |name: &str, text: &str| {
        let option = find(name).unwrap_or_else(|| panic!("{name}"));
        let Meaning::Model { key, kind } = option.meaning else {
            panic!("{name} is not a model setting");
        };
        let mut s = ModelSettings::default();
        apply(&mut s, name, key, kind, text).unwrap();
        (option.takes_value, s.params.cache_prompt)
    };
    // Bare flags on the command line arrive as "true".
    assert_eq!(value("cache-prompt", "true"), (false, Some(true)));
    assert_eq!(value("no-cache-prompt", "true"), (false, Some(false)));
    // A preset key or a variable says which.
    assert_eq!(value("no-cache-prompt", "false"), (false, Some(true)));
    assert_eq!(value("LLAMA_ARG_CACHE_PROMPT", "0"), (false, Some(false)));
    assert_eq!(value("LLAMA_ARG_CACHE_PROMPT", "on"), (false, Some(true)));
}
