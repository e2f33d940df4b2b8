//! Turns a stream of token bytes into text a client may see: whole UTF-8
//! characters only, and never any part of a stop string.

/// What one push released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Text to send; generation goes on.
    Text(String),
    /// A stop string was reached: send this text (what came before it) and stop.
    Stopped(String),
}

/// Incremental detokenizer with stop strings.
#[derive(Debug, Default)]
pub struct TextStream {
    /// Bytes of an incomplete UTF-8 sequence.
    partial: Vec<u8>,
    /// Decoded text held back because it could be the start of a stop string.
    held: String,
    stops: Vec<String>,
    /// The stop string that ended the stream, once one did.
    hit: Option<String>,
}

impl TextStream {
    /// A stream that stops before any of `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        TextStream {
            partial: Vec::new(),
            held: String::new(),
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            hit: None,
        }
    }

    /// Adds one token's bytes; returns the text that is now safe to send.
    pub fn push(&mut self, bytes: &[u8]) -> Released {
        self.partial.extend_from_slice(bytes);
        let decoded = take_utf8(&mut self.partial);
        self.held.push_str(&decoded);
        if let Some((at, stop)) = self.first_stop() {
            self.hit = Some(stop);
            let before = self.held.get(..at).unwrap_or_default().to_owned();
            self.held.clear();
            self.partial.clear();
            return Released::Stopped(before);
        }
        let keep = self.stop_prefix_len();
        let cut = self.held.len().saturating_sub(keep);
        let rest = self.held.split_off(cut);
        Released::Text(std::mem::replace(&mut self.held, rest))
    }

    /// The generation ended: whatever is held back is released (broken UTF-8 replaced).
    pub fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial)));
        text
    }

    /// The stop string that ended the stream (after `push` returned `Stopped`).
    pub fn hit(&self) -> Option<&str> {
        self.hit.as_deref()
    }

    /// Where the earliest stop string starts in the held text, and which it is.
    fn first_stop(&self) -> Option<(usize, String)> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at)
            .map(|(at, s)| (at, s.clone()))
    }

    /// Length of the longest tail of the held text that begins some stop string.
    fn stop_prefix_len(&self) -> usize {
        let mut longest = 0;
        for stop in &self.stops {
            for (k, _) in stop.char_indices().skip(1) {
                if k > longest && stop.get(..k).is_some_and(|p| self.held.ends_with(p)) {
                    longest = k;
                }
            }
        }
        longest
    }
}

/// Decodes the complete UTF-8 prefix of `buf`, leaving an incomplete trailing
/// sequence in it; invalid bytes become U+FFFD.
fn take_utf8(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(buf) {
            Ok(s) => {
                out.push_str(s);
                buf.clear();
                return out;
            }
            Err(e) => {
                let (valid, rest) = buf.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(valid));
                match e.error_len() {
                    // An incomplete sequence at the end: wait for more bytes.
                    None => {
                        *buf = rest.to_vec();
                        return out;
                    }
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        *buf = rest.get(bad..).unwrap_or_default().to_vec();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(stream: &mut TextStream, pieces: &[&[u8]]) -> Vec<Released> {
        pieces.iter().map(|p| stream.push(p)).collect()
    }

    #[test]
    fn plain_text_passes_through() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.push(b"Hello"), Released::Text("Hello".into()));
        assert_eq!(s.push(b" world"), Released::Text(" world".into()));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn multibyte_characters_split_across_tokens_are_held_until_whole() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut s = TextStream::new(vec![]);
        let out = texts(&mut s, &[&euro[..1], &euro[1..2], &euro[2..]]);
        assert_eq!(
            out,
            vec![
                Released::Text(String::new()),
                Released::Text(String::new()),
                Released::Text("€".into())
            ]
        );
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.push(b"a\xffb"), Released::Text("a\u{fffd}b".into()));
        assert_eq!(s.push(b"\xe2\x82"), Released::Text(String::new()));
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn a_stop_string_never_leaks_even_split_across_tokens() {
        let mut s = TextStream::new(vec!["</end>".into()]);
        let out = texts(&mut s, &[b"answer is 4", b" <", b"/en", b"d> more"]);
        assert_eq!(
            out,
            vec![
                Released::Text("answer is 4".into()),
                Released::Text(" ".into()),
                Released::Text(String::new()),
                Released::Stopped(String::new()),
            ]
        );
    }

    #[test]
    fn held_text_that_turns_out_not_to_stop_is_released() {
        let mut s = TextStream::new(vec!["STOP".into()]);
        assert_eq!(s.push(b"a ST"), Released::Text("a ".into()));
        assert_eq!(s.push(b"AY"), Released::Text("STAY".into()));
        assert_eq!(s.push(b" S"), Released::Text(" ".into()));
        assert_eq!(s.finish(), "S");
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let mut s = TextStream::new(vec!["world".into(), "lo".into(), String::new()]);
        assert_eq!(s.push(b"hello world"), Released::Stopped("hel".into()));
        assert_eq!(s.hit(), Some("lo"));
    }

    #[test]
    fn stop_string_inside_one_token() {
        let mut s = TextStream::new(vec!["\n\n".into()]);
        assert_eq!(s.push(b"one\n"), Released::Text("one".into()));
        assert_eq!(s.push(b"\ntwo"), Released::Stopped(String::new()));
    }
}
