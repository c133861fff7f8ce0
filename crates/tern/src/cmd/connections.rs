//! `tern connections …`: the connections the control plane keeps, sealed with its secret key.
//! Listings and `show` never print a password.

use anyhow::Context;
use serde_json::json;
use tern_server::secrets::SecretBox;
use tern_server::Config;

use crate::cli::{ConnectionsCmd, Output};

pub async fn run(cfg: Config, cmd: ConnectionsCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    let secrets = || SecretBox::load(&cfg.home).context("the secret key");
    match cmd {
        ConnectionsCmd::Add {
            name,
            uri,
            uri_stdin,
            extra,
            description,
            replace,
        } => {
            let uri = match (uri, uri_stdin) {
                (Some(u), _) => u,
                (None, _) => {
                    let mut line = String::new();
                    read_secret_line("connection URI (not shown): ", &mut line)
                        .context("reading the URI from standard input (--uri-stdin)")?;
                    let line = line.trim().to_string();
                    if line.is_empty() {
                        anyhow::bail!("--uri-stdin: standard input held no URI; pipe it in, e.g. `printf '%s\\n' \"$URI\" | tern connections add NAME --uri-stdin`");
                    }
                    line
                }
            };
            let extra = match extra {
                None => Default::default(),
                Some(text) => match serde_json::from_str(&text).context("--extra")? {
                    serde_json::Value::Object(m) => m,
                    _ => anyhow::bail!(
                        "--extra must be a JSON object, e.g. '{{\"sslmode\": \"require\"}}'"
                    ),
                },
            };
            let c = tern_server::connections::add(
                &store,
                &secrets()?,
                &name,
                &uri,
                extra,
                &description,
                replace,
            )
            .await?;
            eprintln!(
                "connection {name} ({}) saved, encrypted at rest",
                tern_worker::data::db::describe(&c)
            );
        }
        // Written once for both modes in `estate_ops`.
        ConnectionsCmd::List(_) | ConnectionsCmd::Delete { .. } => {
            anyhow::bail!("internal error: connections list/delete are client operations")
        }
        ConnectionsCmd::Show { name, out } => {
            let c = tern_server::connections::parsed(&store, &secrets()?, &name)
                .await?
                .with_context(|| {
                    format!("no connection {name:?}; `tern connections list` shows them")
                })?;
            let masker = tern_worker::mask::Masker::new(c.secrets());
            let v = json!({
                "name": c.name,
                "uri": masker.mask(&c.uri),
                "conn_type": c.conn_type,
                "host": c.host,
                "port": c.port,
                "login": c.login,
                "password": c.password.as_ref().map(|_| "***"),
                "schema": c.schema,
                "extra": c.public_fields()["extra"],
            });
            if out.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (k, val) in v.as_object().expect("an object") {
                    let text = match val {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    println!("{k:<10} {text}");
                }
            }
        }
        // Written once for both modes in `estate_ops`.
        ConnectionsCmd::Export { .. }
        | ConnectionsCmd::Import { .. }
        | ConnectionsCmd::Test { .. } => {
            anyhow::bail!("internal error: connections export/import/test are client operations")
        }
    }
    Ok(0)
}

/// Reads one line from standard input. At a terminal it prompts on stderr and does not echo
/// what is typed (the line may hold a password).
pub(crate) fn read_secret_line(prompt: &str, line: &mut String) -> std::io::Result<()> {
    use std::io::{IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        stdin.read_line(line)?;
        return Ok(());
    }
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    // SAFETY: termios calls on standard input with a struct owned here; echo is restored
    // before returning.
    unsafe {
        let mut term: libc::termios = std::mem::zeroed();
        let has_term = libc::tcgetattr(libc::STDIN_FILENO, &mut term) == 0;
        if has_term {
            let mut quiet = term;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet);
        }
        let read = stdin.read_line(line);
        if has_term {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &term);
        }
        eprintln!();
        read.map(|_| ())
    }
}
