//! Constrained decoding: a request's GBNF grammar (llama.cpp's format, start
//! rule `root`) compiled into llama.cpp's grammar sampler, which masks every
//! token that could not continue a match; and the grammar of a JSON object,
//! which `response_format: {"type": "json_object"}` asks for.

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

/// Compiles `grammar` for `model`'s vocabulary; a grammar llama.cpp cannot
/// parse (or without a `root` rule) is the client's error.
pub fn compile(model: &LlamaModel, grammar: &str) -> Result<LlamaSampler, EngineError> {
    LlamaSampler::grammar(model, grammar, "root").map_err(|e| {
        EngineError::InvalidRequest(format!(
            "the grammar is not valid GBNF with a `root` rule ({e}; the worker's log says where)"
        ))
    })
}
