//! Per-model settings: precedence, field-by-field fall-through and validation.

use std::time::Duration;

use super::*;
use crate::params::{CacheType, FlashAttn, GpuLayers};

fn base() -> WorkerSettings {
    WorkerSettings {
        params: ModelParams {
            parallel: 4,
            ctx_size: 4096,
            batch_size: 512,
            threads: 0,
            gpu_layers: GpuLayers::Auto,
            main_gpu: 0,
            flash_attn: FlashAttn::Auto,
            cache_type_k: CacheType::F16,
            cache_type_v: CacheType::F16,
            cache_prompt: true,
        },
        queue: 64,
        stop_timeout: Duration::from_secs(10),
        ping_timeout: Duration::from_secs(30),
        step_timeout: Duration::from_secs(30),
        start_timeout: Duration::from_secs(300),
    }
}

fn table(ctx: Option<u32>, aliases: &[&str]) -> ModelSettings {
    ModelSettings {
        params: ModelParamsPatch {
            ctx_size: ctx,
            ..ModelParamsPatch::default()
        },
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
        ..ModelSettings::default()
    }
}

#[test]
fn the_model_table_beats_the_defaults_which_beat_the_daemon_keys() {
    let defaults = ModelSettings {
        params: ModelParamsPatch {
            ctx_size: Some(2048),
            parallel: Some(2),
            ..ModelParamsPatch::default()
        },
        env: [
            ("A".to_owned(), "d".to_owned()),
            ("B".to_owned(), "d".to_owned()),
        ]
        .into(),
        ..ModelSettings::default()
    };
    let mut own = table(Some(8192), &[]);
    own.env.insert("B".into(), "own".into());
    let p = ModelProfiles::new(defaults, [("big".to_owned(), own)].into()).unwrap();
    let big = p.worker("big", base());
    let big = big.params;
    assert_eq!((big.ctx_size, big.parallel, big.batch_size), (8192, 2, 512));
    let other = p.worker("other", base()).params;
    assert_eq!((other.ctx_size, other.parallel), (2048, 2));
    assert_eq!(
        p.extras("big").env,
        [
            ("A".to_owned(), "d".to_owned()),
            ("B".to_owned(), "own".to_owned())
        ]
        .into()
    );
    assert_eq!(
        p.extras("other").env.get("B").map(String::as_str),
        Some("d")
    );
    assert_eq!(ModelProfiles::default().worker("x", base()), base());
}

#[test]
fn every_engine_setting_resolves_table_then_defaults_then_daemon_keys_then_clamps() {
    let defaults = ModelSettings {
        params: ModelParamsPatch {
            flash_attn: Some(FlashAttn::On),
            cache_type_v: Some(CacheType::Q8_0),
            gpu_layers: Some(GpuLayers::All),
            batch_size: Some(0),
            ..ModelParamsPatch::default()
        },
        ..ModelSettings::default()
    };
    let own = ModelSettings {
        params: ModelParamsPatch {
            gpu_layers: Some(GpuLayers::Count(3)),
            main_gpu: Some(1),
            cache_type_k: Some(CacheType::Q4_0),
            ctx_size: Some(1),
            ..ModelParamsPatch::default()
        },
        ..ModelSettings::default()
    };
    let p = ModelProfiles::new(defaults, [("m".to_owned(), own)].into()).unwrap();
    let m = p.params("m", base().params);
    assert_eq!(
        (
            m.gpu_layers,
            m.main_gpu,
            m.cache_type_k,
            m.cache_type_v,
            m.flash_attn
        ),
        (
            GpuLayers::Count(3),
            1,
            CacheType::Q4_0,
            CacheType::Q8_0,
            FlashAttn::On
        )
    );
    // The clamps apply after resolution, whichever layer set the value.
    assert_eq!(
        (m.ctx_size, m.batch_size, m.parallel),
        (crate::params::MIN_CTX_SIZE, 1, 4)
    );
    let other = p.params("other", base().params);
    assert_eq!((other.gpu_layers, other.main_gpu), (GpuLayers::All, 0));
    let zero = ModelParams {
        parallel: 0,
        ..base().params
    };
    assert_eq!(ModelProfiles::default().params("x", zero).parallel, 1);
    assert_eq!(p.effective("m", base(), false, None).params, Some(m));
}

#[test]
fn sampling_ttl_and_mlock_fall_through_field_by_field() {
    let defaults = ModelSettings {
        sampling: SamplingSettings {
            temperature: Some(0.2),
            top_k: Some(10),
            ..SamplingSettings::default()
        },
        idle_ttl: Some(60),
        ..ModelSettings::default()
    };
    let own = ModelSettings {
        sampling: SamplingSettings {
            temperature: Some(0.0),
            ..SamplingSettings::default()
        },
        idle_ttl: Some(0),
        mlock: Some(true),
        chat_template: Some("/t.jinja".into()),
        ..ModelSettings::default()
    };
    let p = ModelProfiles::new(defaults, [("m".to_owned(), own)].into()).unwrap();
    let s = p.extras("m").sampling;
    assert_eq!(
        (s.temperature, s.top_k, s.top_p),
        (Some(0.0), Some(10), None)
    );
    assert_eq!(p.extras("m").chat_template, Some(PathBuf::from("/t.jinja")));
    assert_eq!(p.idle_ttl("m", Some(Duration::from_secs(5))), None);
    assert_eq!(p.idle_ttl("x", None), Some(Duration::from_secs(60)));
    assert!(p.mlock("m", false) && !p.mlock("x", false));
}

#[test]
fn aliases_resolve_and_collisions_are_refused() {
    let p = ModelProfiles::new(
        ModelSettings::default(),
        [(
            "gemma-3-270m-q4_k_m".to_owned(),
            table(None, &["gemma", "small"]),
        )]
        .into(),
    )
    .unwrap();
    assert_eq!(p.resolve_alias("small"), Some("gemma-3-270m-q4_k_m"));
    assert_eq!(p.resolve_alias("gemma-3-270m-q4_k_m"), None);

    let twice = ModelProfiles::new(
        ModelSettings::default(),
        [
            ("a".to_owned(), table(None, &["x"])),
            ("b".to_owned(), table(None, &["x"])),
        ]
        .into(),
    )
    .unwrap_err();
    assert_eq!(
        twice.to_string(),
        r#"models.b.aliases: "x" is already an alias of a"#
    );
    let is_a_model = ModelProfiles::new(
        ModelSettings::default(),
        [
            ("a".to_owned(), table(None, &["b"])),
            ("b".to_owned(), table(None, &[])),
        ]
        .into(),
    )
    .unwrap_err();
    assert!(
        is_a_model
            .to_string()
            .contains("is the id of another model"),
        "{is_a_model}"
    );
    let bad_env = ModelProfiles::new(
        ModelSettings {
            env: [("A=B".to_owned(), "x".to_owned())].into(),
            ..ModelSettings::default()
        },
        BTreeMap::new(),
    )
    .unwrap_err();
    assert!(matches!(bad_env, SettingsError::EnvName { .. }));
}

#[test]
fn more_startup_loads_than_models_max_is_an_error_naming_them() {
    let eager = ModelSettings {
        load_on_startup: Some(true),
        ..ModelSettings::default()
    };
    let p = ModelProfiles::new(
        ModelSettings::default(),
        [
            ("a".to_owned(), eager.clone()),
            ("b".to_owned(), eager),
            ("c".to_owned(), table(None, &[])),
        ]
        .into(),
    )
    .unwrap();
    assert_eq!(p.startup(), ["a", "b"]);
    assert!(p.check_startup(2).is_ok() && p.check_startup(0).is_ok());
    assert_eq!(
        p.check_startup(1).unwrap_err().to_string(),
        "2 models have load_on_startup (a, b) but models_max is 1"
    );
}
