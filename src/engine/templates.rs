//! Built-in chat templates: the ones a per-model `chat_template` (or
//! llama-server's `--chat-template NAME`) may name instead of a file, and
//! ChatML, the fallback for a model that carries no template (as
//! llama-server falls back). Each is Jinja in Hugging Face's dialect,
//! rendered by [`super::chat::ChatTemplate`] like a model's own.

/// ChatML (`<|im_start|>role ... <|im_end|>`): the fallback.
pub const CHATML: &str = "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}";

/// Llama 3 and 3.x.
const LLAMA3: &str = "{{- bos_token -}}{%- for message in messages -%}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}";

/// Gemma 1 to 3 (a system message joins the first user turn).
const GEMMA: &str = "{{- bos_token -}}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{- '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}";

/// Mistral v7 (`[SYSTEM_PROMPT]`, `[INST]`).
const MISTRAL_V7: &str = "{{- bos_token -}}{%- for message in messages -%}{%- if message['role'] == 'system' -%}{{- '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' -}}{%- elif message['role'] == 'user' -%}{{- '[INST]' + message['content'] + '[/INST]' -}}{%- else -%}{{- message['content'] + eos_token -}}{%- endif -%}{%- endfor -%}";

/// Phi 3.
const PHI3: &str = "{%- for message in messages -%}{{- '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}";

/// Zephyr.
const ZEPHYR: &str = "{%- for message in messages -%}{{- '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}";

/// Every built-in template by llama.cpp's name for it.
pub const BUILTIN: &[(&str, &str)] = &[
    ("chatml", CHATML),
    ("llama3", LLAMA3),
    ("gemma", GEMMA),
    ("mistral-v7", MISTRAL_V7),
    ("phi3", PHI3),
    ("zephyr", ZEPHYR),
];

/// The built-in template named `name`, if there is one.
pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, source)| *source)
}

/// The names of the built-ins, for messages: `chatml, llama3, ...`.
pub fn names() -> String {
    BUILTIN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::chat::{ChatTemplate, Message};
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message::text(role, content.into())
    }

    #[test]
    fn every_builtin_compiles_and_renders_a_conversation() {
        for (name, source) in BUILTIN {
            let t = ChatTemplate::new(source, "<s>".into(), "</s>".into()).unwrap();
            let prompt = t
                .render(&[msg("system", "S"), msg("user", "U"), msg("assistant", "A")])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                prompt.contains('U') && prompt.contains('A'),
                "{name}: {prompt}"
            );
        }
        assert_eq!(builtin("nope"), None);
    }

    #[test]
    fn chatml_is_what_llama_server_falls_back_to() {
        let t = ChatTemplate::new(CHATML, String::new(), String::new()).unwrap();
        assert_eq!(
            t.render(&[msg("user", "hi")]).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
