//! Values rendered into a shell command can never become code. A `shell(cmd = …)` template is
//! rendered with every value that does not come from tern itself or the DAG file (params,
//! conf, outputs, the run id, connection fields) wrapped in markers; then the rendered command
//! is read the way `sh` reads it, and each marked value is escaped for where it stands:
//! outside quotes every special character is backslash-escaped, inside double quotes `\`, `"`,
//! `$` and `` ` `` are, inside single quotes a `'` closes, is escaped and reopens. The value
//! arrives in the command as the same text, and a value such as `$(id > owned.txt)` stays text.
//! `{{ value | raw }}` opts out (the author vouches for the value).

/// Opens a marked value in rendered text (a private-use character).
pub const OPEN: char = '\u{E000}';
/// Closes a marked value.
pub const CLOSE: char = '\u{E001}';

/// A value as marked text (marker characters inside it are dropped).
pub fn mark(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push(OPEN);
    s.extend(value.chars().filter(|c| *c != OPEN && *c != CLOSE));
    s.push(CLOSE);
    s
}

/// Where in a shell command a character stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ctx {
    /// Outside quotes (also inside `$( … )` and backticks).
    Bare,
    /// Inside '…' (and `$'…'`, read as POSIX `sh` does: a `$` then a single-quoted string;
    /// escaping for that is also safe where `$'…'` means something else).
    Single,
    Double,
}

/// The rendered command with every marked value escaped for its place.
pub fn escape_marked(rendered: &str) -> String {
    let mut out = String::with_capacity(rendered.len() + 16);
    // Contexts opened and not yet closed; `$(`/backtick push a new Bare one.
    let mut stack: Vec<Ctx> = vec![Ctx::Bare];
    let mut chars = rendered.chars().peekable();
    while let Some(c) = chars.next() {
        let ctx = *stack.last().expect("never empty");
        if c == OPEN {
            let mut value = String::new();
            for v in chars.by_ref() {
                if v == CLOSE {
                    break;
                }
                value.push(v);
            }
            escape_into(&mut out, &value, ctx);
            continue;
        }
        out.push(c);
        match (ctx, c) {
            (Ctx::Bare | Ctx::Double, '\\') => {
                // The next character is taken literally (a marker is never escaped by it).
                if let Some(&n) = chars.peek() {
                    if n != OPEN {
                        out.push(n);
                        chars.next();
                    }
                }
            }
            (Ctx::Bare, '\'') => stack.push(Ctx::Single),
            (Ctx::Bare, '"') => stack.push(Ctx::Double),
            (Ctx::Bare | Ctx::Double, '$') if chars.peek() == Some(&'(') => {
                out.push('(');
                chars.next();
                stack.push(Ctx::Bare);
            }
            (Ctx::Bare, ')') if stack.len() > 1 => {
                stack.pop();
            }
            (Ctx::Single, '\'') | (Ctx::Double, '"') => {
                stack.pop();
            }
            _ => {}
        }
    }
    out
}

/// Appends `value` escaped so that, read by `sh` in context `ctx`, it is exactly that text.
fn escape_into(out: &mut String, value: &str, ctx: Ctx) {
    match ctx {
        Ctx::Single => {
            for c in value.chars() {
                if c == '\'' {
                    out.push_str("'\\''");
                } else {
                    out.push(c);
                }
            }
        }
        Ctx::Double => {
            for c in value.chars() {
                if matches!(c, '\\' | '"' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
        }
        Ctx::Bare => {
            if value.is_empty() {
                out.push_str("''");
            }
            for c in value.chars() {
                if c.is_ascii_alphanumeric() || "_-.,/:=@%+".contains(c) || !c.is_ascii() {
                    out.push(c);
                } else if c == '\n' {
                    // A backslash would join the lines: quote the newline instead.
                    out.push_str("'\n'");
                } else {
                    out.push('\\');
                    out.push(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "$(touch FLAG)",
        "`touch FLAG`",
        "'; touch FLAG; '",
        "\"; touch FLAG; \"",
        "\\\"; touch FLAG #",
        "a b\tc",
        "x\n touch FLAG",
        "${PATH:+PWNED}",
        "*",
        "",
        "O'Brien \"the\" $HOME",
        "naïve ünïcode",
    ];

    #[test]
    fn a_value_is_the_same_text_and_never_code_wherever_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        for v in HOSTILE {
            let m = mark(v);
            for (template, expect) in [
                (format!("printf '%s' {m}"), Some(v.to_string())),
                (format!("printf '%s' \"<{m}>\""), Some(format!("<{v}>"))),
                (format!("printf '%s' '<{m}>'"), Some(format!("<{v}>"))),
                (
                    format!("printf '%s' \"$(printf '%s' {m})\""),
                    Some(v.to_string()),
                ),
                // `$'…'` means different things to dash and bash: only safety is checked.
                (format!("printf '%s' $'<{m}>'"), None),
                (format!("cat <<EOF\n{m}\nEOF"), None),
            ] {
                let cmd = escape_marked(&template);
                let out = std::process::Command::new("sh")
                    .args(["-c", &cmd])
                    .current_dir(dir.path())
                    .output()
                    .unwrap();
                let got = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    !dir.path().join("FLAG").exists(),
                    "{v:?} in {template:?} ran as code: {cmd:?}"
                );
                if let Some(expect) = expect {
                    assert_eq!(got, expect, "{v:?} in {template:?}: {cmd:?}");
                }
            }
        }
    }

    #[test]
    fn plain_values_stay_readable() {
        assert_eq!(
            escape_marked(&format!("echo {}", mark("Poland"))),
            "echo Poland"
        );
        assert_eq!(
            escape_marked(&format!("echo \"in {}\"", mark("New York"))),
            "echo \"in New York\""
        );
    }
}
