//! `ui`: server time of the web UI's heaviest pages at scale. A control plane (SQLite, HTTP on
//! loopback, no scheduler or agent so nothing changes while measuring) with 1,000 DAGs of 5
//! tasks that have 3 runs each, and one DAG of 10,000 tasks with 6 runs; each page is fetched
//! whole over a fresh connection with a logged-in session, as a browser would.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use tern_server::trigger::{trigger, TriggerRequest};
use tern_server::{Node, Roles};

fn write_dags(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in 0..1000 {
        let s = format!(
            "dag(id = \"dag_{f:04}\", schedule = \"@daily\", start_date = \"2026-01-01\", tags = [\"team{}\"])\n\
             prev = None\nfor i in range(5):\n    t = shell(id = \"task_%d\" % i, cmd = \"true\")\n    if prev:\n        prev >> t\n    prev = t\n",
            f % 10
        );
        std::fs::write(dir.join(format!("dag_{f:04}.star")), s)?;
    }
    std::fs::write(
        dir.join("big.star"),
        "dag(id = \"big\")\nroot = shell(id = \"root\", cmd = \"true\")\n\
         for i in range(9999):\n    root >> shell(id = \"t%d\" % i, cmd = \"true\")\n",
    )?;
    Ok(())
}

/// GET `path` with the session cookie; the whole answer's time in ms and its size.
fn fetch(addr: &std::net::SocketAddr, path: &str, cookie: &str) -> anyhow::Result<(f64, usize)> {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let took = start.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        out.starts_with(b"HTTP/1.1 200"),
        "{path}: {}",
        String::from_utf8_lossy(&out[..out.len().min(300)])
    );
    Ok((took, out.len()))
}

pub async fn ui(runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dags = dir.path().join("dags");
    write_dags(&dags)?;
    let mut cfg = crate::config(dir.path(), &dags, None);
    cfg.server.bind = "127.0.0.1:0".into();
    let node = Node::start(
        &cfg,
        Roles {
            scheduler: false,
            local_agent: false,
            ..Roles::STANDALONE
        },
    )
    .await?;
    let addr = node.http_addr.expect("http role");
    tern_server::dagsync::sync_folder(&node.store, &dags).await?;
    let listed = node.store.list_dags().await?.len();
    anyhow::ensure!(listed == 1001, "{listed} DAGs loaded");
    let started = Instant::now();
    for f in 0..1000 {
        for r in 0..3 {
            let req = TriggerRequest {
                dag_id: format!("dag_{f:04}"),
                run_id: Some(format!("r{r}")),
                ..Default::default()
            };
            trigger(&node.store, &req).await?;
        }
    }
    for r in 0..6 {
        let req = TriggerRequest {
            dag_id: "big".into(),
            run_id: Some(format!("big{r}")),
            ..Default::default()
        };
        trigger(&node.store, &req).await?;
    }
    eprintln!(
        "ui: 3,000 small runs and 6 runs of 10,000 tasks created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let user = node.store.create_user("bench", "admin", "x").await?;
    let (session, _) = node
        .store
        .create_session(user.id, std::time::Duration::from_secs(3600))
        .await?;
    let cookie = format!("tern_session={session}");
    for (name, path) in [
        ("ui: DAG list (1,000 DAGs)", "/dags"),
        ("ui: DAG list, search", "/dags?search=dag_09&tag=team9"),
        ("ui: grid (10,000 tasks)", "/dags/big"),
        ("ui: graph (10,000 tasks)", "/dags/big?tab=graph"),
        ("ui: run page (10,000 tasks)", "/dags/big/runs/big5"),
        ("api: GET /api/v1/dags", "/api/v1/dags?limit=1000"),
    ] {
        let (_, bytes) = fetch(&addr, path, &cookie)?; // warm caches
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(fetch(&addr, path, &cookie)?.0);
        }
        crate::summary(&format!("{name} {}kB", bytes / 1024), "ms", times);
    }
    node.shutdown().await;
    Ok(())
}
