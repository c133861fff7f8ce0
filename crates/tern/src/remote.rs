//! The CLI against a remote control plane: with `--server URL` and a token (`--token` or
//! `TERN_TOKEN`), the everyday commands call the REST API instead of opening the metadata
//! database: `dags next|trigger|pause|unpause|errors`, `variables set|get|list|delete`, `logs`, `pools
//! list|set|delete`, `connections list|delete`, `agents list|revoke`, `tokens list|create|revoke`,
//! `users list`. `dags list|state|delete`, `tasks list|clear`, `runs list|show|mark|delete` and
//! `users delete` go through
//! [`crate::client::Client`] in both modes. Other commands work on the database directly and
//! say so.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::{Command, DagsCmd, Output, VariablesCmd};
use crate::output::print;

/// A REST API client with its token.
pub struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
}

use tern_server::ui::draw::seg;

impl Remote {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Remote> {
        let token = token.filter(|t| !t.is_empty()).context(
            "--server needs an API token: give --token or set TERN_TOKEN (`tern tokens create USER` on the server makes one)",
        )?;
        tern_worker::http_transport::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Remote {
            base: server.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// Calls the API; a refusal becomes an error with the server's message and hint.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {} (--server)", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = v["message"].as_str().unwrap_or("").to_string();
            let hint = v["hint"].as_str().filter(|h| !h.is_empty());
            bail!(
                "{method} {path}: {status}: {msg}{}",
                hint.map(|h| format!(" (hint: {h})")).unwrap_or_default()
            );
        }
        Ok(v)
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn rows(list: &Value, f: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array()
        .map(|a| a.iter().map(f).collect())
        .unwrap_or_default()
}

/// Runs `command` through the API of `server`.
pub async fn run(server: &str, token: Option<String>, command: Command) -> anyhow::Result<i32> {
    let r = Remote::new(server, token)?;
    match command {
        Command::Dags(DagsCmd::Errors(o)) => {
            let v = r.get("/api/v1/importErrors").await?;
            let table = rows(&v["import_errors"], |e| {
                vec![format!("{}:{}", s(&e["file"]), s(&e["line"])), s(&e["message"])]
            });
            print(o.output, &["where", "error"], table, &v["import_errors"]);
        }
        Command::Dags(DagsCmd::Next { dag_id, n, out }) => {
            let v = r.get(&format!("/api/v1/dags/{}/next?n={n}", seg(&dag_id))).await?;
            let next = serde_json::from_value(v).context("the server's answer to dags next")?;
            crate::cmd::dags::print_upcoming(out.output, &next);
        }
        Command::Dags(DagsCmd::Pause { dag_id }) => pause(&r, &dag_id, true).await?,
        Command::Dags(DagsCmd::Unpause { dag_id }) => pause(&r, &dag_id, false).await?,
        Command::Dags(DagsCmd::Trigger(a)) => {
            let conf = crate::cmd::parse_conf(a.conf.as_deref())?;
            let mut body = json!({"conf": conf});
            if let Some(id) = &a.run_id {
                body["dag_run_id"] = json!(id);
            }
            if let Some(d) = &a.logical_date {
                body["logical_date"] = json!(d);
            }
            let v = r
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/dags/{}/dagRuns", seg(&a.dag_id)),
                    Some(body),
                )
                .await?;
            // The same output as the local command: the run (JSON without --wait) or its id,
            // then with --wait the report on stderr and the exit code.
            let run_id = s(&v["dag_run"]["run_id"]);
            if a.out.output == Output::Json && !a.wait {
                println!("{}", serde_json::to_string_pretty(&v["dag_run"])?);
            } else {
                println!("{run_id}");
            }
            if !a.wait {
                return Ok(0);
            }
            eprintln!("waiting for {} {run_id}", a.dag_id);
            let path = format!("/api/v1/dags/{}/dagRuns/{}", seg(&a.dag_id), seg(&run_id));
            let mut poll = Duration::from_millis(20);
            loop {
                let v = r.get(&path).await?;
                let state = s(&v["dag_run"]["state"]);
                if state == "success" || state == "failed" {
                    report_remote_run(&v, &a.dag_id, &run_id);
                    return Ok(if state == "success" { 0 } else { 1 });
                }
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(Duration::from_millis(500));
            }
        }
        Command::Logs(a) => {
            let base = format!(
                "/api/v1/dags/{}/dagRuns/{}/taskInstances/{}",
                seg(&a.dag_id),
                seg(&a.run_id),
                seg(&a.task_id)
            );
            // Every route of a mapped task's instance names it in the query.
            let instance = a.map_index.map(|i| format!("map_index={i}&")).unwrap_or_default();
            let try_number = match a.try_number {
                Some(t) => t,
                None => {
                    let v = r.get(&format!("{base}?{instance}")).await?;
                    v["tries"]
                        .as_array()
                        .and_then(|t| t.last())
                        .and_then(|t| t["try_number"].as_u64())
                        .context("the task has not started yet: no log")? as u32
                }
            };
            let mut offset = 0u64;
            loop {
                let v = r
                    .get(&format!("{base}/logs/{try_number}?{instance}offset={offset}"))
                    .await?;
                print!("{}", v["content"].as_str().unwrap_or(""));
                let next = v["next_offset"].as_u64().unwrap_or(offset);
                // The server answers a page at a time: read on while the log goes on.
                let more = v["more"] == true && next > offset;
                offset = next;
                if more {
                    continue;
                }
                if !a.follow || v["ended"] == true {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Command::Variables(VariablesCmd::Set {
            key,
            value,
            value_stdin: _,
            secret,
            description,
        }) => {
            let value = crate::cmd::variables::read_value(value)?;
            r.call(
                reqwest::Method::PUT,
                &format!("/api/v1/variables/{}", seg(&key)),
                Some(json!({"value": value, "secret": secret, "description": description})),
            )
            .await?;
            crate::cmd::variables::print_set(&key, secret);
        }
        Command::Variables(VariablesCmd::Get { key, reveal }) => {
            let v = r.get(&format!("/api/v1/variables/{}", seg(&key))).await?;
            match v["value"].as_str() {
                Some(value) if v["is_secret"] != true => println!("{value}"),
                _ if reveal => bail!(
                    "the API never sends a secret variable's value back; run `tern variables get {key} --reveal` where the control plane's secret key is"
                ),
                _ => bail!("variable {key:?} is secret; its value is not shown"),
            }
        }
        other => bail!(
            "`{}` works on the metadata database directly and has no --server form; run it on the control plane's machine, or use the REST API (docs/api.md)",
            command_name(&other)
        ),
    }
    Ok(0)
}

/// [`crate::cmd::dags::print_report`] of a run read through the API (`{dag_run,
/// task_instances}`).
fn report_remote_run(v: &Value, dag_id: &str, run_id: &str) {
    let when = |f: &str| -> Option<chrono::DateTime<chrono::Utc>> {
        serde_json::from_value(v["dag_run"][f].clone()).ok()
    };
    let lines: Vec<crate::cmd::dags::ReportLine> = v["task_instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| crate::cmd::dags::ReportLine {
            label: tern_core::mapping::instance_label(
                &s(&t["task_id"]),
                t["map_index"].as_i64().unwrap_or(-1),
            ),
            state: s(&t["state"]),
            try_number: t["try_number"].as_u64().unwrap_or(0) as u32,
            note: t["note"].as_str().map(str::to_string),
        })
        .collect();
    crate::cmd::dags::print_report(
        run_id,
        dag_id,
        &s(&v["dag_run"]["state"]),
        &crate::output::duration(when("started_at"), when("ended_at")),
        &lines,
    );
}

async fn pause(r: &Remote, dag_id: &str, paused: bool) -> anyhow::Result<()> {
    r.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/dags/{}", seg(dag_id)),
        Some(json!({"is_paused": paused})),
    )
    .await?;
    println!("{dag_id} {}", if paused { "paused" } else { "unpaused" });
    Ok(())
}

fn command_name(c: &Command) -> String {
    format!("{c:?}")
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or("this command")
        .to_lowercase()
}
