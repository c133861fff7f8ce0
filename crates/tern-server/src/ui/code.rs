//! A DAG file as the Code tab shows it: one numbered line per line of the file, its tokens
//! coloured by [`tern_dag::highlight`] (classes `k` keyword, `s` string, `n` number, `c`
//! comment, `b` builtin, `o` constant).

use tern_dag::highlight::{classify, Class};

use super::draw::push_esc;

/// `source` as HTML lines (`<span class="line">…</span>`); a span that crosses lines (a
/// triple-quoted string) is closed and reopened at each line break.
pub fn highlighted(source: &str) -> String {
    let mut out = String::with_capacity(source.len() * 2);
    let mut pos = 0;
    out.push_str("<span class=\"line\">");
    for (range, class) in classify(source) {
        if range.start < pos || !source.is_char_boundary(range.start) {
            continue;
        }
        push_plain(&mut out, &source[pos..range.start], None);
        push_plain(&mut out, &source[range.clone()], Some(class));
        pos = range.end;
    }
    push_plain(&mut out, &source[pos..], None);
    out.push_str("</span>");
    // A file's last line break starts no line of its own.
    if let Some(cut) = out.strip_suffix("\n<span class=\"line\"></span>") {
        out.truncate(cut.len());
    }
    out
}

/// Text in `class` (or plain), each line's part wrapped on its own, breaking lines as
/// `</span>\n<span class="line">`.
fn push_plain(out: &mut String, text: &str, class: Option<Class>) {
    for (i, part) in text.split('\n').enumerate() {
        if i > 0 {
            out.push_str("</span>\n<span class=\"line\">");
        }
        if part.is_empty() {
            continue;
        }
        match class {
            Some(c) => {
                out.push_str("<span class=\"");
                out.push_str(c.css());
                out.push_str("\">");
                push_esc(out, part);
                out.push_str("</span>");
            }
            None => push_esc(out, part),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_numbered_and_tokens_keep_their_class_across_lines() {
        let html = highlighted("dag(id = \"a<b\")\nx = \"\"\"one\ntwo\"\"\"\n");
        assert_eq!(html.matches("<span class=\"line\">").count(), 3);
        assert!(html.contains("<span class=\"b\">dag</span>"), "{html}");
        assert!(
            html.contains("<span class=\"s\">&quot;a&lt;b&quot;</span>"),
            "{html}"
        );
        // The string over two lines is coloured on both.
        assert!(
            html.contains("<span class=\"s\">&quot;&quot;&quot;one</span></span>\n<span class=\"line\"><span class=\"s\">two&quot;&quot;&quot;</span>"),
            "{html}"
        );
        // Balanced tags.
        assert_eq!(
            html.matches("<span").count(),
            html.matches("</span>").count(),
            "{html}"
        );
    }
}
