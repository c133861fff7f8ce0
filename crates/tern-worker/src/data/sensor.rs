//! One poke of a sensor: check its condition once and say whether it holds. The agent never
//! waits between pokes; a condition that does not hold yet ends the attempt as rescheduled
//! (see `tern_core::sensor`).
//!
//! An error that cannot succeed on retry (unknown connection, bad SQL, a template error, a
//! missing bucket) fails the sensor like any task; a network error while probing an HTTP
//! endpoint counts as "not yet" (the service may not be up), as a 404 does.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};
use tern_core::{SensorCheck, SensorTask};
use tern_protocol::Assignment;

use super::db::{describe, Db};
use super::error::{from_sqlx, DataError};
use super::lake::Lake;
use super::sql_task::render_params;
use super::{connection, render};
use crate::connections::Connections;
use crate::logsink::LogSink;
use crate::template::Renderer;

/// What one poke found.
#[derive(Debug)]
pub enum Poke {
    /// The condition holds; the outputs say what was seen.
    Met(Map<String, Value>),
    /// Not yet: why, and when it is worth poking again.
    NotYet { why: String, after: Duration },
}

pub async fn poke(
    a: &Assignment,
    conns: &Connections,
    r: &Renderer,
    sink: &dyn LogSink,
    s: &SensorTask,
    now: DateTime<Utc>,
) -> Result<Poke, DataError> {
    let interval = Duration::from_millis(s.poke_interval_ms);
    let not_yet = |why: String| Poke::NotYet {
        why,
        after: interval,
    };
    match &s.check {
        SensorCheck::Sql {
            conn,
            sql,
            parameters,
        } => {
            let c = connection(conns, conn)?;
            let sql = render(r, "sql", sql)?;
            let params = render_params(r, parameters)?;
            sink.line(&format!("tern: poking {} with: {sql}", describe(c)));
            let mut db = Db::connect(c, true).await?;
            let row = db.execute(&sql, &params, true).await;
            db.close().await;
            let row = row.map_err(|e| from_sqlx("the sensor query failed", e))?.1;
            let first = row.and_then(|r| r.into_iter().next());
            let text = first.as_ref().and_then(|(_, v)| match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
                other => Some(other.to_string()),
            });
            Ok(match text {
                Some(t) if truthy(&t) => {
                    let mut out = Map::new();
                    out.insert("value".into(), Value::from(t));
                    Poke::Met(out)
                }
                Some(t) => not_yet(format!("the query's first cell is {t:?}")),
                None if first.is_some() => not_yet("the query's first cell is NULL".into()),
                None => not_yet("the query returned no row".into()),
            })
        }
        SensorCheck::Object { conn, path, prefix } => {
            let c = connection(conns, conn)?;
            let path = render(r, "path", path)?;
            let lake = Lake::open(c)?;
            let what = if *prefix { "object under" } else { "object" };
            sink.line(&format!(
                "tern: looking for an {what} {}{path} in {}",
                lake.url_prefix, lake.describe
            ));
            Ok(match lake.find(&path, *prefix).await? {
                Some(found) => {
                    let mut out = Map::new();
                    out.insert(
                        "url".into(),
                        Value::from(format!("{}{found}", lake.url_prefix)),
                    );
                    Poke::Met(out)
                }
                None => not_yet(format!("no {what} {}{path}", lake.url_prefix)),
            })
        }
        SensorCheck::File { path } => {
            let path = render(r, "path", path)?;
            sink.line(&format!("tern: looking for {path}"));
            Ok(match tokio::fs::metadata(&path).await {
                Ok(_) => {
                    let mut out = Map::new();
                    out.insert("path".into(), Value::from(path));
                    Poke::Met(out)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    not_yet(format!("{path} does not exist"))
                }
                Err(e) => not_yet(format!("{path}: {e}")),
            })
        }
        SensorCheck::Http {
            url,
            conn,
            method,
            headers,
            expected_status,
            response_contains,
        } => {
            let p = super::http_task::prepare(conns, r, url, conn.as_deref(), method, headers)?;
            let contains = response_contains
                .as_deref()
                .map(|c| render(r, "response_contains", c))
                .transpose()?;
            sink.line(&format!("tern: poking {} {}", p.method, p.url));
            let resp = match p.req.send().await {
                Ok(resp) => resp,
                Err(e) => {
                    return Ok(not_yet(format!(
                        "{} {} failed: {}",
                        p.method,
                        p.url,
                        super::error::error_chain(&e)
                    )))
                }
            };
            let status = resp.status().as_u16();
            if !super::http_task::status_expected(status, expected_status) {
                return Ok(not_yet(format!("{} {} answered {status}", p.method, p.url)));
            }
            if let Some(text) = contains {
                let body = match resp.text().await {
                    Ok(b) => b,
                    Err(e) => return Ok(not_yet(format!("reading the answer failed: {e}"))),
                };
                if !body.contains(&text) {
                    return Ok(not_yet(format!(
                        "{} {} answered {status} without {text:?}",
                        p.method, p.url
                    )));
                }
            }
            let mut out = Map::new();
            out.insert("status".into(), Value::from(status));
            Ok(Poke::Met(out))
        }
        SensorCheck::ExternalTask {
            external_dag_id,
            external_task_id,
            allowed_states,
            failed_states,
            execution_delta_ms,
        } => {
            let target = match external_task_id {
                Some(t) => format!("task {external_dag_id}.{t}"),
                None => format!("DAG {external_dag_id}"),
            };
            let date = a.context.logical_date - chrono::Duration::milliseconds(*execution_delta_ms);
            let when = format!("the run of {}", date.format("%Y-%m-%dT%H:%M:%SZ"));
            sink.line(&format!("tern: waiting for {target} in {when}"));
            Ok(match &a.external_state {
                Some(state) if allowed_states.contains(state) => {
                    let mut out = Map::new();
                    out.insert("state".into(), Value::from(state.clone()));
                    Poke::Met(out)
                }
                Some(state) if failed_states.contains(state) => {
                    return Err(DataError::permanent(format!(
                        "{target} in {when} is {state}"
                    )))
                }
                Some(state) => not_yet(format!("{target} in {when} is {state}")),
                None => not_yet(format!("there is no {target} in {when} yet")),
            })
        }
        SensorCheck::Time { target_time } => {
            let tz: chrono_tz::Tz = a.context.timezone.parse().map_err(|_| {
                DataError::permanent(format!("unknown time zone {:?}", a.context.timezone))
            })?;
            let time =
                tern_core::sensor::parse_time_of_day(target_time).map_err(DataError::permanent)?;
            let day = a.context.data_interval_end.with_timezone(&tz).date_naive();
            let target = tz
                .from_local_datetime(&day.and_time(time))
                .earliest()
                .ok_or_else(|| {
                    DataError::permanent(format!("{day} {time} does not exist in {tz}"))
                })?
                .with_timezone(&Utc);
            Ok(wait_until(target, now, interval, sink))
        }
        SensorCheck::Delta { delta_ms } => {
            let target =
                a.context.data_interval_end + chrono::Duration::milliseconds(*delta_ms as i64);
            Ok(wait_until(target, now, interval, sink))
        }
    }
}

/// A time sensor: met at `target`; until then, poke again no later than `target`.
fn wait_until(
    target: DateTime<Utc>,
    now: DateTime<Utc>,
    interval: Duration,
    sink: &dyn LogSink,
) -> Poke {
    let at = target.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    sink.line(&format!("tern: waiting until {at}"));
    if now >= target {
        let mut out = Map::new();
        out.insert("target".into(), Value::from(at));
        return Poke::Met(out);
    }
    let left = (target - now).to_std().unwrap_or_default();
    Poke::NotYet {
        why: format!("it is not {at} yet"),
        after: left.min(interval),
    }
}

/// Whether a first cell counts as "yes": not NULL (handled by the caller), not zero, not empty,
/// not a spelling of false.
fn truthy(text: &str) -> bool {
    let t = text.trim();
    if let Ok(n) = t.parse::<f64>() {
        return n != 0.0;
    }
    !matches!(
        t.to_ascii_lowercase().as_str(),
        "" | "false" | "f" | "no" | "n" | "off"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_of_first_cells() {
        for yes in ["1", "2", "t", "true", "yes", "0.5", "done"] {
            assert!(truthy(yes), "{yes}");
        }
        for no in ["0", "0.00", "", "false", "FALSE", "f", "no", " 0 "] {
            assert!(!truthy(no), "{no}");
        }
    }
}
