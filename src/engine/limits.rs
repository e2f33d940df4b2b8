//! Bounds on the counts a request names, checked by the daemon before a
//! model is leased (cheap, and a refused request never reaches a worker) and
//! again by the worker for what it alone knows (the context).

/// Most stop strings per request (OpenAI allows 4; llama.cpp clients send a few more).
pub const MAX_STOP_STRINGS: usize = 16;
/// Most bytes per stop string: every generated token is matched against
/// each stop's prefixes, so this bounds that work per token.
pub const MAX_STOP_BYTES: usize = 256;

/// Most messages per chat request (a long agent conversation has a few hundred).
pub const MAX_CHAT_MESSAGES: usize = 4096;
/// Most content blocks per message (text parts joined into one).
pub const MAX_CONTENT_BLOCKS: usize = 256;

/// Most tools per chat request, and most tool calls per message: each is
/// rendered into the prompt.
pub const MAX_TOOLS: usize = 128;

/// Most bytes of a request's grammar: llama.cpp parses it for the request
/// and walks its rules at every token.
pub const MAX_GRAMMAR_BYTES: usize = 64 * 1024;

/// A request past one of the bounds; the message names the bound and how to change it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Too many stop strings.
    #[error("{count} stop strings given; a request takes at most {MAX_STOP_STRINGS}")]
    TooManyStops {
        /// How many were given.
        count: usize,
    },
    /// A stop string is too long.
    #[error("a stop string of {len} bytes given; stop strings are at most {MAX_STOP_BYTES} bytes")]
    StopTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Too many messages in one conversation.
    #[error("{count} messages given; a request takes at most {MAX_CHAT_MESSAGES}")]
    TooManyMessages {
        /// How many were given.
        count: usize,
    },
    /// Too many content blocks in one message.
    #[error("{count} content blocks in one message; a message takes at most {MAX_CONTENT_BLOCKS}")]
    TooManyBlocks {
        /// How many were given.
        count: usize,
    },
    /// Too many tools, or tool calls in one message.
    #[error("{count} {what} given; a request takes at most {MAX_TOOLS}")]
    TooManyTools {
        /// How many were given.
        count: usize,
        /// `tools`, or `tool calls in one message`.
        what: &'static str,
    },
    /// The grammar is too long.
    #[error("a grammar of {len} bytes given; grammars are at most {MAX_GRAMMAR_BYTES} bytes")]
    GrammarTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Too many embedding inputs.
    #[error(
        "{count} inputs given; an embeddings request takes at most {max} (config key embed_max_inputs)"
    )]
    TooManyInputs {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The configurable bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Inputs per embeddings request (`embed_max_inputs`).
    pub embed_max_inputs: usize,
}

impl RequestLimits {
    /// An embeddings request's input count.
    pub fn check_embed(&self, inputs: usize) -> Result<(), LimitError> {
        if inputs > self.embed_max_inputs {
            return Err(LimitError::TooManyInputs {
                count: inputs,
                max: self.embed_max_inputs,
            });
        }
        Ok(())
    }
}

/// A conversation's message count.
pub fn check_messages(count: usize) -> Result<(), LimitError> {
    if count > MAX_CHAT_MESSAGES {
        return Err(LimitError::TooManyMessages { count });
    }
    Ok(())
}

/// One message's content block count.
pub fn check_blocks(count: usize) -> Result<(), LimitError> {
    if count > MAX_CONTENT_BLOCKS {
        return Err(LimitError::TooManyBlocks { count });
    }
    Ok(())
}

/// A chat request's tools, and the most tool calls one of its messages holds.
pub fn check_tools(tools: usize, most_calls: usize) -> Result<(), LimitError> {
    if tools > MAX_TOOLS {
        return Err(LimitError::TooManyTools {
            count: tools,
            what: "tools",
        });
    }
    if most_calls > MAX_TOOLS {
        return Err(LimitError::TooManyTools {
            count: most_calls,
            what: "tool calls in one message",
        });
    }
    Ok(())
}

/// A request's grammar, if any: how long.
pub fn check_grammar(grammar: Option<&str>) -> Result<(), LimitError> {
    match grammar {
        Some(g) if g.len() > MAX_GRAMMAR_BYTES => Err(LimitError::GrammarTooLong { len: g.len() }),
        _ => Ok(()),
    }
}

/// A request's stop strings: how many and how long.
pub fn check_stops(stops: &[String]) -> Result<(), LimitError> {
    if stops.len() > MAX_STOP_STRINGS {
        return Err(LimitError::TooManyStops { count: stops.len() });
    }
    match stops.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        Some(long) => Err(LimitError::StopTooLong { len: long.len() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_and_named() {
        let limits = RequestLimits {
            embed_max_inputs: 3,
        };
        assert!(limits.check_embed(3).is_ok());
        let e = limits.check_embed(4).unwrap_err();
        assert!(
            e.to_string()
                .contains("at most 3 (config key embed_max_inputs)")
        );
        assert!(check_stops(&vec!["x".to_owned(); MAX_STOP_STRINGS]).is_ok());
        let many = vec!["x".to_owned(); MAX_STOP_STRINGS + 1];
        assert!(matches!(
            check_stops(&many),
            Err(LimitError::TooManyStops { count: 17 })
        ));
        assert!(check_messages(MAX_CHAT_MESSAGES).is_ok());
        assert!(check_messages(MAX_CHAT_MESSAGES + 1).is_err());
        assert!(check_blocks(MAX_CONTENT_BLOCKS).is_ok());
        assert!(check_blocks(MAX_CONTENT_BLOCKS + 1).is_err());
        assert!(check_tools(MAX_TOOLS, MAX_TOOLS).is_ok());
        assert!(check_tools(MAX_TOOLS + 1, 0).is_err());
        assert!(
            check_tools(1, MAX_TOOLS + 1)
                .unwrap_err()
                .to_string()
                .contains("tool calls in one message")
        );
        assert!(check_grammar(Some("root ::= \"a\"")).is_ok());
        assert!(check_grammar(Some(&"a".repeat(MAX_GRAMMAR_BYTES + 1))).is_err());
        let long = vec!["y".repeat(MAX_STOP_BYTES + 1)];
        assert!(matches!(
            check_stops(&long),
            Err(LimitError::StopTooLong { len: 257 })
        ));
    }
}
