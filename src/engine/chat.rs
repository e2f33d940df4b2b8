//! Chat prompts: a Jinja chat template (the model's own GGUF
//! `tokenizer.chat_template`, a configured file or a built-in from
//! [`super::templates`]) rendered with minijinja, as Hugging Face does.

use minijinja::{Environment, ErrorKind, context};

/// Rendering budget: a template comes from a model file and must not spin forever.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// system, user, assistant...
    pub role: String,
    /// The text.
    pub content: String,
}

/// Why a chat prompt could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The request has no messages.
    #[error("a chat request needs at least one message")]
    NoMessages,
    /// The template is not valid Jinja, or raised an error for these messages.
    #[error("the model's chat template failed: {0}")]
    Template(String),
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the model's special tokens as text.
    pub fn new(source: &str, bos_token: String, eos_token: String) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(TEMPLATE_FUEL));
        // Hugging Face templates call raise_exception("...") to refuse a conversation.
        env.add_function("raise_exception", |message: String| -> Result<String, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| ChatError::Template(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    /// The prompt for `messages`, ending where the assistant's answer starts.
    pub fn render(&self, messages: &[Message]) -> Result<String, ChatError> {
        if messages.is_empty() {
            return Err(ChatError::NoMessages);
        }
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| ChatError::Template(describe(&e)))?;
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| context! { role => m.role.clone(), content => m.content.clone() })
            .collect();
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token.clone(),
                eos_token => self.eos_token.clone(),
            })
            .map_err(|e| ChatError::Template(describe(&e)))
    }
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) if e.kind() == ErrorKind::InvalidOperation => detail.to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemma 3's template as published with the model (trimmed of nothing).
    const GEMMA3: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}{%- endif -%}{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}{%- if message['content'] is string -%}{{ message['content'] | trim }}{%- endif -%}{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}";

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn gemma3_template_renders_system_and_turns() {
        let t = ChatTemplate::new(GEMMA3, "<bos>".into(), "<eos>".into()).unwrap();
        let prompt = t
            .render(&[msg("system", "Be brief."), msg("user", " Hi there ")])
            .unwrap();
        assert_eq!(
            prompt,
            "<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(CHATML, String::new(), String::new()).unwrap();
        let prompt = t.render(&[msg("user", "  hello  ")]).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_becomes_a_clear_error() {
        let t = ChatTemplate::new(GEMMA3, "<bos>".into(), "<eos>".into()).unwrap();
        let err = t.render(&[msg("user", "a"), msg("user", "b")]).unwrap_err();
        assert_eq!(
            err,
            ChatError::Template(
                "Conversation roles must alternate user/assistant/user/assistant/...".into()
            )
        );
    }

    #[test]
    fn broken_and_endless_templates_fail_cleanly() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", String::new(), String::new()),
            Err(ChatError::Template(_))
        ));
        let endless =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(endless, String::new(), String::new()).unwrap();
        assert!(matches!(
            t.render(&[msg("user", "a")]),
            Err(ChatError::Template(_))
        ));
        assert_eq!(t.render(&[]), Err(ChatError::NoMessages));
    }
}
