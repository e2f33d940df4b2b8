//! Constrained decoding: a request's GBNF grammar (llama.cpp's format, start
//! rule `root`) compiled into llama.cpp's grammar sampler, which masks every
//! token that could not continue a match; the grammar of a JSON object,
//! which `response_format: {"type": "json_object"}` asks for; and the grammar
//! of a JSON schema, by llama.cpp's own converter (`json_schema`).

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

use super::EngineError;

/// One JSON object (RFC 8259), with at most 8 whitespace characters in a
/// row so that a model cannot pad forever; written for llama-router after
/// RFC 8259's grammar. Once the object closes only end-of-generation may
/// follow.
pub const JSON_OBJECT: &str = r#"root   ::= object
value  ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( member ( "," ws member )* )? "}"
member ::= string ws ":" ws value ws
array  ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" char* "\""
char   ::= [^"\\\x00-\x1F\x7F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,4} )?
ws     ::= [ \t\n]{0,8}
"#;

/// Deepest nesting of a JSON schema given to the converter: it recurses on
/// the worker's stack.
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// The GBNF grammar of `schema` (JSON text), by llama.cpp's
/// `json_schema_to_grammar`; a schema that is not JSON, nests too deep or
/// that llama.cpp cannot convert is the client's error.
pub fn from_json_schema(schema: &str) -> Result<String, EngineError> {
    let bad = |why: String| EngineError::InvalidRequest(format!("json_schema: {why}"));
    let value: serde_json::Value =
        serde_json::from_str(schema).map_err(|e| bad(format!("not JSON: {e}")))?;
    if !(value.is_object() || value.is_boolean()) {
        return Err(bad("a schema is a JSON object (or true/false)".into()));
    }
    let depth = nesting(&value);
    if depth > MAX_SCHEMA_DEPTH {
        return Err(bad(format!(
            "nested {depth} deep; at most {MAX_SCHEMA_DEPTH}"
        )));
    }
    llama_cpp_2::json_schema_to_grammar(schema)
        .map_err(|e| bad(format!("llama.cpp cannot turn it into a grammar ({e})")))
}

/// How deeply `value` nests (serde_json's parser already stops at 128).
fn nesting(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        serde_json::Value::Object(fields) => 1 + fields.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// Compiles `grammar` for `model`'s vocabulary; a grammar llama.cpp cannot
/// parse (or without a `root` rule) is the client's error.
pub fn compile(model: &LlamaModel, grammar: &str) -> Result<LlamaSampler, EngineError> {
    LlamaSampler::grammar(model, grammar, "root").map_err(|e| {
        EngineError::InvalidRequest(format!(
            "the grammar is not valid GBNF with a `root` rule ({e}; the worker's log says where)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_schema_becomes_llama_cpps_grammar_and_a_bad_one_is_the_clients_error() {
        let gbnf = from_json_schema(
            r#"{"type":"object","properties":{"age":{"type":"integer"}},"required":["age"]}"#,
        )
        .unwrap();
        assert!(gbnf.contains("root ::=") && gbnf.contains("age"), "{gbnf}");
        let deep = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
        for bad in ["not json", "[1, 2]", deep.as_str()] {
            assert!(
                matches!(from_json_schema(bad), Err(EngineError::InvalidRequest(_))),
                "{bad}"
            );
        }
        assert!(from_json_schema(r#"{"type": "nonsense-type"}"#).is_err());
    }
}
