//! Per-model settings from the config file, through the real daemon and workers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;

use support::{Daemon, add_demo_model, collect, greedy};
use tonic::Code;

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .filter(|kv| !kv.is_empty())
        .collect()
}

#[tokio::test]
async fn model_tables_set_env_aliases_pins_and_context_per_model() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "a");
    add_demo_model(dir.path(), "b");
    let config = dir.path().join("router.toml");
    std::fs::write(
        &config,
        r#"
[defaults]
env = { ROUTER_TEST_ALL = "1" }

[models.a]
aliases = ["small"]
env = { ROUTER_TEST_ONLY_A = "yes", ROUTER_TEST_ALL = "a" }
ctx_size = 256
pin = true
flash_attn = "on"
cache_type_k = "q8_0"
cache_type_v = "q8_0"

[models.b]
load_on_startup = true

[models.not-here-yet]
ctx_size = 1024
"#,
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]).await;
    d.wait_for("b to load at start-up without a request", |ms| {
        ms.iter()
            .any(|m| m.id == "b" && support::state(m) == "ready")
    })
    .await;
    assert!(
        d.log_text().contains("not-here-yet"),
        "a table without a model is a warning"
    );

    let mut c = d.inference().await;
    let out = collect(
        c.generate(greedy("small", "Hello", 4))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(out.tokens.len(), 4, "the alias reaches model a");
    collect(
        c.generate(greedy("b", "Hello", 4))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();

    let a = d.model("a").await.unwrap();
    let b = d.model("b").await.unwrap();
    assert_eq!(a.aliases, ["small"]);
    assert!(a.pinned && !b.pinned);
    let env_a = environ(a.worker_pid);
    let env_b = environ(b.worker_pid);
    assert!(
        env_a.contains(&"ROUTER_TEST_ONLY_A=yes".to_owned()),
        "{env_a:?}"
    );
    assert!(
        env_a.contains(&"ROUTER_TEST_ALL=a".to_owned()),
        "the model's table wins: {env_a:?}"
    );
    assert!(env_b.contains(&"ROUTER_TEST_ALL=1".to_owned()), "{env_b:?}");
    assert!(
        !env_b.iter().any(|kv| kv.starts_with("ROUTER_TEST_ONLY_A")),
        "{env_b:?}"
    );

    // a's context is 256 tokens, b's the daemon's 4096.
    let long = "one two three four five six seven eight nine ten ".repeat(40);
    let err = c.generate(greedy("small", &long, 4)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("256"), "{err:?}");
    collect(
        c.generate(greedy("b", &long, 2))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();

    // The CLI takes aliases too.
    let out = d.cli(&["models", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["aliases"][0], "small");
    assert!(listed[0]["worker_pid"].as_u64().unwrap() > 0);
    let (sa, sb) = (&listed[0]["settings"], &listed[1]["settings"]);
    assert_eq!(
        (sa["ctx_size"].as_u64(), sb["ctx_size"].as_u64()),
        (Some(256), Some(4096))
    );
    assert_eq!(
        (sa["flash_attn"].as_str(), sb["flash_attn"].as_str()),
        (Some("on"), Some("auto"))
    );
    assert_eq!(sa["cache_type_v"], "q8_0");
    assert_eq!(
        sa["env"],
        serde_json::json!(["ROUTER_TEST_ALL", "ROUTER_TEST_ONLY_A"])
    );
    assert!(d.cli(&["unload", "small"]).status.success());
    assert_eq!(support::state(&d.model("a").await.unwrap()), "unloaded");
}

#[test]
fn config_check_validates_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "models_max = 2\n[models.gemma]\naliases = [\"g\"]\nenv = { HSA_OVERRIDE_GFX_VERSION = \"11.0.0\" }\n",
    )
    .unwrap();
    let out = Command::new(support::bin())
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 alias"),
        "{out:?}"
    );

    for (text, expected) in [
        (
            "[models.a]\naliases = [\"x\"]\n[models.b]\naliases = [\"x\"]\n",
            "models.b.aliases",
        ),
        (
            "[models.a]\naliases = [\"b\"]\n[models.b]\n",
            "is the id of another model",
        ),
        ("[models.a]\nctx_sise = 12\n", "ctx_sise"),
        ("[defaults]\nenv = { \"A=B\" = \"x\" }\n", "defaults.env"),
        (
            "models_max = 1\n[models.a]\nload_on_startup = true\n[models.b]\nload_on_startup = true\n",
            "2 models have load_on_startup (a, b) but models_max is 1",
        ),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(support::bin())
            .args(["config", "check"])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn sampling_defaults_chat_templates_and_reloads_are_per_model() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "a");
    add_demo_model(dir.path(), "b");
    let template = dir.path().join("chatml.jinja");
    std::fs::write(
        &template,
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n",
    )
    .unwrap();
    let config = dir.path().join("router.toml");
    let write_config = |b_ctx: u32| {
        std::fs::write(
            &config,
            format!(
                "[models.a]\nsampling = {{ temperature = 0.0 }}\n\n[models.b]\nctx_size = {b_ctx}\nchat_template = \"{}\"\n",
                template.display()
            ),
        )
        .unwrap();
    };
    write_config(2048);
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]).await;
    let mut c = d.inference().await;

    // a's default is greedy: a request that sets no sampling is deterministic.
    let unset = |model: &str| llama_router::proto::pb::GenerateRequest {
        sampling: None,
        ..greedy(model, "The capital of France is", 12)
    };
    let first = collect(c.generate(unset("a")).await.unwrap().into_inner())
        .await
        .unwrap();
    let second = collect(c.generate(unset("a")).await.unwrap().into_inner())
        .await
        .unwrap();
    let explicit = collect(
        c.generate(greedy("a", "The capital of France is", 12))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(first.tokens, second.tokens);
    assert_eq!(first.tokens, explicit.tokens);

    // b chats with the configured template although its GGUF has none; a in
    // ChatML, the fallback for a model without a template (as llama-server).
    let chat = |model: &str| llama_router::proto::pb::ChatRequest {
        model: model.into(),
        messages: vec![llama_router::proto::pb::ChatMessage {
            role: "user".into(),
            content: "Hi".into(),
            ..Default::default()
        }],
        max_tokens: 4,
        ..Default::default()
    };
    let answer = collect(c.chat(chat("b")).await.unwrap().into_inner())
        .await
        .unwrap();
    // Jinja drops a template's final newline, as Hugging Face's does.
    let expected = d
        .prompt_tokens("b", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant")
        .await;
    assert_eq!(answer.usage.unwrap().prompt_tokens as usize, expected.len());
    let answer = collect(c.chat(chat("a")).await.unwrap().into_inner())
        .await
        .unwrap();
    let expected = d
        .prompt_tokens(
            "a",
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        )
        .await;
    assert_eq!(answer.usage.unwrap().prompt_tokens as usize, expected.len());

    // Changing b's table and sending SIGHUP restarts b only; a keeps its worker.
    let a_pid = d.model("a").await.unwrap().worker_pid;
    let b_pid = d.model("b").await.unwrap().worker_pid;
    assert!(a_pid > 0 && b_pid > 0);
    write_config(1024);
    d.signal("HUP");
    d.wait_for("b to reload without its old worker", |ms| {
        ms.iter().any(|m| m.id == "b" && m.worker_pid != b_pid)
    })
    .await;
    collect(c.chat(chat("b")).await.unwrap().into_inner())
        .await
        .unwrap();
    let b = d.model("b").await.unwrap();
    assert!(b.worker_pid > 0 && b.worker_pid != b_pid);
    assert_eq!(
        d.model("a").await.unwrap().worker_pid,
        a_pid,
        "a was not touched"
    );
}

#[tokio::test]
async fn an_alias_that_is_a_model_in_the_directory_stops_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    support::tiny_model(&dir.path().join("a.gguf"), "a");
    support::tiny_model(&dir.path().join("b.gguf"), "b");
    let config = dir.path().join("router.toml");
    std::fs::write(&config, "[models.a]\naliases = [\"b\"]\n").unwrap();
    let out = Command::new(support::bin())
        .args(["serve", "--models-dir"])
        .arg(dir.path())
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"models.a.aliases: "b" is the id of a model in the models directory"#),
        "{stderr}"
    );
}
