//! `tern users …` and `tern tokens …`: accounts with roles, and the API tokens that act for them.
//! Passwords are hashed with argon2 before they reach the store; tokens are printed once. Every
//! change is recorded in the audit log as done by `cli:<os user>`.

use anyhow::Context;
use tern_server::auth::{hash_password, random_password, Role};
use tern_server::Config;

use super::cli_actor;
use crate::cli::{TokensCmd, UsersCmd};

pub async fn users(cfg: Config, cmd: UsersCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    match cmd {
        UsersCmd::Add {
            username,
            role,
            password_stdin,
        } => {
            let role = Role::parse(&role).with_context(|| {
                format!(
                    "unknown role {role:?}; use one of: {}",
                    Role::NAMES.join(", ")
                )
            })?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                let p = line.trim_end_matches(['\n', '\r']).to_string();
                anyhow::ensure!(p.len() >= 8, "the password must have at least 8 characters");
                (p, false)
            } else {
                (random_password(), true)
            };
            store
                .create_user(&username, role.as_str(), &hash_password(&password))
                .await?;
            store
                .audit(&cli_actor(), "user.add", &username, role.as_str())
                .await?;
            eprintln!("user {username} added with role {}", role.as_str());
            if generated {
                println!("{password}");
                eprintln!("(the password above is shown once; it is stored only as a hash)");
            }
        }
        // Written once for both modes in `client_ops` and `estate_ops`.
        UsersCmd::Delete { .. } | UsersCmd::List(_) => {
            anyhow::bail!("internal error: users delete/list are client operations")
        }
    }
    Ok(0)
}

pub async fn tokens(cfg: Config, cmd: TokensCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    match cmd {
        TokensCmd::Create {
            username,
            name,
            expires,
        } => {
            let expires_at = match expires {
                None => None,
                Some(e) => {
                    let d = tern_core::parse_duration(&e).context("--expires")?;
                    let max = tern_server::api::admin::MAX_TOKEN_DAYS;
                    if d > std::time::Duration::from_secs(max as u64 * 86_400) {
                        anyhow::bail!(
                            "--expires {e}: a token lasts at most {max} days; leave --expires out for one that does not expire"
                        );
                    }
                    Some(chrono::Utc::now() + chrono::Duration::from_std(d)?)
                }
            };
            let (token, value) = store.create_token(&username, &name, expires_at).await?;
            store
                .audit(
                    &cli_actor(),
                    "token.create",
                    &format!("{username}/{}", token.id),
                    &name,
                )
                .await?;
            println!("{value}");
            eprintln!(
                "token {} for {username} (shown once; send it as `Authorization: Bearer …`)",
                token.id
            );
        }
        // Written once for both modes in `estate_ops`.
        TokensCmd::List(_) | TokensCmd::Revoke { .. } => {
            anyhow::bail!("internal error: tokens list/revoke are client operations")
        }
    }
    Ok(0)
}
