//! Site-local connections: named, URI-form credentials that an agent resolves from its own
//! config file (`[connections.NAME]` in `agent.toml`) and from `TERN_CONN_<NAME>` variables.
//! They are used on the agent only: tasks see them as `TERN_CONN_<NAME>` variables and as
//! non-secret fields in templates (`{{ conn.NAME.host }}`), every secret value is masked in
//! logs, and the control plane learns only their names.

use std::collections::BTreeMap;
use std::fmt;

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// A connection as written in `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// `postgres://user:password@host:5432/db`, `mysql://…`, `sqlite:///path`, `s3://bucket?…`,
    /// `https://…`.
    pub uri: String,
    /// Extra fields; keys naming a secret (`password`, `secret`, `token`, `key`) are masked and
    /// hidden from templates.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// A resolved connection.
#[derive(Clone)]
pub struct Connection {
    pub name: String,
    pub uri: String,
    pub conn_type: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub login: Option<String>,
    pub password: Option<String>,
    pub schema: Option<String>,
    pub extra: Map<String, Value>,
}

/// A connection that could not be understood, naming where it came from.
#[derive(Debug, thiserror::Error)]
#[error("connection {name:?} from {source_name}: {message}")]
pub struct ConnectionError {
    pub name: String,
    pub source_name: String,
    pub message: String,
}

fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"]
        .iter()
        .any(|s| k.contains(s))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The connection types tern can use: databases, object stores, webhooks and mail servers.
pub const KNOWN_SCHEMES: &[&str] = &[
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "sqlite",
    "s3",
    "azure",
    "file",
    "http",
    "https",
    "smtp",
    "smtps",
];

/// The parts of a connection as a typed form gives them (Airflow's connection fields).
#[derive(Debug, Clone, Default)]
pub struct ConnectionParts {
    pub conn_type: String,
    pub host: String,
    pub port: Option<u16>,
    pub login: String,
    pub password: String,
    /// The database, bucket path or folder: the URI's path.
    pub schema: String,
}

impl ConnectionParts {
    /// The URI these parts make (each part percent-encoded as the URI grammar needs), or
    /// what is wrong with them.
    pub fn to_uri(&self) -> Result<String, String> {
        let t = self.conn_type.trim();
        if !KNOWN_SCHEMES.contains(&t) {
            return Err(format!(
                "unknown connection type {t:?}; use one of {}",
                KNOWN_SCHEMES.join(", ")
            ));
        }
        let host = self.host.trim();
        let mut url = url::Url::parse(&format!("{t}://{host}"))
            .map_err(|e| format!("host {host:?} is not a host name or address ({e})"))?;
        if self.port.is_some() {
            url.set_port(self.port)
                .map_err(|()| "a port needs a host".to_string())?;
        }
        if !self.login.is_empty() {
            url.set_username(&self.login)
                .map_err(|()| "a login needs a host".to_string())?;
        }
        if !self.password.is_empty() {
            url.set_password(Some(&self.password))
                .map_err(|()| "a password needs a host".to_string())?;
        }
        if !self.schema.is_empty() {
            url.set_path(self.schema.trim_start_matches('/'));
        }
        Ok(url.to_string())
    }
}

impl Connection {
    pub fn parse(
        name: &str,
        source_name: &str,
        cfg: &ConnectionConfig,
    ) -> Result<Connection, ConnectionError> {
        let err = |message: String| ConnectionError {
            name: name.to_string(),
            source_name: source_name.to_string(),
            message,
        };
        if !valid_name(name) {
            return Err(err(
                "names use lower-case letters, digits and `_`".to_string()
            ));
        }
        let url = url::Url::parse(&cfg.uri).map_err(|e| {
            err(format!(
                "not a URI ({e}); write e.g. postgres://user:password@host:5432/db"
            ))
        })?;
        match url.scheme() {
            s if KNOWN_SCHEMES.contains(&s) => {}
            "gs" | "gcs" => {
                return Err(err(
                    "gs:// is not supported; reach Google Cloud Storage through its S3-compatible API with an HMAC key: s3://BUCKET?endpoint=https://storage.googleapis.com&region=auto".into(),
                ))
            }
            other => {
                return Err(err(format!(
                    "unknown connection type {other:?}; use one of {}",
                    KNOWN_SCHEMES.join(", ")
                )))
            }
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().to_string();
        let path = url.path().trim_start_matches('/');
        Ok(Connection {
            name: name.to_string(),
            uri: cfg.uri.clone(),
            conn_type: url.scheme().to_string(),
            host: url.host_str().filter(|h| !h.is_empty()).map(str::to_string),
            port: url.port(),
            login: Some(decode(url.username())).filter(|u| !u.is_empty()),
            password: url.password().map(decode),
            schema: Some(decode(path)).filter(|p| !p.is_empty()),
            extra: cfg.extra.clone(),
        })
    }

    /// Every value that must never appear in a log: the password (as written and decoded),
    /// the whole URI when it carries a password, and secret extra fields.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.password {
            out.push(p.clone());
            out.push(self.uri.clone());
            if let Ok(url) = url::Url::parse(&self.uri) {
                if let Some(raw) = url.password() {
                    out.push(raw.to_string());
                }
            }
        }
        for (k, v) in &self.extra {
            if secret_key(k) {
                match v {
                    Value::String(s) => out.push(s.clone()),
                    other => out.push(other.to_string()),
                }
            }
        }
        out
    }

    /// The fields templates may read: never the password or the URI.
    pub fn public_fields(&self) -> Value {
        let extra: Map<String, Value> = self
            .extra
            .iter()
            .filter(|(k, _)| !secret_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        json!({
            "conn_type": self.conn_type,
            "host": self.host,
            "port": self.port,
            "login": self.login,
            "schema": self.schema,
            "extra": extra,
        })
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("conn_type", &self.conn_type)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// The connections an agent has, by name.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    by_name: BTreeMap<String, Connection>,
}

/// Prefix of the environment variables that define connections.
pub const ENV_PREFIX: &str = "TERN_CONN_";

impl Connections {
    /// Resolves the connections of the agent's config file, then those of `TERN_CONN_<NAME>`
    /// variables in `env` (the file wins when both define a name).
    pub fn resolve(
        file: &BTreeMap<String, ConnectionConfig>,
        file_name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Connections, ConnectionError> {
        let mut by_name = BTreeMap::new();
        for (name, cfg) in file {
            by_name.insert(name.clone(), Connection::parse(name, file_name, cfg)?);
        }
        for (key, value) in env {
            let Some(name) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            if by_name.contains_key(&name) {
                continue;
            }
            let cfg = ConnectionConfig {
                uri: value,
                extra: Map::new(),
            };
            by_name.insert(name.clone(), Connection::parse(&name, &key, &cfg)?);
        }
        Ok(Connections { by_name })
    }

    /// These connections plus those sent with an assignment that this agent does not have
    /// itself (the agent's own win).
    pub fn with_fallback(
        &self,
        sent: &BTreeMap<String, tern_protocol::ConnectionSpec>,
    ) -> Result<Connections, ConnectionError> {
        let mut by_name = self.by_name.clone();
        for (name, spec) in sent {
            if by_name.contains_key(name) {
                continue;
            }
            let cfg = ConnectionConfig {
                uri: spec.uri.clone(),
                extra: spec.extra.clone(),
            };
            by_name.insert(
                name.clone(),
                Connection::parse(name, "the control plane", &cfg)?,
            );
        }
        Ok(Connections { by_name })
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<&Connection> {
        self.by_name.get(name)
    }

    pub fn secrets(&self) -> Vec<String> {
        self.by_name
            .values()
            .flat_map(Connection::secrets)
            .collect()
    }

    /// `conn` in templates: name → public fields.
    pub fn template_value(&self) -> Value {
        Value::Object(
            self.by_name
                .iter()
                .map(|(n, c)| (n.clone(), c.public_fields()))
                .collect(),
        )
    }

    /// `TERN_CONN_<NAME>=<uri>` for every connection, for task processes.
    pub fn env(&self) -> BTreeMap<String, String> {
        self.by_name
            .iter()
            .map(|(n, c)| {
                (
                    format!("{ENV_PREFIX}{}", n.to_ascii_uppercase()),
                    c.uri.clone(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_parts_make_a_uri_that_parses_back_to_them() {
        let parts = ConnectionParts {
            conn_type: "postgres".into(),
            host: "db.internal".into(),
            port: Some(5433),
            login: "etl user".into(),
            password: "p@ss:w/rd#1".into(),
            schema: "warehouse".into(),
        };
        let uri = parts.to_uri().unwrap();
        let c = Connection::parse(
            "wh",
            "test",
            &ConnectionConfig {
                uri,
                extra: Default::default(),
            },
        )
        .unwrap();
        assert_eq!(c.host.as_deref(), Some("db.internal"));
        assert_eq!(c.port, Some(5433));
        assert_eq!(c.login.as_deref(), Some("etl user"));
        assert_eq!(c.password.as_deref(), Some("p@ss:w/rd#1"));
        assert_eq!(c.schema.as_deref(), Some("warehouse"));
        let bad = ConnectionParts {
            conn_type: "postgress".into(),
            ..parts
        };
        assert!(bad
            .to_uri()
            .unwrap_err()
            .contains("unknown connection type"));
    }

    #[test]
    fn unknown_and_unsupported_types_are_refused_with_the_way_out() {
        let parse = |uri: &str| {
            Connection::parse(
                "c",
                "test",
                &ConnectionConfig {
                    uri: uri.into(),
                    extra: Default::default(),
                },
            )
        };
        let typo = parse("postgress://u:p@h/db").unwrap_err().to_string();
        assert!(
            typo.contains("unknown connection type \"postgress\""),
            "{typo}"
        );
        assert!(typo.contains("postgres,"), "{typo}");
        let gs = parse("gs://bucket").unwrap_err().to_string();
        assert!(
            gs.contains("gs:// is not supported")
                && gs.contains("endpoint=https://storage.googleapis.com"),
            "{gs}"
        );
        for ok in [
            "postgres://u@h/db",
            "mariadb://u@h/db",
            "sqlite:///x.db",
            "s3://b",
            "file:///tmp",
            "https://h/x",
            "smtp://h:587",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn file_and_environment_connections_resolve_with_their_secrets() {
        let mut file = BTreeMap::new();
        file.insert(
            "hq".to_string(),
            ConnectionConfig {
                uri: "mysql://etl:p%40ss%3Aword@db.local:3306/sales".into(),
                extra: json!({"charset": "utf8", "api_token": "tok-123456"})
                    .as_object()
                    .unwrap()
                    .clone(),
            },
        );
        let env = vec![
            (
                "TERN_CONN_LAKE".to_string(),
                "s3://bucket?region=eu".to_string(),
            ),
            ("TERN_CONN_HQ".to_string(), "postgres://x:y@z/w".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = Connections::resolve(&file, "agent.toml", env).unwrap();
        assert_eq!(c.names(), ["hq", "lake"]);
        let hq = c.get("hq").unwrap();
        assert_eq!(hq.conn_type, "mysql");
        assert_eq!(hq.host.as_deref(), Some("db.local"));
        assert_eq!(hq.port, Some(3306));
        assert_eq!(hq.login.as_deref(), Some("etl"));
        assert_eq!(hq.password.as_deref(), Some("p@ss:word"));
        assert_eq!(hq.schema.as_deref(), Some("sales"));
        let secrets = c.secrets();
        for s in ["p@ss:word", "p%40ss%3Aword", "tok-123456"] {
            assert!(secrets.iter().any(|x| x == s), "{s} is a secret");
        }
        let public = c.template_value().to_string();
        assert!(!public.contains("p@ss") && !public.contains("tok-123456"));
        assert!(public.contains("utf8"));
        assert_eq!(c.env()["TERN_CONN_LAKE"], "s3://bucket?region=eu");
    }

    #[test]
    fn a_bad_connection_names_itself_and_its_source() {
        let e = Connections::resolve(
            &BTreeMap::new(),
            "agent.toml",
            [("TERN_CONN_WH".to_string(), "not a uri".to_string())],
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"wh\" from TERN_CONN_WH"), "{e}");
    }
}
