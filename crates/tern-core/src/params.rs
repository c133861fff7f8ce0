//! DAG params: merging a trigger's `conf` over declared defaults and checking the result.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::spec::ParamSpec;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("conf must be a JSON object, got {0}")]
    NotAnObject(String),
    #[error("param {name:?} must be of type {expected}, got {got}")]
    WrongType {
        name: String,
        expected: String,
        got: String,
    },
    #[error("unknown param {name:?}; the DAG declares: {declared}")]
    Unknown { name: String, declared: String },
    #[error("param {name:?}: {message}")]
    Rule { name: String, message: String },
    #[error("conf key {key:?} looks like a typo of {meant:?}; params go in {{\"params\": {{...}}}} or at the top by their declared names, other top-level keys are free-form (read as {{{{ conf.KEY }}}}) and must not be one letter or two from those")]
    LikelyTypo { key: String, meant: String },
}

/// Why `v` breaks `rules`, if it does. A pattern that does not compile is reported as such
/// (DAG files are checked for that when they load).
pub fn check_rules(rules: &crate::spec::ParamRules, v: &Value) -> Result<(), String> {
    if let Some(allowed) = &rules.r#enum {
        if !allowed.contains(v) {
            let list = allowed
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!("{v} is not one of {list}"));
        }
    }
    if let Value::String(s) = v {
        if let Some(max) = rules.max_length {
            let n = s.chars().count() as u64;
            if n > max {
                return Err(format!("{n} characters, at most {max} allowed"));
            }
        }
        if let Some(p) = &rules.pattern {
            let re = regex::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| format!("the pattern {p:?} is not a valid regular expression: {e}"))?;
            if !re.is_match(s) {
                return Err(format!("{s:?} does not match the pattern {p:?}"));
            }
        }
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, v: &Value) -> bool {
    let got = type_name(v);
    got == expected || (expected == "number" && got == "integer") || v.is_null()
}

/// The params a run sees: declared defaults overridden by the `params` key of `conf` (or, as
/// Airflow allows, by top-level `conf` keys that name a declared param). Unknown keys inside
/// `conf.params` are refused; other top-level `conf` keys stay available as `conf`.
pub fn resolve_params(
    declared: &BTreeMap<String, ParamSpec>,
    conf: &Value,
) -> Result<Map<String, Value>, ParamError> {
    let conf_obj = match conf {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        other => return Err(ParamError::NotAnObject(type_name(other).to_string())),
    };
    let mut out: Map<String, Value> = declared
        .iter()
        .map(|(k, p)| (k.clone(), p.default.clone()))
        .collect();
    let declared_list = || declared.keys().cloned().collect::<Vec<_>>().join(", ");
    if let Some(explicit) = conf_obj.get("params") {
        let Value::Object(explicit) = explicit else {
            return Err(ParamError::NotAnObject(format!(
                "conf.params: {}",
                type_name(explicit)
            )));
        };
        for (k, v) in explicit {
            if !declared.contains_key(k) {
                return Err(ParamError::Unknown {
                    name: k.clone(),
                    declared: declared_list(),
                });
            }
            out.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in &conf_obj {
        if k != "params" && declared.contains_key(k) {
            out.insert(k.clone(), v.clone());
        } else if k != "params" {
            // A free-form key (templates read `{{ conf.KEY }}`), unless it is a near miss of
            // `params` or of a param's name: such a typo would otherwise vanish silently.
            let near = std::iter::once("params")
                .chain(declared.keys().map(String::as_str))
                .find(|c| k.chars().count() >= 4 && crate::spelling::edit_distance(k, c) <= 2);
            if let Some(meant) = near {
                return Err(ParamError::LikelyTypo {
                    key: k.clone(),
                    meant: meant.to_string(),
                });
            }
        }
    }
    for (k, spec) in declared {
        if let (Some(t), Some(v)) = (&spec.r#type, out.get(k)) {
            if !type_matches(t, v) {
                return Err(ParamError::WrongType {
                    name: k.clone(),
                    expected: t.clone(),
                    got: type_name(v).to_string(),
                });
            }
        }
        if let Some(v) = out.get(k) {
            check_rules(&spec.rules, v).map_err(|message| ParamError::Rule {
                name: k.clone(),
                message,
            })?;
        }
    }
    Ok(out)
}

/// The JSON type name of a default value, used when a DAG declares a param by default alone.
pub fn infer_type(default: &Value) -> Option<String> {
    match default {
        Value::Null => None,
        v => Some(match type_name(v) {
            "integer" => "integer".to_string(),
            other => other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared() -> BTreeMap<String, ParamSpec> {
        let mut m = BTreeMap::new();
        m.insert(
            "limit".into(),
            ParamSpec {
                default: json!(10),
                r#type: Some("integer".into()),
                description: None,
                rules: Default::default(),
            },
        );
        m.insert(
            "country".into(),
            ParamSpec {
                default: json!("Spain"),
                r#type: Some("string".into()),
                description: None,
                rules: crate::spec::ParamRules {
                    r#enum: None,
                    pattern: Some("[A-Z][a-z]+( [A-Z][a-z]+)*".into()),
                    max_length: Some(30),
                },
            },
        );
        m
    }

    #[test]
    fn string_rules_are_checked_on_every_trigger() {
        let ok = resolve_params(&declared(), &json!({"params": {"country": "New Zealand"}}));
        assert!(ok.is_ok(), "{ok:?}");
        for bad in ["$(id > owned.txt)", "poland", &"A".repeat(31)] {
            let e = resolve_params(&declared(), &json!({"params": {"country": bad}})).unwrap_err();
            assert!(matches!(e, ParamError::Rule { .. }), "{bad}: {e}");
        }
        let rules = crate::spec::ParamRules {
            r#enum: Some(vec![json!("eu"), json!("us")]),
            ..Default::default()
        };
        assert!(check_rules(&rules, &json!("eu")).is_ok());
        assert!(check_rules(&rules, &json!("asia"))
            .unwrap_err()
            .contains("not one of \"eu\", \"us\""));
    }

    #[test]
    fn defaults_then_conf_overrides() {
        let p = resolve_params(&declared(), &Value::Null).unwrap();
        assert_eq!(p["limit"], json!(10));
        let p = resolve_params(&declared(), &json!({"params": {"limit": 5}, "other": 1})).unwrap();
        assert_eq!(p["limit"], json!(5));
        assert_eq!(p["country"], json!("Spain"));
        let p = resolve_params(&declared(), &json!({"country": "Poland"})).unwrap();
        assert_eq!(p["country"], json!("Poland"));
    }

    #[test]
    fn a_conf_key_one_or_two_letters_from_params_or_a_param_is_a_typo() {
        for typo in ["parms", "paramz", "countyr", "limits"] {
            let e = resolve_params(&declared(), &json!({typo: {"limit": 5}})).unwrap_err();
            assert!(
                matches!(&e, ParamError::LikelyTypo { key, .. } if key == typo),
                "{typo}: {e}"
            );
        }
        let e = resolve_params(&declared(), &json!({"parms": {}})).unwrap_err();
        assert!(
            e.to_string().contains("looks like a typo of \"params\""),
            "{e}"
        );
        // Free-form keys far from any name stay free-form (`{{ conf.KEY }}`).
        resolve_params(
            &declared(),
            &json!({"note": "x", "source_system": 1, "ab": 2}),
        )
        .unwrap();
    }

    #[test]
    fn wrong_types_and_unknown_params_are_refused() {
        let e = resolve_params(&declared(), &json!({"params": {"limit": "many"}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "param \"limit\" must be of type integer, got string"
        );
        let e = resolve_params(&declared(), &json!({"params": {"limt": 1}})).unwrap_err();
        assert!(e.to_string().contains("unknown param \"limt\""));
        assert!(resolve_params(&declared(), &json!([1])).is_err());
    }
}
