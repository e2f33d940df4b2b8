//! llama-server command lines: what they resolve to and what they refuse.

use super::*;

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

fn run(line: &str) -> Router {
    match parse(&args(line), []).unwrap() {
        Parsed::Run(r) => *r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_unit_file_command_line_becomes_config_keys_and_defaults() {
    let r = run(
        "--models-dir /m --models-max 2 --port 9000 -c 8192 -np 2 -ngl 99 -fa on \
                 -ctk q8_0 --mlock --jinja --no-models-autoload --temp 0.2 --metrics --no-webui",
    );
    let (keys, warnings) = r.overrides().unwrap();
    assert_eq!(keys["models_dir"], "/m");
    assert_eq!(keys["models_max"], 2);
    assert_eq!(keys["http_port"], 9000);
    assert_eq!(keys["http_host"], DEFAULT_HOST);
    assert_eq!(keys["models_autoload"], false);
    let d = &keys["defaults"];
    assert_eq!(
        (d["ctx_size"].as_u64(), d["parallel"].as_u64()),
        (Some(8192), Some(2))
    );
    assert_eq!(
        (d["gpu_layers"].as_u64(), d["flash_attn"].as_str()),
        (Some(99), Some("on"))
    );
    assert_eq!(
        (d["cache_type_k"].as_str(), d["mlock"].as_bool()),
        (Some("q8_0"), Some(true))
    );
    assert_eq!(
        d["sampling"]["temperature"]
            .as_f64()
            .map(|t| (t * 10.0).round()),
        Some(2.0)
    );
    assert_eq!(warnings, vec!["--jinja", "--metrics", "--no-webui"]);
}

#[test]
fn http_defaults_to_llama_servers_address() {
    let (keys, _) = run("").overrides().unwrap();
    assert_eq!(
        (keys["http_host"].as_str(), keys["http_port"].as_u64()),
        (Some("127.0.0.1"), Some(8080))
    );
    let (keys, _) = run("--host=0.0.0.0 --api-key k").overrides().unwrap();
    assert_eq!(
        (keys["http_host"].as_str(), keys["api_key"].as_str()),
        (Some("0.0.0.0"), Some("k"))
    );
}

#[test]
fn unsupported_and_unknown_flags_are_named_in_one_error() {
    let err = parse(
        &args("-m x.gguf --lora a.gguf --rope-scale 2 -c 512 extra"),
        [],
    )
    .unwrap_err()
    .to_string();
    for name in ["-m", "--lora", "--rope-scale", "extra"] {
        assert!(err.contains(name), "{name} missing from {err}");
    }
    assert!(err.contains("--models-dir"), "{err}");
    assert!(matches!(
        parse(&args("-c"), []),
        Err(LlamaServerError::MissingValue(_))
    ));
    assert!(matches!(
        parse(&args("-ctk bf16"), []),
        Err(LlamaServerError::Value(_))
    ));
    assert!(matches!(parse(&args("--help"), []), Ok(Parsed::Help(_))));
}

#[test]
fn variables_apply_under_the_command_line() {
    let env = [
        ("LLAMA_ARG_CTX_SIZE".to_owned(), "1024".to_owned()),
        ("LLAMA_ARG_N_PARALLEL".to_owned(), "3".to_owned()),
        ("LLAMA_ARG_MODELS_AUTOLOAD".to_owned(), "false".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
    ];
    let Parsed::Run(r) = parse(&args("-c 2048"), env).unwrap() else {
        panic!()
    };
    let (keys, _) = r.overrides().unwrap();
    assert_eq!(keys["defaults"]["ctx_size"], 2048);
    assert_eq!(keys["defaults"]["parallel"], 3);
    assert_eq!(keys["models_autoload"], false);
    let bad = [("LLAMA_ARG_NOPE".to_owned(), "1".to_owned())];
    assert!(
        parse(&[], bad)
            .unwrap_err()
            .to_string()
            .contains("LLAMA_ARG_NOPE")
    );
}

#[test]
fn the_command_line_beats_the_models_section_which_beats_the_global_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.ini");
    std::fs::write(&file, "version = 1\n[*]\nc = 1000\nnp = 3\nt = 2\n[a]\nc = 2000\nnp = 5\nload-on-startup = true\n").unwrap();
    let r = run(&format!("--models-preset {} -np 7", file.display()));
    let (keys, _) = r.overrides().unwrap();
    let (d, a) = (&keys["defaults"], &keys["models"]["a"]);
    assert_eq!(
        (
            d["ctx_size"].as_u64(),
            d["parallel"].as_u64(),
            d["threads"].as_u64()
        ),
        (Some(1000), Some(7), Some(2))
    );
    assert_eq!(
        (a["ctx_size"].as_u64(), a["parallel"].as_u64()),
        (Some(2000), Some(7))
    );
    assert_eq!(a["load_on_startup"], true);
    std::fs::write(&file, "[a]\nbogus = 1\n").unwrap();
    let err = r.overrides().unwrap_err().to_string();
    assert!(err.contains("[a] bogus"), "{err}");
}

#[test]
fn the_prompt_cache_switch_takes_no_value_and_has_a_no_form() {
    let cache = |line: &str, env: &[(&str, &str)]| {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let Parsed::Run(r) = parse(&args(line), env).unwrap() else {
            panic!("{line}")
        };
        let (keys, _) = r.overrides().unwrap();
        (
            keys["defaults"]["cache_prompt"].as_bool(),
            keys["defaults"]["ctx_size"].as_u64(),
        )
    };
    // A bare switch does not swallow the flag after it.
    assert_eq!(cache("--cache-prompt -c 64", &[]), (Some(true), Some(64)));
    assert_eq!(
        cache("--no-cache-prompt -c 64", &[]),
        (Some(false), Some(64))
    );
    assert_eq!(
        cache("", &[("LLAMA_ARG_CACHE_PROMPT", "false")]),
        (Some(false), None)
    );
    assert_eq!(
        cache("", &[("LLAMA_ARG_NO_CACHE_PROMPT", "1")]),
        (Some(false), None)
    );
    // The command line wins over the environment.
    assert_eq!(
        cache("--cache-prompt", &[("LLAMA_ARG_NO_CACHE_PROMPT", "1")]),
        (Some(true), None)
    );
}
