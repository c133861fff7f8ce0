//! Where a notification goes: the connection a DAG names, resolved on the control plane (the
//! process's `TERN_CONN_<NAME>` variables first, then the connections it keeps) and read as a
//! webhook (`http`/`https`) or a mail server (`smtp`/`smtps`).

use std::time::Duration;

use serde_json::Value;
use tern_store::Store;
use tern_worker::connections::{Connection, Connections};

use super::SendError;
use crate::secrets::SecretBox;

/// A webhook: the connection's URL without its user info, and how to authenticate.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    /// Extra headers (the connection's extra `headers`).
    pub headers: Vec<(String, String)>,
    /// Login and password, sent as basic auth.
    pub basic: Option<(String, Option<String>)>,
    /// The connection's extra `token`, sent as a bearer token.
    pub bearer: Option<String>,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required); port 587 by default.
    StartTls,
    /// TLS from the first byte (`smtps://`, `tls=tls`); port 465 by default.
    Tls,
    /// No encryption (a local relay); port 25 by default.
    None,
}

/// A mail server and the message's addresses.
#[derive(Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub login: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
}

/// A resolved notification target.
#[derive(Clone)]
pub enum Target {
    Webhook(Webhook),
    Email(Smtp),
}

/// What the notifier resolves connection names with.
pub struct Resolver {
    pub store: Store,
    pub secrets: Option<std::sync::Arc<SecretBox>>,
    /// The process's `TERN_CONN_<NAME>` connections.
    pub env: Connections,
}

impl Resolver {
    /// The target `name` (named by the DAG field `hook`) stands for. An unknown name or a
    /// connection of another kind is a permanent error that says what to do.
    pub async fn target(&self, name: &str, hook: &str) -> Result<Target, SendError> {
        let conn = match self.env.get(name) {
            Some(c) => c.clone(),
            None => {
                let stored = match &self.secrets {
                    Some(secrets) => crate::connections::parsed(&self.store, secrets, name)
                        .await
                        .map_err(|e| {
                            SendError::Transient(format!("cannot read connection {name:?}: {e:#}"))
                        })?,
                    None => None,
                };
                stored.ok_or_else(|| {
                    SendError::Permanent(format!(
                        "connection {name:?} (named in {hook}) does not exist: add it with \
                         `tern connections add {name} --uri https://…` (webhook) or \
                         `--uri smtp://user:password@host:587?from=…&to=…` (mail), or set \
                         TERN_CONN_{} on the server",
                        name.to_ascii_uppercase()
                    ))
                })?
            }
        };
        parse(&conn, hook)
    }
}

/// Reads a connection as a notification target.
pub fn parse(c: &Connection, hook: &str) -> Result<Target, SendError> {
    let name = &c.name;
    match c.conn_type.as_str() {
        "http" | "https" => webhook(c),
        "smtp" | "smtps" => smtp(c).map(Target::Email),
        other => Err(SendError::Permanent(format!(
            "connection {name:?} (named in {hook}) is a {other}:// connection; notifications need \
             an http(s):// webhook or an smtp:// mail server"
        ))),
    }
}

fn webhook(c: &Connection) -> Result<Target, SendError> {
    let mut url = url::Url::parse(&c.uri)
        .map_err(|e| SendError::Permanent(format!("connection {:?}: not a URL ({e})", c.name)))?;
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut headers = Vec::new();
    match c.extra.get("headers") {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let Value::String(v) = v else {
                    return Err(SendError::Permanent(format!(
                        "connection {:?}: extra headers[{k:?}] must be a string",
                        c.name
                    )));
                };
                headers.push((k.clone(), v.clone()));
            }
        }
        Some(_) => {
            return Err(SendError::Permanent(format!(
                "connection {:?}: extra `headers` must be an object of strings, e.g. {{\"X-Team\": \"ops\"}}",
                c.name
            )))
        }
    }
    Ok(Target::Webhook(Webhook {
        url: url.to_string(),
        headers,
        basic: c.login.clone().map(|l| (l, c.password.clone())),
        bearer: match c.extra.get("token") {
            Some(Value::String(t)) => Some(t.clone()),
            _ => None,
        },
    }))
}

fn smtp(c: &Connection) -> Result<Smtp, SendError> {
    let err = |m: String| SendError::Permanent(format!("connection {:?}: {m}", c.name));
    let url = url::Url::parse(&c.uri).map_err(|e| err(format!("not a URL ({e})")))?;
    let host = c
        .host
        .clone()
        .ok_or_else(|| err("no host; write smtp://user:password@host:587?from=…&to=…".into()))?;
    let mut tls = if c.conn_type == "smtps" {
        SmtpTls::Tls
    } else {
        SmtpTls::StartTls
    };
    let (mut from, mut to) = (None, Vec::new());
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "from" => from = Some(v.to_string()),
            "to" => to.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string),
            ),
            "tls" => {
                tls = match v.as_ref() {
                    "starttls" => SmtpTls::StartTls,
                    "tls" => SmtpTls::Tls,
                    "none" => SmtpTls::None,
                    other => {
                        return Err(err(format!(
                            "tls={other:?} is not one of starttls, tls, none"
                        )))
                    }
                }
            }
            other => {
                return Err(err(format!(
                    "unknown parameter {other:?}; use from, to and tls"
                )))
            }
        }
    }
    let from = from.ok_or_else(|| err("no sender: add ?from=tern@example.com".into()))?;
    if to.is_empty() {
        return Err(err(
            "no recipient: add &to=ops@example.com (several separated by commas)".into(),
        ));
    }
    let port = c.port.unwrap_or(match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    });
    Ok(Smtp {
        host,
        port,
        tls,
        login: c.login.clone(),
        password: c.password.clone(),
        from,
        to,
    })
}

/// The claim lease for a send with deadline `timeout`: long enough that a live sender always
/// records its outcome before another may take the row.
pub fn claim_lease(timeout: Duration) -> Duration {
    timeout * 2 + Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_worker::connections::ConnectionConfig;

    fn conn(uri: &str, extra: Value) -> Connection {
        let cfg = ConnectionConfig {
            uri: uri.into(),
            extra: extra.as_object().cloned().unwrap_or_default(),
        };
        Connection::parse("c", "test", &cfg).unwrap()
    }

    #[test]
    fn smtp_uri_parameters_and_defaults() {
        let Target::Email(s) = parse(
            &conn(
                "smtp://bot:pw@mail.example.com?from=tern@x.org&to=a@x.org,%20b@x.org",
                Value::Null,
            ),
            "on_failure",
        )
        .unwrap() else {
            panic!("not mail")
        };
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("mail.example.com", 587, SmtpTls::StartTls)
        );
        assert_eq!(s.to, ["a@x.org", "b@x.org"]);
        assert_eq!(s.login.as_deref(), Some("bot"));
        let Target::Email(s) =
            parse(&conn("smtps://h?from=a@x&to=b@x", Value::Null), "on_retry").unwrap()
        else {
            panic!("not mail")
        };
        assert_eq!((s.port, s.tls), (465, SmtpTls::Tls));
        let Target::Email(s) = parse(
            &conn("smtp://h:2525?from=a@x&to=b@x&tls=none", Value::Null),
            "on_retry",
        )
        .unwrap() else {
            panic!("not mail")
        };
        assert_eq!((s.port, s.tls), (2525, SmtpTls::None));
    }

    #[test]
    fn bad_connections_are_permanent_errors_naming_the_fix() {
        for (uri, want) in [
            ("smtp://h?to=b@x", "add ?from="),
            ("smtp://h?from=a@x", "no recipient"),
            (
                "smtp://h?from=a@x&to=b@x&tls=ssl",
                "not one of starttls, tls, none",
            ),
            (
                "smtp://h?from=a@x&to=b@x&form=1",
                "unknown parameter \"form\"",
            ),
            ("postgres://u@h/db", "is a postgres:// connection"),
        ] {
            match parse(&conn(uri, Value::Null), "on_failure") {
                Err(SendError::Permanent(m)) => assert!(m.contains(want), "{uri}: {m}"),
                _ => panic!("{uri}: not a permanent error"),
            }
        }
    }

    #[test]
    fn webhook_drops_user_info_and_reads_headers_and_token() {
        let Target::Webhook(w) = parse(
            &conn(
                "https://u:p@hooks.example.com/x?k=1",
                serde_json::json!({"headers": {"X-Team": "ops"}, "token": "t0k"}),
            ),
            "on_failure",
        )
        .unwrap() else {
            panic!("not a webhook")
        };
        assert_eq!(w.url, "https://hooks.example.com/x?k=1");
        assert_eq!(w.headers, [("X-Team".to_string(), "ops".to_string())]);
        assert_eq!(w.basic, Some(("u".into(), Some("p".into()))));
        assert_eq!(w.bearer.as_deref(), Some("t0k"));
    }
}
