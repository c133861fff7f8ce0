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
    let dags = cfg.dags_folder();
    if standalone && !args.no_examples && crate::examples::install_if_empty(&dags)? {
        eprintln!("tern: wrote the example DAGs into {}", dags.display());
    }
    let node = Node::start(&cfg, Roles::STANDALONE).await?;
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
    eprintln!("  data:     {}", cfg.home.display());
    eprintln!(
        "  dags:     {} ({dag_count} DAGs, {errors} import errors)",
        dags.display()
    );
    eprintln!("  database: {}", cfg.database_url());
    eprintln!(
        "Press Ctrl-C to stop. Try `tern dags list` and `tern runs list` in another terminal."
    );
    super::interrupted().await;
    eprintln!("tern: stopping; running tasks are stopped and will be retried per their policy");
    node.shutdown().await;
    Ok(0)
}
