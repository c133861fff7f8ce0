//! `tern variables …`: the variables the control plane keeps (secret ones sealed with its
//! secret key). Listings never print a secret value; `get --reveal` does, locally only.
//! `print_list` and `print_value` are the one output of these commands, whether they asked
//! the database or a server.

use anyhow::Context;
use serde_json::Value;
use tern_server::secrets::SecretBox;
use tern_server::Config;

use crate::cli::{Output, VariablesCmd};
use crate::output::print;

pub async fn run(cfg: Config, cmd: VariablesCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    let secrets = || SecretBox::load(&cfg.home).context("the secret key");
    match cmd {
        VariablesCmd::Set {
            key,
            value,
            value_stdin: _,
            secret,
            description,
        } => {
            let value = read_value(value)?;
            tern_server::variables::set(&store, &secrets()?, &key, &value, secret, &description)
                .await?;
            store
                .audit(
                    &super::cli_actor(),
                    "variable.put",
                    &key,
                    if secret { "secret" } else { "" },
                )
                .await?;
            print_set(&key, secret);
        }
        VariablesCmd::Get { key, reveal } => {
            let Some((v, value)) = tern_server::variables::get(&store, &secrets()?, &key).await?
            else {
                anyhow::bail!("no variable {key:?}; `tern variables list` shows them");
            };
            if v.is_secret && !reveal {
                anyhow::bail!("variable {key:?} is secret; add --reveal to print its value");
            }
            println!("{value}");
        }
        // Written once for both modes in `estate_ops`.
        VariablesCmd::List(_) | VariablesCmd::Delete { .. } => {
            anyhow::bail!("internal error: variables list/delete are client operations")
        }
    }
    Ok(0)
}

/// The value given on the command line, or one line of standard input.
pub fn read_value(value: Option<String>) -> anyhow::Result<String> {
    match value {
        Some(v) => Ok(v),
        None => {
            let mut line = String::new();
            super::connections::read_secret_line("value (not shown): ", &mut line)
                .context("reading the value from standard input (--value-stdin)")?;
            Ok(line.trim_end_matches(['\n', '\r']).to_string())
        }
    }
}

pub fn print_set(key: &str, secret: bool) {
    if secret {
        eprintln!("variable {key} set (secret: encrypted at rest, masked in task logs)");
    } else {
        eprintln!("variable {key} set");
    }
}

/// The variables as the API shows them (`value` null for a secret one).
pub fn print_list(out: Output, vars: &[Value]) {
    let rows = vars
        .iter()
        .map(|v| {
            vec![
                v["key"].as_str().unwrap_or_default().to_string(),
                match v["value"].as_str() {
                    Some(s) if v["is_secret"] != true => s.chars().take(60).collect(),
                    _ => "(secret)".to_string(),
                },
                v["description"].as_str().unwrap_or_default().to_string(),
                v["updated_at"]
                    .as_str()
                    .map(|t| t.get(..19).unwrap_or(t).replace('T', " "))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print(
        out,
        &["KEY", "VALUE", "DESCRIPTION", "UPDATED"],
        rows,
        &vars,
    );
}
