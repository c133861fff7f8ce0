//! Masking secrets in task logs on the agent, before a line leaves the site. Every resolved
//! secret value (connection passwords, whole connection URIs) becomes `***`, wherever it
//! appears in a line, including when a process wrote it in pieces or in a line longer than the
//! agent's line limit (see [`Masker::split_point`]).

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::logsink::LogSink;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets shorter than this are not masked: masking `a` or `1` would garble every line and
/// protect nothing. Such secrets are reported when the agent starts.
pub const MIN_SECRET_LEN: usize = 4;

/// Replaces known secret values with [`MASK`].
#[derive(Debug, Clone, Default)]
pub struct Masker {
    finder: Option<AhoCorasick>,
    longest: usize,
}

impl Masker {
    /// A masker for `secrets`; values shorter than [`MIN_SECRET_LEN`] are ignored.
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut values: Vec<String> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_string())
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        values.sort();
        values.dedup();
        if values.is_empty() {
            return Masker::default();
        }
        let longest = values.iter().map(String::len).max().unwrap_or(0);
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&values)
            .expect("literal patterns always build");
        Masker {
            finder: Some(finder),
            longest,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.finder.is_none()
    }

    /// `text` with every secret replaced.
    pub fn mask(&self, text: &str) -> String {
        match &self.finder {
            None => text.to_string(),
            Some(f) => f.replace_all(text, &vec![MASK; f.patterns_len()]),
        }
    }

    /// Masks a JSON value's strings (task outputs), recursively.
    pub fn mask_json(&self, v: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match v {
            serde_json::Value::String(s)
                if self.finder.as_ref().is_some_and(|f| f.is_match(s.as_str())) =>
            {
                *s = self.mask(s);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| self.mask_json(i)),
            serde_json::Value::Object(m) => m.values_mut().for_each(|i| self.mask_json(i)),
            _ => {}
        }
    }

    /// Where to cut a piece of an unfinished line so that no secret is split between what is
    /// sent now (`bytes[..cut]`) and what is kept for the next piece (`bytes[cut..]`): keeps
    /// back the last `longest - 1` bytes (a secret could start there) and never cuts inside a
    /// secret found in `bytes`.
    pub fn split_point(&self, bytes: &[u8]) -> usize {
        let Some(f) = &self.finder else {
            return bytes.len();
        };
        let mut cut = bytes.len().saturating_sub(self.longest - 1);
        for m in f.find_iter(bytes) {
            if m.start() < cut && m.end() > cut {
                cut = m.start();
                break;
            }
        }
        cut
    }
}

/// A sink that masks every line before passing it on.
pub struct MaskingSink<'a> {
    pub inner: &'a dyn LogSink,
    pub masker: Arc<Masker>,
}

impl LogSink for MaskingSink<'_> {
    fn line(&self, text: &str) {
        self.inner.line(&self.masker.mask(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_and_prefers_the_longest_secret() {
        let m = Masker::new(["hunter22", "postgres://u:hunter22@db/x", "ab"]);
        assert_eq!(
            m.mask("url postgres://u:hunter22@db/x pw hunter22 hunter22!"),
            "url *** pw *** ***!"
        );
        assert_eq!(m.mask("ab is too short to mask"), "ab is too short to mask");
    }

    #[test]
    fn split_point_never_cuts_a_secret() {
        let m = Masker::new(["s3cr3t-value"]);
        let text = b"xxxxxxxxxxxxxxxxxxxxs3cr3t-val";
        let cut = m.split_point(text);
        assert!(cut <= 20, "the possible start of a secret is kept back");
        let text = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaas3cr3t-valuebbbb";
        let cut = m.split_point(text);
        let (sent, kept) = text.split_at(cut);
        let sent = String::from_utf8_lossy(sent);
        assert!(
            !sent.contains("s3cr3t") || sent.contains("s3cr3t-value"),
            "cut at {cut} split the secret"
        );
        assert!(kept.len() < m.longest + 4 || kept.starts_with(b"s3cr3t"));
    }

    #[test]
    fn masks_outputs() {
        let m = Masker::new(["topsecret"]);
        let mut v = serde_json::json!({"a": "x topsecret", "b": ["topsecret"], "c": 1});
        m.mask_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": "x ***", "b": ["***"], "c": 1}));
    }
}
