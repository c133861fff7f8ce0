//! Variables a task's templates read (`{{ var.value.KEY }}`, `{{ var.json.KEY.field }}`): the
//! agent's own, from `[variables]` in `agent.toml` (a site-local value never leaves the site),
//! over those the control plane sends with an assignment. Secret values are masked in every
//! log line, like connection secrets.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use tern_protocol::VariableSpec;

/// A variable as `agent.toml` writes it: `KEY = "value"` or `KEY = { value = "...", secret = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum VariableConfig {
    Plain(String),
    Full {
        value: String,
        #[serde(default)]
        secret: bool,
    },
}

/// The variables one attempt sees.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    by_key: BTreeMap<String, VariableSpec>,
}

impl Variables {
    /// The agent's own variables.
    pub fn from_config(file: &BTreeMap<String, VariableConfig>) -> Variables {
        let by_key = file
            .iter()
            .map(|(k, v)| {
                let spec = match v {
                    VariableConfig::Plain(value) => VariableSpec {
                        value: value.clone(),
                        secret: false,
                    },
                    VariableConfig::Full { value, secret } => VariableSpec {
                        value: value.clone(),
                        secret: *secret,
                    },
                };
                (k.clone(), spec)
            })
            .collect();
        Variables { by_key }
    }

    /// These variables over `sent` (the control plane's): a key both define keeps this value.
    pub fn with_fallback(&self, sent: &BTreeMap<String, VariableSpec>) -> Variables {
        let mut by_key = sent.clone();
        by_key.extend(self.by_key.iter().map(|(k, v)| (k.clone(), v.clone())));
        Variables { by_key }
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The values to mask.
    pub fn secrets(&self) -> Vec<String> {
        self.by_key
            .values()
            .filter(|v| v.secret && !v.value.is_empty())
            .map(|v| v.value.clone())
            .collect()
    }

    /// `var` in templates: `value` (text) and `json` (each value parsed as JSON; a value that
    /// is not JSON is absent there, so using it is a template error naming it).
    pub fn template_value(&self) -> Value {
        let text: Map<String, Value> = self
            .by_key
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.value.clone())))
            .collect();
        let json: Map<String, Value> = self
            .by_key
            .iter()
            .filter_map(|(k, v)| {
                serde_json::from_str::<Value>(&v.value)
                    .ok()
                    .map(|j| (k.clone(), j))
            })
            .collect();
        serde_json::json!({"value": text, "json": json})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_own_value_wins_and_secrets_are_listed_for_masking() {
        let file: BTreeMap<String, VariableConfig> =
            toml::from_str("region = \"eu-site\"\ntoken = { value = \"s3cr3t\", secret = true }\n")
                .unwrap();
        let own = Variables::from_config(&file);
        let sent = BTreeMap::from([
            (
                "region".to_string(),
                VariableSpec {
                    value: "central".into(),
                    secret: false,
                },
            ),
            (
                "cfg".to_string(),
                VariableSpec {
                    value: "{\"n\": 3}".into(),
                    secret: false,
                },
            ),
        ]);
        let v = own.with_fallback(&sent);
        let t = v.template_value();
        assert_eq!(t["value"]["region"], "eu-site");
        assert_eq!(t["json"]["cfg"]["n"], 3);
        assert!(t["json"].get("region").is_none(), "not JSON");
        assert_eq!(v.secrets(), ["s3cr3t"]);
    }
}
