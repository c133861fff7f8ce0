//! `tern standalone`: every role in one process on the embedded SQLite database.

use tern_server::{Config, Node, Roles};

use crate::cli::StandaloneArgs;

pub async fn run(mut cfg: Config, args: StandaloneArgs) -> anyhow::Result<i32> {
    if let Some(port) = args.port {
        cfg.server.bind = format!("127.0.0.1:{port}");
    }
    if let Some(bind) = args.bind {
        cfg.server.bind = bind;
    }
    let dags = cfg.dags_folder();
    if !args.no_examples && crate::examples::install_if_empty(&dags)? {
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
    eprintln!("tern standalone is running");
    eprintln!("  http:     http://{addr}/health");
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
