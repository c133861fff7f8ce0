//! Loading settings: defaults, then `tern.toml`, then environment, then flags.

use std::path::PathBuf;

use anyhow::Context;
use tern_server::Config;

use crate::cli::Cli;

/// Settings in force for this invocation.
pub fn load(cli: &Cli) -> anyhow::Result<Config> {
    let home = cli
        .home
        .clone()
        .unwrap_or_else(|| PathBuf::from("tern-home"));
    let file = cli.config.clone().or_else(|| {
        let f = home.join("tern.toml");
        f.exists().then_some(f)
    });
    let mut cfg = match &file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read settings file {}", f.display()))?;
            toml::from_str::<Config>(&text)
                .with_context(|| format!("invalid settings file {}", f.display()))?
        }
        None => Config::default(),
    };
    cfg.home = home;
    if let Some(d) = &cli.dags {
        cfg.dags_folder = Some(d.clone());
    }
    if let Some(url) = &cli.database_url {
        cfg.database_url = Some(url.clone());
    }
    // The log store's URI usually carries a secret key: it may come from the environment.
    if let Some(store) = std::env::var("TERN_LOGS_STORE")
        .ok()
        .filter(|s| !s.is_empty())
    {
        cfg.logs.store = Some(store);
    }
    cfg.validate()?;
    Ok(cfg)
}
