//! llama-server's model preset files (`--models-preset FILE`, version 1):
//! an INI file whose `[*]` section holds settings for every model and whose
//! other sections are keyed by model id. Keys are llama-server's flag names
//! without dashes (long or short) or its `LLAMA_ARG_*` names, plus the
//! preset-only `load-on-startup` and `stop-timeout`; [`super::llama_args`]
//! maps each onto one of our settings. An unknown key is an error naming
//! its section and key; router-wide and harmless keys are warnings (as
//! llama-server drops them too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ModelSettings;
use super::llama_args::{self, Meaning, ValueError};

/// The largest preset file read, in bytes.
pub const MAX_PRESET_BYTES: u64 = 1 << 20;
/// The most sections one preset file may have.
pub const MAX_SECTIONS: usize = 4096;
/// The section every model gets.
pub const GLOBAL: &str = "*";

/// A preset file, read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preset {
    /// The `[*]` section.
    pub global: ModelSettings,
    /// The other sections, by model id.
    pub models: BTreeMap<String, ModelSettings>,
    /// Keys that were accepted but do nothing here, as `[section] key: why`.
    pub warnings: Vec<String>,
}

/// Why a preset file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// It could not be read.
    #[error("preset {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is larger than [`MAX_PRESET_BYTES`].
    #[error("preset {}: {size} bytes; at most {MAX_PRESET_BYTES} are read", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A line is neither a section, a key, a comment nor blank.
    #[error("preset {}: line {line}: {problem}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A key llama-server does not have, or one we refuse.
    #[error("preset {}: [{section}] {key}: {problem}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// Unknown, or why it is not supported.
        problem: String,
    },
    /// A value the key's setting cannot take.
    #[error("preset {}: [{section}] {source}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The section.
        section: String,
        /// The key, value and problem.
        source: ValueError,
    },
}

/// Reads and parses the preset file at `path`.
pub fn load(path: &Path) -> Result<Preset, PresetError> {
    let read = |source| PresetError::Read {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_PRESET_BYTES {
        return Err(PresetError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse(&text, path)
}

/// A line without its comment (`;` or `#` after blanks, or at its start) and outer blanks.
fn strip(line: &str) -> &str {
    let mut end = line.len();
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let starts_comment = matches!(b, b';' | b'#')
            && (i == 0 || bytes.get(i - 1).is_some_and(|p| p.is_ascii_whitespace()));
        if starts_comment {
            end = i;
            break;
        }
    }
    line.get(..end).unwrap_or(line).trim()
}

/// Parses a preset file's text (`path` is for messages).
pub fn parse(text: &str, path: &Path) -> Result<Preset, PresetError> {
    let syntax = |line: usize, problem: &str| PresetError::Syntax {
        path: path.to_owned(),
        line,
        problem: problem.to_owned(),
    };
    let mut preset = Preset::default();
    let mut section: Option<String> = None;
    let mut sections = 0usize;
    for (index, raw) in text.lines().enumerate() {
        let number = index.saturating_add(1);
        let line = strip(raw);
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| syntax(number, "a section is [NAME]"))?;
            sections = sections.saturating_add(1);
            if sections > MAX_SECTIONS {
                return Err(syntax(number, "too many sections"));
            }
            section = Some(name.to_owned());
            if name != GLOBAL {
                preset.models.entry(name.to_owned()).or_default();
            }
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| syntax(number, "expected KEY = VALUE, [SECTION] or a comment"))?;
        if key == "version" {
            if value != "1" {
                return Err(syntax(number, "only preset version 1 is known"));
            }
            continue;
        }
        let Some(name) = section.clone() else {
            return Err(syntax(
                number,
                "a key before any [SECTION] (use [*] for every model)",
            ));
        };
        let target = if name == GLOBAL {
            &mut preset.global
        } else {
            preset.models.entry(name.clone()).or_default()
        };
        let key_error = |problem: String| PresetError::Key {
            path: path.to_owned(),
            section: name.clone(),
            key: key.to_owned(),
            problem,
        };
        let option = llama_args::find(key).ok_or_else(|| key_error("unknown key".into()))?;
        match option.meaning {
            Meaning::Model { key: setting, kind } => {
                llama_args::apply(target, key, setting, kind, value).map_err(|source| {
                    PresetError::Value {
                        path: path.to_owned(),
                        section: name.clone(),
                        source,
                    }
                })?;
            }
            Meaning::Router(_) => preset.warnings.push(format!(
                "[{name}] {key}: applies to the whole router (set it on the command line); ignored here"
            )),
            Meaning::Harmless => preset
                .warnings
                .push(format!("[{name}] {key}: has no effect in llama-router")),
            Meaning::Unsupported(why) => return Err(key_error(format!("not supported: {why}"))),
        }
    }
    Ok(preset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{FlashAttn, GpuLayers};

    fn parse_str(text: &str) -> Result<Preset, PresetError> {
        parse(text, Path::new("p.ini"))
    }

    #[test]
    fn sections_map_onto_model_tables_with_every_spelling() {
        let p = parse_str(
            "version = 1\n; a comment\n[*]\nc = 8192\nn-gpu-layers = 8 ; trailing\n\n\
             [gemma]\nctx-size = 4096\nLLAMA_ARG_N_PARALLEL = 2\nfa = on\nmlock = true\n\
             chat-template = chatml\nload-on-startup = true\nstop-timeout = 3\ntemp = 0.5\n\
             alias = g, small\njinja = true\n",
        )
        .unwrap();
        assert_eq!(p.global.params.ctx_size, Some(8192));
        assert_eq!(p.global.params.gpu_layers, Some(GpuLayers::Count(8)));
        let g = &p.models["gemma"];
        assert_eq!(
            (g.params.ctx_size, g.params.parallel),
            (Some(4096), Some(2))
        );
        assert_eq!(g.params.flash_attn, Some(FlashAttn::On));
        assert_eq!(
            (g.mlock, g.load_on_startup, g.stop_timeout),
            (Some(true), Some(true), Some(3))
        );
        assert_eq!(g.chat_template, Some(PathBuf::from("chatml")));
        assert_eq!(g.sampling.temperature, Some(0.5));
        assert_eq!(g.aliases, vec!["g", "small"]);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }

    #[test]
    fn unknown_and_unsupported_keys_name_section_and_key() {
        let err = parse_str("[m]\nctx-sise = 1\n").unwrap_err().to_string();
        assert!(
            err.contains("[m] ctx-sise") && err.contains("unknown"),
            "{err}"
        );
        let err = parse_str("[m]\nmodel = /x.gguf\n").unwrap_err().to_string();
        assert!(
            err.contains("[m] model") && err.contains("--models-dir"),
            "{err}"
        );
        let err = parse_str("[m]\nctk = bf16\n").unwrap_err().to_string();
        assert!(err.contains("[m] ctk") && err.contains("bf16"), "{err}");
        let err = parse_str("c = 1\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(parse_str("version = 2\n").is_err());
        assert!(parse_str("[m\n").is_err());
        assert!(parse_str("[m]\njunk\n").is_err());
    }

    #[test]
    fn router_keys_are_warnings_and_minus_one_means_default() {
        let p = parse_str("[*]\nport = 1\nnp = -1\nsleep-idle-seconds = -1\n").unwrap();
        assert_eq!(p.global.params.parallel, None);
        assert_eq!(p.global.idle_ttl, Some(0));
        assert!(p.warnings[0].contains("[*] port"), "{:?}", p.warnings);
    }
}
