//! llama-server's names for our settings: its flags (`-c`, `--ctx-size`),
//! preset keys (the same without dashes) and `LLAMA_ARG_*` variables, each
//! mapped onto the one definition of a setting. The engine rows come from
//! `params::LLAMA_SERVER_NAMES` (generated with the fields themselves); the
//! other rows name keys of [`ModelSettings`], router-wide options the
//! command line handles, flags that do not apply here (a warning) and flags
//! we refuse (an error naming them). A value is written into a
//! `ModelSettings` through its serde keys, so this file holds no copy of any
//! field.

use serde_json::Value;

use super::ModelSettings;
use crate::engine::templates;
use crate::params::LLAMA_SERVER_NAMES;

/// What a llama-server option is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// A per-model setting: a key of [`ModelSettings`] (engine keys are
    /// flattened into it; sampling keys are `sampling.KEY`), read as `kind`.
    Model {
        /// The config key.
        key: &'static str,
        /// How its text becomes a value.
        kind: Kind,
    },
    /// A router-wide option (command line or environment only).
    Router(RouterOption),
    /// Accepted, but it changes nothing here; listed in one warning.
    Harmless,
    /// Changes behaviour in a way we do not offer; refused with why.
    Unsupported(&'static str),
}

/// How an option's text becomes a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An engine setting: a number (negative: llama-server's "default",
    /// left unset), or its text (`auto`, `q8_0`, `on`).
    Engine,
    /// A number.
    Number,
    /// A flag: true when given bare; `true`/`false` (`1`, `on`...) in a preset or variable.
    Flag,
    /// A flag's `no-` form: false when given bare, the opposite of its text otherwise.
    NoFlag,
    /// Whole seconds; negative means never (0).
    Seconds,
    /// Comma-separated names.
    List,
    /// A file path.
    Path,
    /// A built-in chat template's name.
    Template,
}

/// The router-wide options, which the command line resolves into config keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterOption {
    /// `--models-dir`.
    ModelsDir,
    /// `--models-max`.
    ModelsMax,
    /// `--models-preset`.
    ModelsPreset,
    /// `--models-autoload` (true) or `--no-models-autoload` (false).
    Autoload(bool),
    /// `--host`.
    Host,
    /// `--port`.
    Port,
    /// `--api-key`.
    ApiKey,
}

/// One llama-server option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaOption {
    /// Its names without dashes (`c`, `ctx-size`).
    pub flags: &'static [&'static str],
    /// Its environment variable, if it has one.
    pub env: Option<&'static str>,
    /// Whether it takes a value on the command line.
    pub takes_value: bool,
    /// What it is to us.
    pub meaning: Meaning,
}

mod table;

use table::OTHERS;

/// Every option: the engine settings' rows, then the others.
pub fn options() -> impl Iterator<Item = LlamaOption> {
    LLAMA_SERVER_NAMES
        .iter()
        .map(|n| LlamaOption {
            flags: n.flags,
            env: Some(n.env),
            takes_value: !n.switch,
            meaning: Meaning::Model {
                key: n.key,
                kind: if n.switch { Kind::Flag } else { Kind::Engine },
            },
        })
        .chain(OTHERS.iter().copied())
}

/// The option a flag name (without dashes) or a variable name is.
pub fn find(name: &str) -> Option<LlamaOption> {
    options().find(|o| o.flags.contains(&name) || o.env == Some(name))
}

/// The name users know an option by: `--ctx-size`.
pub fn display(option: &LlamaOption) -> String {
    let long = option.flags.last().copied().unwrap_or_default();
    format!("--{long}")
}

/// A value llama-server would take that we cannot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} {value:?}: {problem}")]
pub struct ValueError {
    /// The option as written.
    pub name: String,
    /// The value.
    pub value: String,
    /// What is wrong.
    pub problem: String,
}

/// Whether `text` says yes (`true`, `1`, `on`, `enabled`), no, or neither.
pub fn truthy(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "enabled" | "yes" => Some(true),
        "false" | "0" | "off" | "disabled" | "no" => Some(false),
        _ => None,
    }
}

fn number(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(Value::from(n));
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

/// The value `text` gives `key` (`None`: llama-server's "default", leave it unset).
fn convert(key: &str, kind: Kind, text: &str) -> Result<Option<Value>, String> {
    let value = match kind {
        Kind::Engine => match number(text) {
            Some(n) if n.as_i64().is_some_and(|n| n < 0) => None,
            Some(n) if key == "ctx_size" && n.as_i64() == Some(0) => {
                return Err(
                    "0 (the model's trained context) is not supported: give a size in tokens"
                        .into(),
                );
            }
            Some(n) if key == "flash_attn" => Some(Value::from(if n.as_i64() == Some(0) {
                "off"
            } else {
                "on"
            })),
            Some(n) => Some(n),
            None if key == "flash_attn" => match truthy(text) {
                Some(on) => Some(Value::from(if on { "on" } else { "off" })),
                None => Some(Value::from(text.trim())),
            },
            None => Some(Value::from(text.trim())),
        },
        Kind::Number => Some(number(text).ok_or("expected a number")?),
        Kind::Flag => Some(Value::from(truthy(text).ok_or("expected true or false")?)),
        Kind::NoFlag => Some(Value::from(!truthy(text).ok_or("expected true or false")?)),
        Kind::Seconds => match number(text).and_then(|n| n.as_i64()) {
            Some(n) => Some(Value::from(n.max(0))),
            None => return Err("expected whole seconds (-1: never)".into()),
        },
        Kind::List => Some(Value::from(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>(),
        )),
        Kind::Path => Some(Value::from(text)),
        Kind::Template => match templates::builtin(text.trim()) {
            Some(_) => Some(Value::from(text.trim())),
            None => {
                return Err(format!(
                    "not a built-in template ({}); put a custom one in a file and use --chat-template-file",
                    templates::names()
                ));
            }
        },
    };
    Ok(value)
}

/// Writes `text` as the value of `key` into `settings`, through serde (a
/// value the setting's type refuses says why, in serde's words).
pub fn apply(
    settings: &mut ModelSettings,
    name: &str,
    key: &str,
    kind: Kind,
    text: &str,
) -> Result<(), ValueError> {
    let fail = |problem: String| ValueError {
        name: name.to_owned(),
        value: text.to_owned(),
        problem,
    };
    let mut tree = serde_json::to_value(&*settings).map_err(|e| fail(e.to_string()))?;
    let (table, field) = match key.split_once('.') {
        Some((table, field)) => (Some(table), field),
        None => (None, key),
    };
    let value = convert(key, kind, text).map_err(fail)?;
    let object = match table {
        Some(table) => tree.get_mut(table),
        None => Some(&mut tree),
    }
    .and_then(Value::as_object_mut)
    .ok_or_else(|| fail(format!("{key} is not a settings key")))?;
    match value {
        Some(value) => object.insert(field.to_owned(), value),
        None => object.remove(field),
    };
    *settings = serde_json::from_value(tree).map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// `over`'s settings over `under`'s, key by key (tables such as `sampling`
/// and `env` merge key by key too).
pub fn layer(under: &ModelSettings, over: &ModelSettings) -> ModelSettings {
    fn merge(under: &mut Value, over: Value) {
        match (under, over) {
            (Value::Object(u), Value::Object(o)) => {
                for (k, v) in o {
                    match u.get_mut(&k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            u.insert(k, v);
                        }
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }
    let (Ok(mut tree), Ok(top)) = (serde_json::to_value(under), serde_json::to_value(over)) else {
        return over.clone();
    };
    merge(&mut tree, top);
    serde_json::from_value(tree).unwrap_or_else(|_| over.clone())
}

#[cfg(test)]
mod tests;
