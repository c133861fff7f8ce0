//! `tern pools list|set|delete`, `connections list|delete`, `agents list|revoke`, `tokens
//! list|revoke`, `users list` and `variables list|delete`, written once over [`Client`]: the
//! same code lists and removes on the metadata database or, with `--server`, through the
//! REST API, and prints the same table (or JSON) either way.

use serde_json::Value;

use crate::cli::{
    AgentsCmd, Command, ConnectionsCmd, ExportFormat, PoolsCmd, TokensCmd, UsersCmd, VariablesCmd,
};
use crate::client::{Client, Listing};
use crate::output::{self, print};

/// Whether `command` is one of this module's.
pub fn handles(command: &Command) -> bool {
    matches!(
        command,
        Command::Pools(_)
            | Command::Connections(
                ConnectionsCmd::List(_)
                    | ConnectionsCmd::Delete { .. }
                    | ConnectionsCmd::Export { .. }
                    | ConnectionsCmd::Import { .. }
                    | ConnectionsCmd::Test { .. }
            )
            | Command::Agents(AgentsCmd::List(_) | AgentsCmd::Revoke { .. })
            | Command::Tokens(TokensCmd::List(_) | TokensCmd::Revoke { .. })
            | Command::Users(UsersCmd::List(_))
            | Command::Variables(VariablesCmd::List(_) | VariablesCmd::Delete { .. })
    )
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn time(v: &Value) -> String {
    output::time(serde_json::from_value(v.clone()).ok())
}

fn joined(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// Reads an export: JSON, or YAML (what `connections export --format yaml` writes).
fn parse_export(text: &str, from: &str) -> anyhow::Result<Value> {
    use anyhow::Context;
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(_) => yaml_serde::from_str(text).with_context(|| {
            format!(
                "{from} is neither JSON nor YAML: expected what `tern connections export` prints"
            )
        }),
    }
}

pub async fn run(client: &Client, home: &std::path::Path, command: Command) -> anyhow::Result<i32> {
    use anyhow::Context;
    let key = || tern_server::secrets::SecretBox::load(home).context("the secret key");
    match command {
        Command::Pools(PoolsCmd::List(o)) => {
            let pools = client.list(Listing::Pools).await?;
            let rows = pools
                .iter()
                .map(|p| {
                    vec![
                        text(&p["name"]),
                        text(&p["slots"]),
                        text(&p["used"]),
                        text(&p["description"]),
                    ]
                })
                .collect();
            print(
                o.output,
                &["POOL", "SLOTS", "USED", "DESCRIPTION"],
                rows,
                &pools,
            );
        }
        Command::Pools(PoolsCmd::Set {
            name,
            slots,
            description,
        }) => {
            client.set_pool(&name, slots, &description).await?;
            eprintln!("pool {name} has {slots} slot(s)");
        }
        Command::Pools(PoolsCmd::Delete { name }) => {
            client.remove(Listing::Pools, &name).await?;
            eprintln!("pool {name} deleted");
        }
        Command::Connections(ConnectionsCmd::List(o)) => {
            let list = client.list(Listing::Connections).await?;
            let rows = list
                .iter()
                .map(|c| {
                    vec![
                        text(&c["name"]),
                        text(&c["conn_type"]),
                        text(&c["host"]),
                        text(&c["login"]),
                        text(&c["description"]),
                    ]
                })
                .collect();
            print(
                o.output,
                &["NAME", "TYPE", "HOST", "LOGIN", "DESCRIPTION"],
                rows,
                &list,
            );
        }
        Command::Connections(ConnectionsCmd::Delete { name }) => {
            client.remove(Listing::Connections, &name).await?;
            eprintln!("connection {name} deleted");
        }
        Command::Connections(ConnectionsCmd::Export {
            include_secrets,
            format,
        }) => {
            let list = client.export_connections(key, include_secrets).await?;
            match format {
                ExportFormat::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                ExportFormat::Yaml => print!("{}", yaml_serde::to_string(&list)?),
            }
        }
        Command::Connections(ConnectionsCmd::Import { file, replace }) => {
            let from = file.display().to_string();
            let text = if from == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {from}"))?
            };
            let list = parse_export(&text, &from)?;
            let names = client
                .import_connections(key, list, replace)
                .await
                .with_context(|| format!("importing {from}"))?;
            eprintln!("{} connection(s) imported, encrypted at rest", names.len());
        }
        Command::Connections(ConnectionsCmd::Test { name }) => {
            let (ok, message) = client.test_connection(key, &name).await?;
            if ok {
                println!("ok: {message}");
            } else {
                eprintln!("failed: {message}");
                return Ok(1);
            }
        }
        Command::Agents(AgentsCmd::List(o)) => {
            let agents = client.list(Listing::Agents).await?;
            let rows = agents
                .iter()
                .map(|a| {
                    vec![
                        text(&a["id"]),
                        text(&a["name"]),
                        text(&a["site"]),
                        joined(&a["queues"]),
                        text(&a["version"]),
                        text(&a["address"]),
                        if a["revoked"] == true {
                            "revoked"
                        } else if a["connected"] == true {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        time(&a["last_seen"]),
                        text(&a["running"]),
                        joined(&a["connections"]),
                    ]
                })
                .collect();
            print(
                o.output,
                &[
                    "ID",
                    "NAME",
                    "SITE",
                    "QUEUES",
                    "VERSION",
                    "ADDRESS",
                    "CONNECTED",
                    "LAST SEEN",
                    "RUNNING",
                    "CONNECTIONS",
                ],
                rows,
                &agents,
            );
        }
        Command::Agents(AgentsCmd::Revoke { id }) => {
            client.remove(Listing::Agents, &id.to_string()).await?;
            eprintln!("agent {id} revoked; its running attempts will be retried elsewhere");
        }
        Command::Tokens(TokensCmd::List(o)) => {
            let list = client.list(Listing::Tokens).await?;
            let rows = list
                .iter()
                .map(|t| {
                    vec![
                        text(&t["id"]),
                        text(&t["username"]),
                        text(&t["name"]),
                        time(&t["expires_at"]),
                        time(&t["last_used_at"]),
                        if t["revoked"] == true { "revoked" } else { "" }.to_string(),
                    ]
                })
                .collect();
            print(
                o.output,
                &["ID", "USER", "NAME", "EXPIRES", "LAST USED", ""],
                rows,
                &list,
            );
        }
        Command::Tokens(TokensCmd::Revoke { id }) => {
            client.remove(Listing::Tokens, &id.to_string()).await?;
            eprintln!("token {id} revoked");
        }
        Command::Users(UsersCmd::List(o)) => {
            let list = client.list(Listing::Users).await?;
            let rows = list
                .iter()
                .map(|u| {
                    vec![
                        text(&u["username"]),
                        text(&u["role"]),
                        time(&u["created_at"]),
                        if u["disabled"] == true {
                            "disabled"
                        } else {
                            ""
                        }
                        .to_string(),
                    ]
                })
                .collect();
            print(o.output, &["USER", "ROLE", "CREATED", ""], rows, &list);
        }
        Command::Variables(VariablesCmd::List(o)) => {
            let vars = client.list(Listing::Variables).await?;
            crate::cmd::variables::print_list(o.output, &vars);
        }
        Command::Variables(VariablesCmd::Delete { key }) => {
            client.remove(Listing::Variables, &key).await?;
            eprintln!("variable {key} deleted");
        }
        _ => anyhow::bail!("internal error: not an estate command"),
    }
    Ok(0)
}
