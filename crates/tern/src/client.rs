//! One client interface over the control plane for the commands that inspect and change runs
//! (`dags list|state|delete`, `tasks list|clear`, `runs list|show|mark|delete`, `users delete`)
//! and the estate's collections (pools, connections, agents, tokens, users, variables):
//! [`Client::Local`] works on the metadata database (and records changes in the audit log as `cli:USER`), [`Client::Remote`]
//! calls the REST API with a token (`--server`). Each command is written once, against this.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tern_core::{DagSpec, RunState, TaskState};
use tern_server::ui::draw::seg;
use tern_store::manage::ClearScope;
use tern_store::Store;

use crate::remote::Remote;

pub enum Client {
    Local(Store),
    Remote(Remote),
}

/// A run as the commands see it.
pub struct RunRow {
    pub run_id: String,
    pub state: RunState,
    pub logical_date: DateTime<Utc>,
}

/// A task instance as the commands see it.
pub struct InstanceRow {
    pub task_id: String,
    pub map_index: i64,
    pub state: TaskState,
}

/// A collection the control plane keeps, listed as the API lists it.
#[derive(Clone, Copy)]
pub enum Listing {
    Pools,
    Connections,
    Agents,
    Tokens,
    Users,
    Variables,
}

impl Listing {
    /// The API's route and the key of its answer's list.
    fn route(self) -> (&'static str, &'static str) {
        match self {
            Listing::Pools => ("/api/v1/pools", "pools"),
            Listing::Connections => ("/api/v1/connections", "connections"),
            Listing::Agents => ("/api/v1/agents", "agents"),
            Listing::Tokens => ("/api/v1/tokens", "tokens"),
            Listing::Users => ("/api/v1/users", "users"),
            Listing::Variables => ("/api/v1/variables", "variables"),
        }
    }

    /// The audit action of removing one (as the API records it).
    fn removal(self) -> &'static str {
        match self {
            Listing::Pools => "pool.delete",
            Listing::Connections => "connection.delete",
            Listing::Agents => "agent.revoke",
            Listing::Tokens => "token.revoke",
            Listing::Users => "user.delete",
            Listing::Variables => "variable.delete",
        }
    }
}

/// Most runs one command looks at (newest first), as the API's run listing allows.
const MAX_RUNS: i64 = 1000;

impl RunRow {
    /// From a run record as the API (and `serde`) spells it.
    fn from_json(run: &Value) -> anyhow::Result<RunRow> {
        Ok(RunRow {
            run_id: run["run_id"].as_str().unwrap_or_default().to_string(),
            state: field(run, "state")?,
            logical_date: serde_json::from_value(run["logical_date"].clone())?,
        })
    }
}

fn field<T: std::str::FromStr<Err = String>>(v: &Value, name: &str) -> anyhow::Result<T> {
    let text = v[name]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the server's answer has no `{name}`"))?;
    text.parse::<T>().map_err(|e| anyhow::anyhow!(e))
}

impl Client {
    /// The DAG's latest version.
    pub async fn spec(&self, dag_id: &str) -> anyhow::Result<DagSpec> {
        match self {
            Client::Local(store) => Ok((*store.latest_spec(dag_id).await?.1).clone()),
            Client::Remote(r) => {
                let v = r.get(&format!("/api/v1/dags/{}", seg(dag_id))).await?;
                Ok(serde_json::from_value(v["spec"].clone())?)
            }
        }
    }

    /// The DAG's runs, newest first.
    pub async fn runs(&self, dag_id: &str) -> anyhow::Result<Vec<RunRow>> {
        self.run_list(Some(dag_id), None, MAX_RUNS)
            .await?
            .iter()
            .map(RunRow::from_json)
            .collect()
    }

    /// One run, or an error naming it.
    pub async fn run(&self, dag_id: &str, run_id: &str) -> anyhow::Result<RunRow> {
        let run = match self {
            Client::Local(store) => serde_json::to_value(store.get_run(dag_id, run_id).await?)?,
            Client::Remote(r) => r.get(&run_path(dag_id, run_id)).await?["dag_run"].take(),
        };
        RunRow::from_json(&run)
    }

    /// The task instances of a run (a mapped task's one per index).
    pub async fn instances(&self, dag_id: &str, run_id: &str) -> anyhow::Result<Vec<InstanceRow>> {
        match self {
            Client::Local(store) => {
                let run = store.get_run(dag_id, run_id).await?;
                Ok(store
                    .task_instances(run.pk)
                    .await?
                    .into_iter()
                    .map(|t| InstanceRow {
                        task_id: t.task_id,
                        map_index: t.map_index,
                        state: t.state,
                    })
                    .collect())
            }
            Client::Remote(r) => {
                let v = r
                    .get(&format!("{}/taskInstances", run_path(dag_id, run_id)))
                    .await?;
                let mut out = Vec::new();
                for t in v["task_instances"].as_array().into_iter().flatten() {
                    out.push(InstanceRow {
                        task_id: t["task_id"].as_str().unwrap_or_default().to_string(),
                        map_index: t["map_index"].as_i64().unwrap_or(-1),
                        state: field(t, "state")?,
                    });
                }
                Ok(out)
            }
        }
    }

    /// Clears `task_ids` of a run (with the scope's downstream/upstream tasks and, for mapped
    /// tasks, only its instance); returns the task ids cleared.
    pub async fn clear(
        &self,
        dag_id: &str,
        run_id: &str,
        task_ids: &[String],
        scope: ClearScope,
    ) -> anyhow::Result<Vec<String>> {
        match self {
            Client::Local(store) => {
                let run = store.get_run(dag_id, run_id).await?;
                let cleared = store.clear_tasks(run.pk, task_ids, scope).await?;
                store
                    .audit(
                        &crate::cmd::cli_actor(),
                        "task.clear",
                        &format!("{dag_id}/{run_id}"),
                        &cleared.join(","),
                    )
                    .await?;
                Ok(cleared)
            }
            Client::Remote(r) => {
                let v = r
                    .call(
                        reqwest::Method::POST,
                        &format!("{}/clear", run_path(dag_id, run_id)),
                        Some(json!({
                            "task_ids": task_ids,
                            "include_downstream": scope.downstream,
                            "include_upstream": scope.upstream,
                            "map_index": scope.map_index,
                        })),
                    )
                    .await?;
                Ok(v["cleared"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect())
            }
        }
    }

    /// Ends a run by hand as `success` or `failed` (its unfinished tasks end too).
    pub async fn mark_run(
        &self,
        dag_id: &str,
        run_id: &str,
        state: RunState,
    ) -> anyhow::Result<()> {
        match self {
            Client::Local(store) => {
                let run = store.get_run(dag_id, run_id).await?;
                let actor = crate::cmd::cli_actor();
                store
                    .mark_run(run.pk, state, &format!("marked {state} by {actor}"))
                    .await?;
                store
                    .audit(
                        &actor,
                        &format!("run.mark_{state}"),
                        &format!("{dag_id}/{run_id}"),
                        "",
                    )
                    .await?;
            }
            Client::Remote(r) => {
                r.call(
                    reqwest::Method::PATCH,
                    &run_path(dag_id, run_id),
                    Some(json!({"state": state.as_str()})),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Deletes a run with its task instances, tries and outputs.
    pub async fn delete_run(&self, dag_id: &str, run_id: &str) -> anyhow::Result<()> {
        match self {
            Client::Local(store) => {
                let run = store.get_run(dag_id, run_id).await?;
                store.delete_run(run.pk).await?;
                store
                    .audit(
                        &crate::cmd::cli_actor(),
                        "run.delete",
                        &format!("{dag_id}/{run_id}"),
                        "",
                    )
                    .await?;
            }
            Client::Remote(r) => {
                r.call(reqwest::Method::DELETE, &run_path(dag_id, run_id), None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes a DAG's metadata (refused while a run is queued or running).
    pub async fn delete_dag(&self, dag_id: &str) -> anyhow::Result<()> {
        match self {
            Client::Local(store) => {
                store.delete_dag(dag_id).await?;
                store
                    .audit(&crate::cmd::cli_actor(), "dag.delete", dag_id, "")
                    .await?;
            }
            Client::Remote(r) => {
                r.call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/dags/{}", seg(dag_id)),
                    None,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Every item of `what` (for tokens: every token locally, the caller's or all for an
    /// admin remotely), as JSON objects spelled as the API spells them (never a secret).
    pub async fn list(&self, what: Listing) -> anyhow::Result<Vec<Value>> {
        let store = match self {
            Client::Local(store) => store,
            Client::Remote(r) => {
                let (path, key) = what.route();
                let mut v = r.get(path).await?;
                return Ok(v[key]
                    .as_array_mut()
                    .map(std::mem::take)
                    .unwrap_or_default());
            }
        };
        let list = match what {
            Listing::Pools => serde_json::to_value(store.list_pools().await?)?,
            Listing::Agents => serde_json::to_value(store.list_agents().await?)?,
            Listing::Tokens => serde_json::to_value(store.list_tokens().await?)?,
            Listing::Users => serde_json::to_value(store.list_users().await?)?,
            Listing::Connections => Value::Array(
                store
                    .list_connections()
                    .await?
                    .iter()
                    .map(tern_server::api::admin::connection_json)
                    .collect(),
            ),
            Listing::Variables => Value::Array(
                store
                    .list_variables()
                    .await?
                    .iter()
                    .map(tern_server::api::variables::variable_json)
                    .collect(),
            ),
        };
        Ok(match list {
            Value::Array(a) => a,
            _ => Vec::new(),
        })
    }

    /// Removes one item of `what` by its name (or id): deletes a pool, connection, user or
    /// variable, revokes an agent or token; recorded in the audit log.
    pub async fn remove(&self, what: Listing, key: &str) -> anyhow::Result<()> {
        match self {
            Client::Local(store) => {
                let id = || {
                    key.parse::<i64>()
                        .map_err(|_| anyhow::anyhow!("{key:?} is not an id (a whole number)"))
                };
                match what {
                    Listing::Pools => store.delete_pool(key).await?,
                    Listing::Connections => store.delete_connection(key).await?,
                    Listing::Users => store.delete_user(key).await?,
                    Listing::Variables => store.delete_variable(key).await?,
                    Listing::Agents => {
                        let agent = id()?;
                        store.get_agent(agent).await?;
                        store.revoke_agent(agent).await?;
                    }
                    Listing::Tokens => store.revoke_token(id()?).await?,
                }
                store
                    .audit(&crate::cmd::cli_actor(), what.removal(), key, "")
                    .await?;
            }
            Client::Remote(r) => {
                let (path, _) = what.route();
                r.call(
                    reqwest::Method::DELETE,
                    &format!("{path}/{}", seg(key)),
                    None,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The control plane's connections as an export lists them (secrets masked unless
    /// `include_secrets`, which is audited). `key` opens the local secret key (local mode only).
    pub async fn export_connections(
        &self,
        key: impl FnOnce() -> anyhow::Result<tern_server::secrets::SecretBox>,
        include_secrets: bool,
    ) -> anyhow::Result<Vec<Value>> {
        match self {
            Client::Local(store) => {
                let list =
                    tern_server::connections::export(store, &key()?, include_secrets).await?;
                if include_secrets {
                    store
                        .audit(
                            &crate::cmd::cli_actor(),
                            "connection.export",
                            "",
                            "with secrets",
                        )
                        .await?;
                }
                Ok(list)
            }
            Client::Remote(r) => {
                let mut v = r
                    .get(&format!(
                        "/api/v1/connections-export?include_secrets={include_secrets}"
                    ))
                    .await?;
                Ok(v["connections"]
                    .as_array_mut()
                    .map(std::mem::take)
                    .unwrap_or_default())
            }
        }
    }

    /// Adds the connections of an export (`list`), sealed with the control plane's key;
    /// returns their names.
    pub async fn import_connections(
        &self,
        key: impl FnOnce() -> anyhow::Result<tern_server::secrets::SecretBox>,
        list: Value,
        replace: bool,
    ) -> anyhow::Result<Vec<String>> {
        let entries = tern_server::connections::import_entries(&list)?;
        let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        match self {
            Client::Local(store) => {
                tern_server::connections::import(store, &key()?, &entries, replace).await?;
                store
                    .audit(
                        &crate::cmd::cli_actor(),
                        "connection.import",
                        &names.join(","),
                        "",
                    )
                    .await?;
            }
            Client::Remote(r) => {
                r.call(
                    reqwest::Method::POST,
                    "/api/v1/connections-import",
                    Some(json!({"connections": list, "replace": replace})),
                )
                .await?;
            }
        }
        Ok(names)
    }

    /// Tries a connection from the control plane: whether it answered, and what happened.
    pub async fn test_connection(
        &self,
        key: impl FnOnce() -> anyhow::Result<tern_server::secrets::SecretBox>,
        name: &str,
    ) -> anyhow::Result<(bool, String)> {
        match self {
            Client::Local(store) => {
                let c = tern_server::connections::parsed(store, &key()?, name)
                    .await?
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "no connection {name:?}; `tern connections list` shows them"
                        )
                    })?;
                Ok(match tern_worker::data::test_connection(&c).await {
                    Ok(what) => (true, what),
                    Err(e) => (false, e.to_string()),
                })
            }
            Client::Remote(r) => {
                let v = r
                    .call(
                        reqwest::Method::POST,
                        &format!("/api/v1/connections/{}/test", seg(name)),
                        Some(json!({})),
                    )
                    .await?;
                Ok((
                    v["ok"] == true,
                    v["message"].as_str().unwrap_or_default().to_string(),
                ))
            }
        }
    }

    /// Creates or resizes a pool.
    pub async fn set_pool(&self, name: &str, slots: i64, description: &str) -> anyhow::Result<()> {
        match self {
            Client::Local(store) => {
                store.set_pool(name, slots, description).await?;
                store
                    .audit(
                        &crate::cmd::cli_actor(),
                        "pool.set",
                        name,
                        &format!("slots={slots}"),
                    )
                    .await?;
            }
            Client::Remote(r) => {
                r.call(
                    reqwest::Method::PUT,
                    &format!("/api/v1/pools/{}", seg(name)),
                    Some(json!({"slots": slots, "description": description})),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Deletes a user with their tokens and sessions (never the last admin).
    pub async fn delete_user(&self, username: &str) -> anyhow::Result<()> {
        match self {
            Client::Local(store) => {
                store.delete_user(username).await?;
                store
                    .audit(&crate::cmd::cli_actor(), "user.delete", username, "")
                    .await?;
            }
            Client::Remote(r) => {
                r.call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/users/{}", seg(username)),
                    None,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Every DAG, also those no file declares any more, as the API lists them (JSON objects:
    /// the DAG's row with its tags, description and task count).
    pub async fn dags(&self) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            let (page, total) = match self {
                Client::Local(store) => {
                    let q = tern_server::api::dags::DagListQuery {
                        search: None,
                        tag: None,
                        paused: None,
                        include_inactive: true,
                        limit: Some(1000),
                        offset: out.len(),
                    };
                    let p = tern_server::api::dags::dag_summaries(store, &q).await?;
                    (p.dags, p.total)
                }
                Client::Remote(r) => {
                    let v = r
                        .get(&format!(
                            "/api/v1/dags?include_inactive=true&limit=1000&offset={}",
                            out.len()
                        ))
                        .await?;
                    let page = v["dags"].as_array().cloned().unwrap_or_default();
                    (page, v["total"].as_u64().unwrap_or(0) as usize)
                }
            };
            let empty = page.is_empty();
            out.extend(page);
            if empty || out.len() >= total {
                return Ok(out);
            }
        }
    }

    /// How many DAG files fail to load now.
    pub async fn import_error_count(&self) -> anyhow::Result<usize> {
        Ok(match self {
            Client::Local(store) => store.import_errors().await?.len(),
            Client::Remote(r) => r.get("/api/v1/importErrors").await?["import_errors"]
                .as_array()
                .map_or(0, Vec::len),
        })
    }

    /// Runs newest first, of one DAG or of all, as the API lists them (JSON objects).
    pub async fn run_list(
        &self,
        dag_id: Option<&str>,
        state: Option<RunState>,
        limit: i64,
    ) -> anyhow::Result<Vec<Value>> {
        match self {
            Client::Local(store) => Ok(store
                .list_runs(dag_id, state, limit)
                .await?
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?),
            Client::Remote(r) => {
                let mut path = format!(
                    "/api/v1/dags/{}/dagRuns?limit={limit}",
                    seg(dag_id.unwrap_or("~"))
                );
                if let Some(st) = state {
                    path.push_str(&format!("&state={st}"));
                }
                Ok(r.get(&path).await?["dag_runs"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default())
            }
        }
    }

    /// A run as `runs show` prints it: `{run, tasks, outputs, tries}` (the run's record, its
    /// task instances, their outputs by task, and with `with_tries` every instance's tries by
    /// label, without their storage paths), the same whichever mode read it.
    pub async fn run_detail(
        &self,
        dag_id: &str,
        run_id: &str,
        with_tries: bool,
    ) -> anyhow::Result<Value> {
        let mut tries = serde_json::Map::new();
        let (run, tasks, outputs) = match self {
            Client::Local(store) => {
                let run = store.get_run(dag_id, run_id).await?;
                let tis = store.task_instances(run.pk).await?;
                if with_tries {
                    for ti in &tis {
                        let mut list = serde_json::to_value(store.task_tries(ti.id).await?)?;
                        strip_log_paths(&mut list);
                        tries.insert(ti.label(), list);
                    }
                }
                let outputs = serde_json::to_value(store.run_outputs(run.pk).await?)?;
                (
                    serde_json::to_value(&run)?,
                    serde_json::to_value(&tis)?,
                    outputs,
                )
            }
            Client::Remote(r) => {
                let path = run_path(dag_id, run_id);
                let v = r.get(&path).await?;
                if with_tries {
                    for t in v["task_instances"].as_array().into_iter().flatten() {
                        let task = t["task_id"].as_str().unwrap_or_default();
                        let map_index = t["map_index"].as_i64().unwrap_or(-1);
                        let label = tern_core::mapping::instance_label(task, map_index);
                        let query = if map_index >= 0 {
                            format!("?map_index={map_index}")
                        } else {
                            String::new()
                        };
                        let ti = r
                            .get(&format!("{path}/taskInstances/{}{query}", seg(task)))
                            .await?;
                        tries.insert(label, ti["tries"].clone());
                    }
                }
                let outputs = r.get(&format!("{path}/outputs")).await?["outputs"].clone();
                (v["dag_run"].clone(), v["task_instances"].clone(), outputs)
            }
        };
        let mut detail = json!({"run": run, "tasks": tasks, "outputs": outputs});
        if with_tries {
            detail["tries"] = Value::Object(tries);
        }
        Ok(detail)
    }
}

/// Tries as the API shows them: where their logs are stored is the server's business.
fn strip_log_paths(tries: &mut Value) {
    for t in tries.as_array_mut().into_iter().flatten() {
        if let Some(o) = t.as_object_mut() {
            o.remove("log_path");
        }
    }
}

fn run_path(dag_id: &str, run_id: &str) -> String {
    format!("/api/v1/dags/{}/dagRuns/{}", seg(dag_id), seg(run_id))
}
