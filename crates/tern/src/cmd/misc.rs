//! `tern db migrate`, `tern config show` (`tern pools …` is in [`super::estate_ops`]).

use tern_server::Config;

use crate::cli::{ConfigCmd, DbCmd};

pub async fn db(cfg: Config, cmd: DbCmd) -> anyhow::Result<i32> {
    match cmd {
        DbCmd::Migrate => {
            super::open_store(&cfg).await?;
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
            print!("{}", toml::to_string_pretty(&shown)?);
        }
    }
    Ok(0)
}
