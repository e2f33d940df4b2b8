//! Chat prompts: a Jinja chat template (the model's own GGUF
//! `tokenizer.chat_template`, a configured file or a built-in from
//! [`super::templates`]) rendered with minijinja, as Hugging Face does.

use minijinja::{Environment, ErrorKind, Value, context};

use super::tools::Tool;

/// Rendering budget: a template comes from a model file and must not spin forever.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// system, user, assistant, tool...
    pub role: String,
    /// The text.
    pub content: String,
    /// An assistant turn's calls.
    pub tool_calls: Vec<ToolCall>,
    /// A tool turn: the call it answers.
    pub tool_call_id: String,
    /// A tool turn: the tool's name.
    pub name: String,
}

impl Message {
    /// A plain text turn.
    pub fn text(role: &str, content: String) -> Self {
        Message {
            role: role.to_owned(),
            content,
            ..Message::default()
        }
    }

    /// Hugging Face's shape of the message, which templates read.
    fn to_value(&self) -> Value {
        use serde_json::Value as Json;
        let mut m = serde_json::Map::new();
        m.insert("role".into(), self.role.clone().into());
        m.insert("content".into(), self.content.clone().into());
        if !self.tool_calls.is_empty() {
            let calls: Vec<Json> = self
                .tool_calls
                .iter()
                .map(|c| {
                    // Templates write the arguments with `| tojson`: an object.
                    serde_json::json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments_json()},
                    })
                })
                .collect();
            m.insert("tool_calls".into(), calls.into());
        }
        if !self.tool_call_id.is_empty() {
            m.insert("tool_call_id".into(), self.tool_call_id.clone().into());
        }
        if !self.name.is_empty() {
            m.insert("name".into(), self.name.clone().into());
        }
        Value::from(minijinja::value::Serde(m))
    }
}

/// One call of a tool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCall {
    /// Its id (`call_...`).
    pub id: String,
    /// The tool.
    pub name: String,
    /// The arguments, JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// The arguments as JSON (an object), or as a string when they are not JSON.
    pub fn arguments_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(self.arguments.clone()))
    }
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
        self.render_with_tools(messages, &[])
    }

    /// Likewise, with `tools` in the template's `tools` variable (as
    /// Hugging Face passes them; unset when there are none). A conversation
    /// that ends with an assistant turn (of text) is a prefill, as in
    /// llama-server and Anthropic's API: the turns before it are rendered
    /// up to where the answer starts, then its text, which the answer continues.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: &[Tool],
    ) -> Result<String, ChatError> {
        let (messages, prefill) = match messages.split_last() {
            None => return Err(ChatError::NoMessages),
            Some((last, rest))
                if last.role == "assistant" && last.tool_calls.is_empty() && !rest.is_empty() =>
            {
                (rest, last.content.as_str())
            }
            Some(_) => (messages, ""),
        };
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| ChatError::Template(describe(&e)))?;
        let messages: Vec<Value> = messages.iter().map(Message::to_value).collect();
        let tools: Option<Vec<Value>> = (!tools.is_empty()).then(|| {
            tools
                .iter()
                .map(|t| Value::from(minijinja::value::Serde(t.to_openai())))
                .collect()
        });
        template
            .render(context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => true,
                bos_token => self.bos_token.clone(),
                eos_token => self.eos_token.clone(),
            })
            .map(|prompt| prompt + prefill)
            .map_err(|e| ChatError::Template(describe(&e)))
    }

    /// Whether the template renders tools itself: a probe tool's name shows
    /// in its prompt (as llama.cpp detects it).
    pub fn renders_tools(&self) -> bool {
        const PROBE: &str = "llama_router_probe_tool";
        let tool = Tool {
            name: PROBE.into(),
            description: "probe".into(),
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        };
        self.render_with_tools(&[Message::text("user", "hi".into())], &[tool])
            .is_ok_and(|prompt| prompt.contains(PROBE))
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
        Message::text(role, content.into())
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
    fn a_last_assistant_turn_is_a_prefill_the_answer_continues() {
        let t = ChatTemplate::new(GEMMA3, "<bos>".into(), "<eos>".into()).unwrap();
        let prompt = t
            .render(&[msg("user", "Colour?"), msg("assistant", "My favourite is")])
            .unwrap();
        assert_eq!(
            prompt,
            "<bos><start_of_turn>user\nColour?<end_of_turn>\n<start_of_turn>model\nMy favourite is"
        );
        // A lone assistant turn is no prefill: the template gets it as it is.
        assert!(
            t.render(&[msg("assistant", "x")]).is_err(),
            "Gemma insists on a user turn first"
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
