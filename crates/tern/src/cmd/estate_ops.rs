//! `tern pools list|set|delete`, `connections list|delete`, `agents list|revoke`, `tokens
//! list|revoke`, `users list` and `variables list|delete`, written once over [`Client`]: the
//! same code lists and removes on the metadata database or, with `--server`, through the
//! REST API, and prints the same table (or JSON) either way.

use serde_json::Value;

use crate::cli::{AgentsCmd, Command, ConnectionsCmd, PoolsCmd, TokensCmd, UsersCmd, VariablesCmd};
use crate::client::{Client, Listing};
use crate::output::{self, print};

/// Whether `command` is one of this module's.
pub fn handles(command: &Command) -> bool {
    matches!(
        command,
        Command::Pools(_)
            | Command::Connections(ConnectionsCmd::List(_) | ConnectionsCmd::Delete { .. })
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

pub async fn run(client: &Client, command: Command) -> anyhow::Result<i32> {
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
