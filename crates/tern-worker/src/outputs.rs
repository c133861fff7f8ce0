//! Reading what a task published to `$TERN_OUTPUT`: a JSON object, JSON-object lines, or
//! `key=value` lines (a value that parses as JSON is kept as JSON, else as a string).

use serde_json::{Map, Value};

/// Largest output file accepted; outputs are for small values such as counts and paths.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutputError {
    #[error(
        "$TERN_OUTPUT is {0} bytes; outputs are limited to 1 MiB: publish a path or URL instead"
    )]
    TooLarge(usize),
    #[error("$TERN_OUTPUT line {line}: {message}")]
    BadLine { line: usize, message: String },
}

pub fn parse_outputs(text: &str) -> Result<Map<String, Value>, OutputError> {
    if text.len() > MAX_OUTPUT_BYTES {
        return Err(OutputError::TooLarge(text.len()));
    }
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(trimmed) {
            return Ok(m);
        }
    }
    let mut out = Map::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('{') {
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(m)) => out.extend(m),
                _ => {
                    return Err(OutputError::BadLine {
                        line: i + 1,
                        message: "a line starting with '{' must be a JSON object".into(),
                    })
                }
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(OutputError::BadLine {
                line: i + 1,
                message: format!("expected key=value or a JSON object, got {line:?}"),
            });
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(OutputError::BadLine {
                line: i + 1,
                message: "the key before '=' is empty".into(),
            });
        }
        let v = v.trim();
        let value =
            serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_each_form() {
        let m = parse_outputs("rows=42\npath=s3://b/k.csv\nok=true\n").unwrap();
        assert_eq!(m["rows"], json!(42));
        assert_eq!(m["path"], json!("s3://b/k.csv"));
        assert_eq!(m["ok"], json!(true));
        let m = parse_outputs("{\"a\": [1, 2]}").unwrap();
        assert_eq!(m["a"], json!([1, 2]));
        let m = parse_outputs("{\"a\": 1}\n{\"b\": 2}\nc=x y\n").unwrap();
        assert_eq!(
            (m["a"].clone(), m["b"].clone(), m["c"].clone()),
            (json!(1), json!(2), json!("x y"))
        );
        assert!(parse_outputs("").unwrap().is_empty());
    }

    #[test]
    fn rejects_garbage_with_the_line() {
        let e = parse_outputs("rows=1\nnonsense\n").unwrap_err();
        assert_eq!(
            e,
            OutputError::BadLine {
                line: 2,
                message: "expected key=value or a JSON object, got \"nonsense\"".into()
            }
        );
        assert!(matches!(
            parse_outputs(&"x".repeat(MAX_OUTPUT_BYTES + 1)),
            Err(OutputError::TooLarge(_))
        ));
    }
}
