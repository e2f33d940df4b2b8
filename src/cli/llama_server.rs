//! llama-server's command line: `llama-router` started as `llama-server`
//! (a symlink), or `llama-router llama-server ARGS`. Its router-mode flags
//! and `LLAMA_ARG_*` variables keep llama-server's meanings and resolve into
//! the same [`Config`] `serve` uses: router options become config keys
//! (HTTP on 127.0.0.1:8080 unless `--host`/`--port` say otherwise), the
//! per-model defaults and the `--models-preset` sections become the
//! `[defaults]` and `[models."ID"]` tables with llama-server's precedence
//! (command line > the model's section > `[*]`). Which name means what is
//! `settings::llama_args`; this file only walks argv.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::config::{Config, ConfigError};
use crate::settings::ModelSettings;
use crate::settings::llama_args::{self, LlamaOption, Meaning, RouterOption, ValueError};
use crate::settings::preset;

/// llama-server's HTTP address in router mode.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// llama-server's HTTP port.
pub const DEFAULT_PORT: u16 = 8080;
/// The most arguments read (a command line is far shorter).
const MAX_ARGS: usize = 4096;

/// `llama-router llama-server ARGS`: the arguments, parsed by hand (clap
/// has no multi-letter short flags such as `-ngl`).
#[derive(Debug, Clone, clap::Args)]
#[command(disable_help_flag = true)]
pub struct LlamaServerArgs {
    /// llama-server's flags (`--models-dir D --models-max 2 -c 8192 ...`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

/// A command line we refuse.
#[derive(Debug, thiserror::Error)]
pub enum LlamaServerError {
    /// Flags (or variables) that would change behaviour and that we do not
    /// support, or that llama-server does not have; all of them at once.
    #[error("not supported by llama-router in llama-server mode: {}", .0.join("; "))]
    Unsupported(Vec<String>),
    /// A flag without its value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A value the setting cannot take.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// Too many arguments.
    #[error("more than {MAX_ARGS} arguments")]
    TooMany,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// `-h`/`--help`: the text to print.
    Help(String),
    /// `--version`.
    Version,
    /// Run the router.
    Run(Box<Router>),
}

/// A resolved llama-server command line.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Router-wide config keys (`models_dir`, `http_port`, ...).
    keys: Map<String, Value>,
    /// The per-model defaults given on the command line (and in variables).
    models: ModelSettings,
    /// `--models-preset`.
    preset: Option<PathBuf>,
    /// Options accepted without effect, for one warning.
    ignored: Vec<String>,
}

fn router_key(
    router: &mut Router,
    option: RouterOption,
    name: &str,
    text: &str,
) -> Result<(), ValueError> {
    let bad = |problem: &str| ValueError {
        name: name.to_owned(),
        value: text.to_owned(),
        problem: problem.to_owned(),
    };
    let (key, value) = match option {
        RouterOption::ModelsDir => ("models_dir", json!(text)),
        RouterOption::ModelsMax => (
            "models_max",
            json!(
                text.parse::<u32>()
                    .map_err(|_| bad("expected a count (0: no limit)"))?
            ),
        ),
        RouterOption::ModelsPreset => {
            router.preset = Some(PathBuf::from(text));
            return Ok(());
        }
        RouterOption::Autoload(on) => ("models_autoload", json!(on)),
        RouterOption::Host => ("http_host", json!(text)),
        RouterOption::Port => (
            "http_port",
            json!(
                text.parse::<u16>()
                    .map_err(|_| bad("expected a TCP port"))?
            ),
        ),
        RouterOption::ApiKey => ("api_key", json!(text)),
    };
    router.keys.insert(key.to_owned(), value);
    Ok(())
}

/// Applies one option given as `name` with `text` (a bare flag: `"true"`).
fn take(
    router: &mut Router,
    refused: &mut Vec<String>,
    option: LlamaOption,
    name: &str,
    text: &str,
) -> Result<(), LlamaServerError> {
    match option.meaning {
        Meaning::Model { key, kind } => {
            llama_args::apply(&mut router.models, name, key, kind, text)?
        }
        Meaning::Router(RouterOption::Autoload(on)) if !option.takes_value => {
            let on = llama_args::truthy(text).map_or(on, |yes| yes == on);
            router.keys.insert("models_autoload".into(), json!(on));
        }
        Meaning::Router(r) => router_key(router, r, name, text)?,
        Meaning::Harmless => router.ignored.push(name.to_owned()),
        Meaning::Unsupported(why) => refused.push(format!("{name} ({why})")),
    }
    Ok(())
}

/// Parses llama-server's argv (after the program name) over its
/// `LLAMA_ARG_*` variables in `env` (the command line wins, as in llama-server).
pub fn parse(
    args: &[String],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Parsed, LlamaServerError> {
    if args.len() > MAX_ARGS {
        return Err(LlamaServerError::TooMany);
    }
    let mut router = Router::default();
    let mut refused = Vec::new();
    for (name, text) in env {
        if !(name.starts_with("LLAMA_ARG_") || name == "LLAMA_API_KEY") {
            continue;
        }
        match llama_args::find(&name) {
            Some(option) => take(&mut router, &mut refused, option, &name, &text)?,
            None => refused.push(format!("{name} (unknown llama-server variable)")),
        }
    }
    let mut rest = args.iter().peekable();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-h" | "--help" | "--usage" => return Ok(Parsed::Help(help())),
            "--version" => return Ok(Parsed::Version),
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            refused.push(format!(
                "{arg} (llama-server takes no positional arguments)"
            ));
            continue;
        };
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (flag, None),
        };
        let Some(option) = llama_args::find(flag).filter(|o| o.flags.contains(&flag)) else {
            refused.push(format!("{arg} (unknown or not supported)"));
            // Its value, if it has one, is not a positional argument.
            if inline.is_none() {
                rest.next_if(|next| !next.starts_with('-'));
            }
            continue;
        };
        let text = match (option.takes_value, inline) {
            (_, Some(v)) => v,
            (false, None) => "true".to_owned(),
            (true, None) => rest
                .next()
                .cloned()
                .ok_or_else(|| LlamaServerError::MissingValue(arg.clone()))?,
        };
        take(&mut router, &mut refused, option, arg, &text)?;
    }
    if !refused.is_empty() {
        return Err(LlamaServerError::Unsupported(refused));
    }
    Ok(Parsed::Run(Box::new(router)))
}

impl Router {
    /// The config-key layer this command line gives, with the preset read
    /// now (again on every reload). Warnings: options that do nothing here.
    pub fn overrides(&self) -> Result<(Value, Vec<String>), ConfigError> {
        let mut keys = self.keys.clone();
        keys.entry("http_host")
            .or_insert_with(|| json!(DEFAULT_HOST));
        keys.entry("http_port")
            .or_insert_with(|| json!(DEFAULT_PORT));
        let mut warnings = self.ignored.clone();
        let (global, sections) = match &self.preset {
            Some(path) => {
                let p = preset::load(path)?;
                warnings.extend(p.warnings);
                (p.global, p.models)
            }
            None => Default::default(),
        };
        let defaults = llama_args::layer(&global, &self.models);
        let models: Map<String, Value> = sections
            .into_iter()
            .map(|(id, own)| {
                let table = llama_args::layer(&own, &self.models);
                (id, serde_json::to_value(table).unwrap_or(Value::Null))
            })
            .collect();
        keys.insert(
            "defaults".into(),
            serde_json::to_value(defaults).unwrap_or(Value::Null),
        );
        keys.insert("models".into(), Value::Object(models));
        Ok((Value::Object(keys), warnings))
    }

    /// The daemon's configuration: defaults < config file < `LLAMA_ROUTER_*`
    /// environment < this command line (and its preset).
    pub fn config(&self) -> Result<(Config, Vec<String>), ConfigError> {
        let (keys, warnings) = self.overrides()?;
        Ok((Config::load(None, keys)?, warnings))
    }
}

/// `llama-server --help`: what this mode takes.
pub fn help() -> String {
    let mut by_meaning: [Vec<String>; 4] = Default::default();
    for option in llama_args::options() {
        let names: Vec<String> = option
            .flags
            .iter()
            .map(|f| {
                if f.len() <= 3 {
                    format!("-{f}")
                } else {
                    format!("--{f}")
                }
            })
            .collect();
        let slot = match option.meaning {
            Meaning::Router(_) => 0,
            Meaning::Model { .. } => 1,
            Meaning::Harmless => 2,
            Meaning::Unsupported(_) => 3,
        };
        if let Some(list) = by_meaning.get_mut(slot) {
            list.push(names.join(", "));
        }
    }
    let [router, model, harmless, refused] = by_meaning;
    format!(
        "llama-router in llama-server mode: llama-server's router-mode flags, same meanings.\n\
         Serves HTTP on {DEFAULT_HOST}:{DEFAULT_PORT} unless --host/--port say otherwise.\n\n\
         router:\n  {}\n\nper-model defaults (also preset keys):\n  {}\n\n\
         accepted, no effect (one warning):\n  {}\n\nrefused with a reason:\n  {}\n\n\
         Any other llama-server flag is refused by name. See `llama-router serve --help` for everything else.\n",
        router.join("\n  "),
        model.join("\n  "),
        harmless.join("\n  "),
        refused.join("\n  "),
    )
}

#[cfg(test)]
mod tests;
