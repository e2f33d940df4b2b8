//! Fill-in-the-middle prompts, llama-server's `/infill` layout:
//! `[BOS] [extra] FIM_PRE prefix FIM_SUF suffix FIM_MID prompt`. The extra
//! files use the repo-level pattern when the model has FIM_REP and FIM_SEP
//! (`FIM_REP myproject\n`, `FIM_SEP filename\n text` per file, then
//! `FIM_SEP filename\n` for the file being edited); without them each file
//! is set off by a snippet marker, as llama-server does.

use super::EngineError;

/// A model's fill-in-the-middle tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fim {
    /// Before the prefix.
    pub pre: i32,
    /// Before the suffix.
    pub suf: i32,
    /// Where the answer goes.
    pub mid: i32,
    /// Before the repository name (repo-level FIM).
    pub rep: Option<i32>,
    /// Before each file's name (repo-level FIM).
    pub sep: Option<i32>,
}

/// llama.cpp's "no such token".
const NULL: i32 = -1;

impl Fim {
    /// From the vocabulary's ids (-1 for none); an error unless the model
    /// has FIM_PRE, FIM_SUF and FIM_MID.
    pub fn new(pre: i32, suf: i32, mid: i32, rep: i32, sep: i32) -> Result<Self, EngineError> {
        if [pre, suf, mid].contains(&NULL) {
            return Err(EngineError::Unsupported(
                "this model has no fill-in-the-middle tokens (FIM_PRE, FIM_SUF, FIM_MID): /infill needs a code model trained for infilling".into(),
            ));
        }
        let some = |t: i32| (t != NULL).then_some(t);
        Ok(Fim {
            pre,
            suf,
            mid,
            rep: some(rep),
            sep: some(sep),
        })
    }
}

/// What to infill: the text around the cursor and other files.
#[derive(Debug, Clone, Copy)]
pub struct Infill<'a> {
    /// Before the cursor.
    pub prefix: &'a str,
    /// After it.
    pub suffix: &'a str,
    /// Other files: (name, text).
    pub extra: &'a [(String, String)],
    /// After FIM_MID: the start of the answer.
    pub prompt: &'a str,
}

/// The prompt's tokens; `tokenize` turns text into ids without special
/// tokens (a file may contain anything), `bos` is the model's, if it adds one.
pub fn tokens(
    fim: &Fim,
    bos: Option<i32>,
    infill: &Infill<'_>,
    tokenize: impl Fn(&str) -> Vec<i32>,
) -> Vec<i32> {
    let mut out: Vec<i32> = bos.into_iter().collect();
    if let Some(rep) = fim.rep {
        out.push(rep);
        out.extend(tokenize("myproject\n"));
    }
    for (filename, text) in infill.extra {
        match fim.sep {
            Some(sep) => {
                out.push(sep);
                out.extend(tokenize(&format!("{filename}\n")));
            }
            None => out.extend(tokenize("\n\n--- snippet ---\n\n")),
        }
        out.extend(tokenize(text));
    }
    if let Some(sep) = fim.sep {
        out.push(sep);
        out.extend(tokenize("filename\n"));
    }
    out.push(fim.pre);
    out.extend(tokenize(infill.prefix));
    out.push(fim.suf);
    out.extend(tokenize(infill.suffix));
    out.push(fim.mid);
    out.extend(tokenize(infill.prompt));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One "token" per byte, offset so they differ from the special ids.
    fn bytes(text: &str) -> Vec<i32> {
        text.bytes().map(|b| 1000 + i32::from(b)).collect()
    }

    #[test]
    fn the_layout_is_llama_servers() {
        let fim = Fim::new(1, 2, 3, -1, -1).unwrap();
        let infill = Infill {
            prefix: "a",
            suffix: "b",
            extra: &[],
            prompt: "c",
        };
        assert_eq!(
            tokens(&fim, Some(0), &infill, bytes),
            [0, 1, 1097, 2, 1098, 3, 1099]
        );
        let extra = [("x.py".to_owned(), "y".to_owned())];
        let with_extra = Infill {
            extra: &extra,
            ..infill
        };
        let plain = tokens(&fim, None, &with_extra, bytes);
        assert!(
            plain.starts_with(&bytes("\n\n--- snippet ---\n\ny")),
            "{plain:?}"
        );
        let repo = Fim::new(1, 2, 3, 4, 5).unwrap();
        let got = tokens(&repo, None, &with_extra, bytes);
        let mut want = vec![4];
        want.extend(bytes("myproject\n"));
        want.push(5);
        want.extend(bytes("x.py\ny"));
        want.push(5);
        want.extend(bytes("filename\n"));
        assert!(got.starts_with(&want), "{got:?}");
        assert!(matches!(
            Fim::new(1, -1, 3, -1, -1),
            Err(EngineError::Unsupported(m)) if m.contains("fill-in-the-middle")
        ));
    }
}
