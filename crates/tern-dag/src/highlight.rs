//! Syntax classes of a DAG file's text, for the UI's Code tab: the spans the Starlark lexer
//! the loader parses with finds (so highlighting never disagrees with the language), with
//! tern's own builtins (`dag`, `shell`, …) told apart from other names.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::OnceLock;

use starlark_syntax::codemap::CodeMap;
use starlark_syntax::lexer::{Lexer, Token};

/// What a span of a DAG file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Keyword,
    String,
    Number,
    Comment,
    /// A function tern defines for DAG files (`dag`, `shell`, `cron`, …) or Starlark's own.
    Builtin,
    /// `True`, `False`, `None`.
    Constant,
}

impl Class {
    /// A short name for the class (the UI's CSS class).
    pub fn css(self) -> &'static str {
        match self {
            Class::Keyword => "k",
            Class::String => "s",
            Class::Number => "n",
            Class::Comment => "c",
            Class::Builtin => "b",
            Class::Constant => "o",
        }
    }
}

fn builtin_names() -> &'static HashSet<String> {
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        crate::builtins::globals()
            .names()
            .map(|n| n.as_str().to_string())
            .collect()
    })
}

/// The classified spans of `source` (byte ranges, in order, not overlapping); the text
/// between them is plain. A file the lexer cannot finish is classified up to where it stops.
pub fn classify(source: &str) -> Vec<(Range<usize>, Class)> {
    let codemap = CodeMap::new("dag".into(), source.to_string());
    let mut out = Vec::new();
    for lexeme in Lexer::new(source, &crate::loader::dialect(), codemap) {
        let Ok((start, token, end)) = lexeme else {
            break;
        };
        let class = match token {
            Token::Comment(_) => Class::Comment,
            Token::String(_)
            | Token::Bytes(_)
            | Token::FStringStart(_)
            | Token::FStringText(_)
            | Token::FStringEnd => Class::String,
            Token::Int(_) | Token::Float(_) => Class::Number,
            Token::Identifier(name) => match name.as_str() {
                "True" | "False" | "None" => Class::Constant,
                n if builtin_names().contains(n) => Class::Builtin,
                _ => continue,
            },
            Token::And
            | Token::Break
            | Token::Continue
            | Token::Def
            | Token::Elif
            | Token::Else
            | Token::For
            | Token::If
            | Token::In
            | Token::Lambda
            | Token::Load
            | Token::Not
            | Token::Or
            | Token::Pass
            | Token::Return
            | Token::Reserved => Class::Keyword,
            _ => continue,
        };
        if start < end && end <= source.len() {
            out.push((start..end, class));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(source: &str) -> Vec<(&str, Class)> {
        classify(source)
            .into_iter()
            .map(|(r, c)| (&source[r], c))
            .collect()
    }

    #[test]
    fn keywords_strings_numbers_comments_and_builtins_are_told_apart() {
        let src = "# nightly\ndag(id = \"etl\", max_active_runs = 2)\nfor i in range(3):\n    shell(id = \"t%d\" % i, cmd = '''true''', retries = None)\nx = f\"{1}\" if True else 1.5\n";
        let got = classes(src);
        assert!(got.contains(&("# nightly", Class::Comment)), "{got:?}");
        assert!(got.contains(&("dag", Class::Builtin)), "{got:?}");
        assert!(got.contains(&("shell", Class::Builtin)), "{got:?}");
        assert!(got.contains(&("range", Class::Builtin)), "{got:?}");
        assert!(got.contains(&("\"etl\"", Class::String)), "{got:?}");
        assert!(got.contains(&("'''true'''", Class::String)), "{got:?}");
        assert!(got.contains(&("2", Class::Number)), "{got:?}");
        assert!(got.contains(&("1.5", Class::Number)), "{got:?}");
        assert!(got.contains(&("for", Class::Keyword)), "{got:?}");
        assert!(got.contains(&("in", Class::Keyword)), "{got:?}");
        assert!(got.contains(&("None", Class::Constant)), "{got:?}");
        assert!(got.contains(&("True", Class::Constant)), "{got:?}");
        // Plain names are plain.
        assert!(
            !got.iter()
                .any(|(t, _)| *t == "i" || *t == "x" || *t == "id"),
            "{got:?}"
        );
        // In order, not overlapping.
        let spans = classify(src);
        assert!(spans.windows(2).all(|w| w[0].0.end <= w[1].0.start));
    }

    #[test]
    fn a_file_that_does_not_lex_is_classified_up_to_the_error() {
        let got = classes("dag(id = \"x\")\nshell(cmd = \"unterminated)\n");
        assert!(got.contains(&("dag", Class::Builtin)), "{got:?}");
    }
}
