//! `ui`: the web UI's heaviest pages at scale. A control plane (SQLite, HTTP on loopback, no
//! scheduler or agent so nothing changes while measuring) with 1,000 DAGs of 5 tasks that have
//! 3 runs each, and one DAG of 10,000 tasks with 25 runs; each page is fetched whole over a
//! fresh connection with a logged-in session (the server's time plus reading the answer),
//! then opened in headless Chromium (navigation start to the load event, what a person waits
//! for), and a live refresh of an unchanged page is timed (its `204`).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use tern_server::trigger::{trigger, TriggerRequest};
use tern_server::{Node, Roles};

/// The bench user's password (the browser logs in through the form with it).
const BENCH_PASSWORD: &str = "bench-password-1";

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
/// With `version`, as the page's live refresh asks (an unchanged page answers 204).
fn fetch(
    addr: &std::net::SocketAddr,
    path: &str,
    cookie: &str,
    version: Option<&str>,
) -> anyhow::Result<(f64, usize)> {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    let extra = version
        .map(|v| format!("X-Tern-Refresh: 1\r\nX-Tern-Version: {v}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n{extra}Connection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let took = start.elapsed().as_secs_f64() * 1000.0;
    let expected: &[u8] = if version.is_some() {
        b"HTTP/1.1 204"
    } else {
        b"HTTP/1.1 200"
    };
    anyhow::ensure!(
        out.starts_with(expected),
        "{path}: {}",
        String::from_utf8_lossy(&out[..out.len().min(300)])
    );
    Ok((took, out.len()))
}

pub async fn ui(runs: usize) -> anyhow::Result<()> {
    let dir = crate::scratch::folder()?;
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
    for r in 0..25 {
        let req = TriggerRequest {
            dag_id: "big".into(),
            run_id: Some(format!("big{r}")),
            ..Default::default()
        };
        trigger(&node.store, &req).await?;
    }
    eprintln!(
        "ui: 3,000 small runs and 25 runs of 10,000 tasks created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let user = node
        .store
        .create_user(
            "bench",
            "admin",
            &tern_server::auth::hash_password(BENCH_PASSWORD),
        )
        .await?;
    let (session, _) = node
        .store
        .create_session(user.id, std::time::Duration::from_secs(3600))
        .await?;
    let cookie = format!("tern_session={session}");
    let pages = [
        ("ui: DAG list (1,000 DAGs)", "/dags"),
        ("ui: DAG list, search", "/dags?search=dag_09&tag=team9"),
        ("ui: grid (10,000 tasks, 25 runs)", "/dags/big"),
        ("ui: graph (10,000 tasks)", "/dags/big?tab=graph"),
        ("ui: durations (10,000 tasks)", "/dags/big?tab=durations"),
        ("ui: run page (10,000 tasks)", "/dags/big/runs/big24"),
        (
            "ui: browse (every DAG's task instances)",
            "/browse?state=any",
        ),
        ("ui: activity", "/activity"),
        ("api: GET /api/v1/dags", "/api/v1/dags?limit=1000"),
    ];
    for (name, path) in pages {
        let (_, bytes) = fetch(&addr, path, &cookie, None)?; // warm caches
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(fetch(&addr, path, &cookie, None)?.0);
        }
        crate::summary(&format!("{name} {}kB", bytes / 1024), "ms", times);
    }
    // A live refresh of the unchanged grid and run page: the version check alone.
    for (name, path) in [
        ("ui: live refresh, grid unchanged (204)", "/dags/big"),
        (
            "ui: live refresh, run page unchanged (204)",
            "/dags/big/runs/big24",
        ),
    ] {
        let version = live_version(&addr, path, &cookie)?;
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(fetch(&addr, path, &cookie, Some(&version))?.0);
        }
        crate::summary(name, "ms", times);
    }
    match browser_times(&addr, ("bench", BENCH_PASSWORD), runs).await {
        Ok(()) => {}
        Err(e) => eprintln!("ui: no browser timings: {e:#}"),
    }
    node.shutdown().await;
    Ok(())
}

/// The `live-version` a page carries.
fn live_version(addr: &std::net::SocketAddr, path: &str, cookie: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let marker = "name=\"live-version\" content=\"";
    let at = out
        .find(marker)
        .ok_or_else(|| anyhow::anyhow!("{path} has no live version"))?;
    let rest = &out[at + marker.len()..];
    Ok(rest[..rest.find('"').unwrap_or(0)].to_string())
}

/// Navigation start → load event of each heavy page in headless Chromium, logged in through
/// the login form.
async fn browser_times(
    addr: &std::net::SocketAddr,
    (user, password): (&str, &str),
    runs: usize,
) -> anyhow::Result<()> {
    use std::process::{Command, Stdio};
    let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "chromedriver is not installed (apt-get install chromium chromium-driver)"
            )
        })?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let profile = tempfile::tempdir()?;
    let mut driver = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = async {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(start.elapsed().as_secs() < 30, "chromedriver did not start");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().display())
            ]}),
        );
        let c = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await?;
        let base = format!("http://{addr}");
        c.goto(&format!("{base}/login")).await?;
        c.find(fantoccini::Locator::Css("#username"))
            .await?
            .send_keys(user)
            .await?;
        c.find(fantoccini::Locator::Css("#password"))
            .await?
            .send_keys(password)
            .await?;
        c.find(fantoccini::Locator::Css("#login")).await?.click().await?;
        let start = Instant::now();
        while c.current_url().await?.path() == "/login" {
            anyhow::ensure!(start.elapsed().as_secs() < 30, "the bench user could not log in");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        for (name, path) in [
            ("browser: DAG list (1,000 DAGs)", "/dags"),
            ("browser: grid (10,000 tasks, 25 runs)", "/dags/big"),
            ("browser: run page (10,000 tasks)", "/dags/big/runs/big24"),
        ] {
            let mut times = Vec::new();
            for i in 0..=runs {
                c.goto(&format!("{base}{path}")).await?;
                let ms = c
                    .execute(
                        "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;",
                        vec![],
                    )
                    .await?
                    .as_f64()
                    .unwrap_or(f64::NAN);
                if i > 0 {
                    times.push(ms);
                }
            }
            crate::summary(name, "ms", times);
        }
        c.close().await?;
        Ok(())
    }
    .await;
    let _ = driver.kill();
    let _ = driver.wait();
    result
}
