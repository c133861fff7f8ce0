//! `tern standalone` and `tern server`: every control-plane role in one process. Standalone
//! also writes the example DAGs into an empty DAG folder.

use tern_server::{Config, Node, Roles};

use crate::cli::StandaloneArgs;

pub async fn run(mut cfg: Config, args: StandaloneArgs, standalone: bool) -> anyhow::Result<i32> {
    if let Some(port) = args.port {
        cfg.server.bind = format!("127.0.0.1:{port}");
    }
    if let Some(bind) = args.bind {
        cfg.server.bind = bind;
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        cfg.server.tls_cert = args.tls_cert;
        cfg.server.tls_key = args.tls_key;
    }
    let stop = super::interrupt_signal();
    let dags = cfg.dags_folder();
    if standalone && !args.no_examples && crate::examples::install_if_empty(&dags)? {
        eprintln!("tern: wrote the example DAGs into {}", dags.display());
    }
    if !standalone {
        refuse_an_older_schema(&cfg).await?;
    }
    let node = Node::start(&cfg, Roles::STANDALONE).await?;
    let admin_password = first_admin(&node.store, &cfg.home).await?;
    let addr = node.http_addr.expect("standalone serves HTTP");
    let dag_count = node
        .store
        .list_dags()
        .await?
        .iter()
        .filter(|d| d.is_active)
        .count();
    let errors = node.store.import_errors().await?.len();
    eprintln!(
        "tern {} is running",
        if standalone { "standalone" } else { "server" }
    );
    let scheme = if cfg.server.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!("  http:     {scheme}://{addr}/health");
    eprintln!("  agents:   {scheme}://{addr}/agent/v1 (activate with `tern agents activation create --site NAME`)");
    eprintln!("  web UI:   {scheme}://{addr}/ (log in as admin)");
    eprintln!("  api:      {scheme}://{addr}/api/v1 (bearer tokens: `tern tokens create USER`; docs at /api/v1/docs)");
    if let Some(password) = &admin_password {
        eprintln!(
            "  admin:    user admin, password {password} (shown once; also in {}, mode 0600)",
            cfg.home.join("admin-password").display()
        );
    }
    eprintln!("  data:     {}", cfg.home.display());
    eprintln!(
        "  dags:     {} ({dag_count} DAGs, {errors} import errors)",
        dags.display()
    );
    eprintln!(
        "  database: {}",
        tern_server::config::mask_url(&cfg.database_url())
    );
    eprintln!(
        "Press Ctrl-C to stop. Try `tern dags list` and `tern runs list` in another terminal."
    );
    tern_worker::resident::start_is_over();
    let failure = tokio::select! {
        _ = stop => None,
        why = node.failure() => Some(why),
    };
    eprintln!("tern: stopping; running tasks are stopped and will be retried per their policy");
    node.shutdown().await;
    if let Some(why) = failure {
        // Exit with the error so a service manager (systemd, a container runtime) restarts
        // the whole process rather than leaving one that looks healthy and does nothing.
        anyhow::bail!("{why}; tern stopped so that its service manager restarts it");
    }
    Ok(0)
}

/// With no user at all, creates `admin` with a random password, saves the password in
/// `HOME/admin-password` (mode 0600) and returns it; otherwise `None`.
async fn first_admin(
    store: &tern_store::Store,
    home: &std::path::Path,
) -> anyhow::Result<Option<String>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !store.list_users().await?.is_empty() {
        return Ok(None);
    }
    let password = tern_server::auth::random_password();
    match store
        .create_user(
            "admin",
            "admin",
            &tern_server::auth::hash_password(&password),
        )
        .await
    {
        Ok(_) => {}
        // Another server on the same database made it first.
        Err(tern_store::StoreError::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    store.audit("tern", "user.add", "admin", "admin").await?;
    let path = home.join("admin-password");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(f, "{password}")?;
    Ok(Some(password))
}

/// `tern server` upgrades no schema: other servers of the older version may be using it. It
/// initialises an empty database, and refuses one an older tern made until `tern db migrate`
/// has run (`standalone`, one process, migrates by itself).
async fn refuse_an_older_schema(cfg: &Config) -> anyhow::Result<()> {
    let url = cfg.database_url();
    let store = match tern_store::Store::connect(&url).await {
        Ok(s) => s,
        // Not there yet (a new SQLite file's folder): starting creates and initialises it.
        Err(_) => return Ok(()),
    };
    let refused = super::refuse_an_older_schema(&store, &url, "a server").await;
    store.close().await;
    refused
}
