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
            },
        );
        m.insert(
            "country".into(),
            ParamSpec {
                default: json!("Spain"),
                r#type: Some("string".into()),
                description: None,
            },
        );
        m
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
