use serde_json::json;

use super::parse::{Holdback, parse};
use super::*;
use crate::engine::chat::ChatTemplate;
use crate::engine::limits::MAX_TOOLS;
use crate::engine::templates::CHATML;

fn weather() -> Tool {
    Tool {
        name: "get_weather".into(),
        description: "The weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

fn time() -> Tool {
    Tool {
        name: "get_time".into(),
        description: String::new(),
        parameters: json!({"type": "object"}),
    }
}

const NAMES: [&str; 2] = ["get_weather", "get_time"];

/// A Qwen 2.5-like template: tools in the system turn, calls as Hermes blocks.
const HERMES: &str = "{%- if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools><|im_end|>\n{%- endif %}{%- for m in messages %}{%- if m.role == 'tool' %}<|im_start|>user\n<tool_response>{{ m.content }}</tool_response><|im_end|>\n{%- elif m.tool_calls %}<|im_start|>assistant\n{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}<|im_end|>\n{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}";

/// An assistant turn that called get_weather for Oslo.
fn oslo_call() -> Message {
    Message {
        role: "assistant".into(),
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        }],
        ..Message::default()
    }
}

#[test]
fn requests_with_bad_tools_are_refused_by_name() {
    assert_eq!(check(&[weather(), time()], &Choice::Required), Ok(()));
    let mut bad = weather();
    bad.name = "get weather".into();
    assert_eq!(
        check(&[bad], &Choice::Auto),
        Err(ToolError::BadName("get weather".into()))
    );
    assert_eq!(
        check(&[weather(), weather()], &Choice::Auto),
        Err(ToolError::Duplicate("get_weather".into()))
    );
    let mut no_schema = time();
    no_schema.parameters = json!("object");
    assert!(matches!(
        check(&[no_schema], &Choice::Auto),
        Err(ToolError::BadParameters(_))
    ));
    assert_eq!(
        check(&[weather()], &Choice::Named("nope".into())),
        Err(ToolError::UnknownChoice("nope".into()))
    );
    assert_eq!(check(&[], &Choice::Required), Err(ToolError::NoTools));
    let many = vec![time(); MAX_TOOLS + 1];
    assert_eq!(
        check(&many, &Choice::Auto),
        Err(ToolError::TooMany(MAX_TOOLS + 1))
    );
}

#[test]
fn required_calls_are_held_to_the_tools_schemas() {
    let tools = [weather(), time()];
    assert_eq!(answer_schema(Style::Native, &tools, &Choice::Auto), None);
    let named = answer_schema(Style::Native, &tools, &Choice::Named("get_weather".into())).unwrap();
    assert_eq!(named["properties"]["name"]["const"], "get_weather");
    assert_eq!(named["properties"]["arguments"], weather().parameters);
    // The name comes before the arguments, so the model picks the tool first.
    let keys: Vec<_> = named["properties"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "arguments"]);
    let any = answer_schema(Style::Native, &tools, &Choice::Required).unwrap();
    assert_eq!(any["anyOf"].as_array().unwrap().len(), 2);
    let generic = answer_schema(Style::Generic, &tools, &Choice::Auto).unwrap();
    assert_eq!(generic["anyOf"][1]["required"], json!(["response"]));
    assert_eq!(
        generic["anyOf"][0]["properties"]["tool_call"]["anyOf"][0]["properties"]["name"]["const"],
        "get_weather"
    );
    let generic_required = answer_schema(Style::Generic, &tools, &Choice::Required).unwrap();
    assert_eq!(generic_required["required"], json!(["tool_call"]));
}

#[test]
fn a_template_without_tools_gets_them_in_a_system_prompt_and_tool_turns_as_user_turns() {
    let history = [
        Message::text("system", "Be brief.".into()),
        Message::text("user", "Weather in Oslo?".into()),
        oslo_call(),
        Message {
            role: "tool".into(),
            content: "-3 C, snow".into(),
            tool_call_id: "call_1".into(),
            name: "get_weather".into(),
            ..Message::default()
        },
    ];
    let tools = [weather()];
    let out = generic_messages(&history, Some((&tools, &Choice::Auto)));
    let roles: Vec<_> = out.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert!(out[0].content.contains("get_weather") && out[0].content.ends_with("Be brief."));
    assert!(out[0].content.contains("`response`"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out[2].content).unwrap(),
        json!({"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "call_1"}})
    );
    assert!(out[3].content.contains("tool_response") && out[3].content.contains("-3 C, snow"));
    // Gemma insists on alternating turns: it renders this conversation.
    let gemma = ChatTemplate::new(
        crate::engine::templates::builtin("gemma").unwrap(),
        String::new(),
        String::new(),
    )
    .unwrap();
    assert!(!gemma.renders_tools());
    let prompt = gemma.render(&out).unwrap();
    assert!(prompt.contains("-3 C, snow"), "{prompt}");
    // Without tools offered, history is still written so the template takes it.
    assert_eq!(generic_messages(&history, None).len(), 4);
}

#[test]
fn a_template_that_renders_tools_gets_them_and_the_calls_natively() {
    let t = ChatTemplate::new(HERMES, String::new(), String::new()).unwrap();
    assert!(t.renders_tools());
    assert!(
        !ChatTemplate::new(CHATML, String::new(), String::new())
            .unwrap()
            .renders_tools()
    );
    let history = [
        Message::text("user", "Weather in Oslo?".into()),
        oslo_call(),
        Message {
            role: "tool".into(),
            content: "-3 C".into(),
            ..Message::default()
        },
    ];
    let prompt = t.render_with_tools(&history, &[weather()]).unwrap();
    // minijinja's tojson writes JSON as Python's json.dumps does, in order.
    assert!(
        prompt.contains(r#"<tools>{"type": "function", "function": {"name": "get_weather""#),
        "{prompt}"
    );
    assert!(
        prompt.contains(
            r#"<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>"#
        ),
        "{prompt}"
    );
    assert!(
        prompt.contains("<tool_response>-3 C</tool_response>"),
        "{prompt}"
    );
}

#[test]
fn calls_are_found_in_every_family_and_only_for_offered_tools() {
    let one = |text: &str, style| parse(text, style, &NAMES);
    let hermes = one(
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
        Style::Native,
    );
    assert_eq!(hermes.content, "Let me check.");
    assert_eq!(hermes.calls.len(), 1);
    assert_eq!(hermes.calls[0].name, "get_weather");
    assert_eq!(hermes.calls[0].arguments, r#"{"city":"Oslo"}"#);
    assert!(hermes.calls[0].id.starts_with("call_"));
    let two = one(
        "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}",
        Style::Native,
    );
    assert_eq!(two.calls.len(), 2);
    assert_ne!(two.calls[0].id, two.calls[1].id);
    let mistral = one(
        "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}]",
        Style::Native,
    );
    assert_eq!(mistral.calls.len(), 1);
    let llama = one(
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
        Style::Native,
    );
    assert_eq!(llama.calls[0].arguments, r#"{"city":"Oslo"}"#);
    let tagged = one(
        "<|python_tag|>{\"name\": \"get_time\", \"parameters\": {}}; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
        Style::Native,
    );
    assert_eq!(tagged.calls.len(), 2);
    let generic = one(
        "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}}",
        Style::Generic,
    );
    assert_eq!(generic.calls.len(), 1);
    let response = one("{\"response\": \"It is sunny.\"}", Style::Generic);
    assert_eq!(
        response,
        Parsed {
            content: "It is sunny.".into(),
            calls: vec![]
        }
    );
    // Not offered, not JSON, or prose: text, untouched.
    // Arguments written as a JSON string are taken when they hold an object.
    let as_string = one(
        "{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Oslo\\\"}\"}",
        Style::Native,
    );
    assert_eq!(as_string.calls[0].arguments, r#"{"city":"Oslo"}"#);
    for text in [
        "{\"name\": \"get_weather\", \"arguments\": \"Oslo\"}",
        "{\"name\": \"get_weather\", \"arguments\": [1, 2]}",
        "{\"name\": \"rm_rf\", \"arguments\": {}}",
        "<tool_call>{not json}</tool_call>",
        "The answer is 42.",
        "{\"name\": \"Bob\"}",
    ] {
        assert_eq!(
            one(text, Style::Native),
            Parsed {
                content: text.into(),
                calls: vec![]
            }
        );
    }
    // `response` means something only in the generic style.
    assert_eq!(
        one("{\"response\": \"x\"}", Style::Native).content,
        "{\"response\": \"x\"}"
    );
}

use super::parse::Parsed;

/// Feeds `pieces` through a hold-back: what went out while streaming, and the end.
fn stream(pieces: &[&str], style: Style, choice: &Choice) -> (String, Parsed) {
    let mut h = Holdback::new(style, choice, NAMES.iter().map(|n| n.to_string()).collect());
    let sent: String = pieces.iter().map(|p| h.push(p)).collect();
    (sent, h.finish())
}

#[test]
fn a_stream_sends_text_until_a_call_may_start_and_holds_the_rest() {
    let (sent, end) = stream(
        &[
            "Let me ",
            "check.",
            "\n<tool",
            "_call>{\"name\": \"get_time\",",
            " \"arguments\": {}}</tool_call>",
        ],
        Style::Native,
        &Choice::Auto,
    );
    assert_eq!(sent, "Let me check.\n");
    assert_eq!(end.calls.len(), 1);
    assert_eq!(end.content, "");
    // A marker's prefix that turns out to be text goes out in the end.
    let (sent, end) = stream(&["a <tool", "box> b"], Style::Native, &Choice::Auto);
    assert_eq!(format!("{sent}{}", end.content), "a <toolbox> b");
    assert!(end.calls.is_empty());
    // A bare JSON answer may be a Llama 3.x call: held to the end.
    let (sent, end) = stream(
        &[
            " {\"name\": \"get_weather\",",
            " \"parameters\": {\"city\": \"Oslo\"}}",
        ],
        Style::Native,
        &Choice::Auto,
    );
    assert_eq!((sent.as_str(), end.calls.len()), ("", 1));
    // JSON that is not a call is still all there.
    let (sent, end) = stream(&["[1, ", "2]"], Style::Native, &Choice::Auto);
    assert_eq!(format!("{sent}{}", end.content), "[1, 2]");
    // Plain text streams as it comes.
    let (sent, end) = stream(&["Hello", " world"], Style::Native, &Choice::Auto);
    assert_eq!((sent.as_str(), end.content.as_str()), ("Hello world", ""));
    // Constrained answers (generic, or a call required) come at the end.
    let (sent, end) = stream(
        &["{\"response\": ", "\"hi\"}"],
        Style::Generic,
        &Choice::Auto,
    );
    assert_eq!((sent.as_str(), end.content.as_str()), ("", "hi"));
    let (sent, end) = stream(
        &["{\"name\": \"get_time\", \"arguments\": {}}"],
        Style::Native,
        &Choice::Required,
    );
    assert_eq!((sent.as_str(), end.calls.len()), ("", 1));
}
