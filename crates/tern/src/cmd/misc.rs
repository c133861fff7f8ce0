//! `tern db migrate`, `tern secrets rotate`, `tern config show` (`tern pools …` is in [`super::estate_ops`]).

use tern_server::Config;

use crate::cli::{ConfigCmd, DbCmd, SecretsCmd};

pub async fn secrets(cfg: Config, cmd: SecretsCmd) -> anyhow::Result<i32> {
    use anyhow::Context;
    match cmd {
        SecretsCmd::Rotate { new_key_file } => {
            let given = new_key_file
                .map(|f| {
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("--new-key-file {}", f.display()))
                })
                .transpose()?;
            let store = super::open_store(&cfg).await?;
            let r = tern_server::secrets::rotate(&store, &cfg.home, given.as_deref()).await?;
            let what = format!(
                "{} connection(s) and {} secret variable(s)",
                r.resealed.connections, r.resealed.variables
            );
            store
                .audit(&super::cli_actor(), "secrets.rotate", "", &what)
                .await?;
            eprintln!("re-encrypted {what} under a new key");
            if r.from_env {
                eprintln!(
                    "the new key is in {} (mode 0600): set TERN_SECRET_KEY to it on every server of this \
                     control plane and restart them (while they restart, \"NEW,OLD\" lets each read both); then delete the file",
                    r.key_file.display()
                );
            } else {
                eprintln!(
                    "{} holds the new key; the old one is in {}.old, needed only to read backups taken \
                     before now. Restart every server of this control plane so it reads the new key",
                    r.key_file.display(),
                    r.key_file.display()
                );
            }
        }
    }
    Ok(0)
}

pub async fn db(cfg: Config, cmd: DbCmd) -> anyhow::Result<i32> {
    match cmd {
        DbCmd::Migrate => {
            super::migrate_store(&cfg).await?;
            eprintln!("metadata database {} is up to date", cfg.database_url());
        }
    }
    Ok(0)
}

pub async fn config(cfg: Config, cmd: ConfigCmd) -> anyhow::Result<i32> {
    match cmd {
        ConfigCmd::Show => {
            let mut shown = cfg.clone();
            shown.dags_folder = Some(cfg.dags_folder());
            shown.database_url = Some(tern_server::config::mask_url(&cfg.database_url()));
            shown.logs.store = cfg.logs.store.as_deref().map(tern_server::config::mask_url);
            print!("{}", toml::to_string_pretty(&shown)?);
        }
    }
    Ok(0)
}
