//! `tern pools …`, `tern db migrate`, `tern config show`.

use tern_server::Config;

use crate::cli::{ConfigCmd, DbCmd, PoolsCmd};
use crate::output::print;

pub async fn pools(cfg: Config, cmd: PoolsCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    match cmd {
        PoolsCmd::List(o) => {
            let pools = store.list_pools().await?;
            let rows = pools
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.slots.to_string(),
                        p.used.to_string(),
                        p.description.clone(),
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
        PoolsCmd::Set {
            name,
            slots,
            description,
        } => {
            store.set_pool(&name, slots, &description).await?;
            eprintln!("pool {name} has {slots} slot(s)");
        }
        PoolsCmd::Delete { name } => {
            store.delete_pool(&name).await?;
            eprintln!("pool {name} deleted");
        }
    }
    Ok(0)
}

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
