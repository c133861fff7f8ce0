//! Task logs in an object store (`logs.store`): two servers on one PostgreSQL with no shared
//! folder read a running task's log the same (tail, stream, download, CLI) whichever of them
//! received its chunks; an ended try's log becomes one object and leaves the database; a store
//! that is down loses nothing and gets the log once it is back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tern_testkit::s3::{S3, SECRET};

use crate::api::{call, token_for};
use crate::harness::{exchange, finished, run_state, Tern, DEADLINE};

const TALK: &str = r#"
dag(id = "talk")
shell(id = "talk", cmd = "for i in 1 2 3 4 5 6 7 8; do echo line-$i é; sleep 0.4; done")
"#;

/// Points `t` at log store `uri` (the last section of its settings).
fn log_store(t: &Tern, uri: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(t.path().join("tern.toml"))
        .unwrap();
    writeln!(f, "\n[logs]\nstore = {uri:?}").unwrap();
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_ending(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const LOG: &str = "/api/v1/dags/talk/dagRuns/r1/taskInstances/talk/logs/1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_tasks_log_reads_the_same_from_a_server_that_never_received_it() {
    let db = tern_testkit::TestDb::postgres().await;
    let s3 = S3::start().await;
    let uri = s3
        .uri("datalake", SECRET)
        .replacen("@datalake?", "@datalake/tern/logs?", 1);
    let store = tern_store::Store::open(&db.url).await.unwrap();
    tokio::task::block_in_place(|| {
        // Server A runs the task; server B has no agent and another data folder.
        let mut a = Tern::new();
        a.database_url = Some(db.url.clone());
        log_store(&a, &uri);
        let mut b = Tern::new();
        b.database_url = Some(db.url.clone());
        b.dags = a.dags.clone();
        b.agent_setting("enabled = false");
        log_store(&b, &uri);
        a.write_dag("talk.star", TALK);
        let (_sa, _) = crate::links::server_on(&a, 0);
        let (_sb, url_b) = crate::links::server_on(&b, 0);
        let token = token_for(&a, "reader", "viewer");
        a.ok(&["dags", "trigger", "talk", "--run-id", "r1"]);

        // Live, from B: the first lines while the task still runs.
        let first = until("the first lines on server B", || {
            let (status, v) = call(&url_b, "GET", LOG, Some(&token), "");
            (status == 200 && v["content"].as_str().unwrap_or("").contains("line-1")).then_some(v)
        });
        assert_eq!(first["ended"], false, "{first}");
        assert!(
            !first["content"].as_str().unwrap().contains("line-8"),
            "read while it runs: {first}"
        );
        assert!(
            !b.path().join("logs").exists(),
            "server B keeps no log files"
        );
        // The stream from B follows the log to its end.
        let (status, _, events) = exchange(
            &url_b,
            "GET",
            &format!("{LOG}/stream"),
            &[("Authorization", &format!("Bearer {token}"))],
            "application/json",
            "",
        );
        assert_eq!(status, 200);
        let said = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| {
                    l.split_once("Z line-")
                        .map(|(_, rest)| format!("line-{rest}"))
                })
                .collect()
        };
        let expected: Vec<String> = (1..=8).map(|i| format!("line-{i} é")).collect();
        assert_eq!(said(&events), expected, "{events}");
        assert!(events.contains("event: end"), "{events}");
        let v = a.wait_run("talk", "r1", "the run's end", finished);
        assert_eq!(run_state(&v), "success");

        // Shipped: one object holding the whole log, nothing left in the database.
        let object = until("the log's object", || {
            let found = files_ending(&s3.object("datalake", "tern/logs/talk"), ".1.log");
            let waiting = tokio::runtime::Handle::current()
                .block_on(store.logs_waiting_to_ship())
                .unwrap();
            (found.len() == 1 && waiting.0 == 0).then(|| found[0].clone())
        });
        let whole = std::fs::read_to_string(&object).unwrap();
        assert_eq!(said(&whole), expected, "{whole}");
        assert!(whole.ends_with("tern: task succeeded\n"), "{whole}");
        // Read from the object through B: the API, a download, and the CLI.
        let (_, v) = call(&url_b, "GET", LOG, Some(&token), "");
        assert_eq!(v["content"], whole.as_str(), "{v}");
        assert_eq!(v["ended"], true);
        let (_, v) = call(&url_b, "GET", &format!("{LOG}?offset=7"), Some(&token), "");
        assert_eq!(v["content"], &whole[7..], "an offset into the object");
        let (status, _, body) = exchange(
            &url_b,
            "GET",
            &format!("{LOG}/download"),
            &[("Authorization", &format!("Bearer {token}"))],
            "application/json",
            "",
        );
        assert_eq!((status, body.as_str()), (200, whole.as_str()));
        assert_eq!(b.log("talk", "r1", "talk", None), whole);
    });
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_store_that_is_down_keeps_logs_in_the_database_until_it_is_back() {
    let mut s3 = S3::start().await;
    s3.stop();
    let uri = s3.uri("datalake", SECRET) + "&timeout=2s";
    let t = Tern::new();
    log_store(&t, &uri);
    t.write_dag(
        "kept.star",
        r#"
dag(id = "kept")
shell(id = "say", cmd = "echo kept while the store is down")
"#,
    );
    let (sa, url) = tokio::task::block_in_place(|| {
        let mut sa = t.standalone();
        let url = crate::agents::server_url(&mut sa);
        t.ok(&["dags", "trigger", "kept", "--run-id", "r1"]);
        let v = t.wait_run("kept", "r1", "the run's end", finished);
        assert_eq!(run_state(&v), "success");
        (sa, url)
    });
    let store =
        tern_store::Store::open(&format!("sqlite://{}", t.path().join("tern.db").display()))
            .await
            .unwrap();
    // The upload failed and is retried; the log reads from the database meanwhile.
    let start = Instant::now();
    loop {
        let (waiting, error) = store.logs_waiting_to_ship().await.unwrap();
        if error.is_some() {
            assert_eq!(waiting, 1);
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no failed upload recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = tokio::task::block_in_place(|| t.log("kept", "r1", "say", None));
    assert!(log.contains(" kept while the store is down\n"), "{log}");
    // /health reports it, and stays healthy: nothing is lost.
    let (status, health) =
        tokio::task::block_in_place(|| crate::harness::http(&url, "GET", "/health", &[], ""));
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["task_logs"]["waiting_to_ship"], 1, "{health}");
    assert!(health["task_logs"]["last_error"].is_string(), "{health}");
    assert!(files_ending(&s3.object("datalake", ""), ".log").is_empty());

    // Back: the log is shipped on a later try and still reads the same.
    s3.resume().await;
    let start = Instant::now();
    while store.logs_waiting_to_ship().await.unwrap().0 > 0 {
        assert!(start.elapsed() < DEADLINE, "the log was never shipped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let objects = files_ending(&s3.object("datalake", ""), ".1.log");
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(std::fs::read_to_string(&objects[0]).unwrap(), log);
    let after = tokio::task::block_in_place(|| t.log("kept", "r1", "say", None));
    assert_eq!(after, log);
    store.close().await;
    drop(sa);
}

/// A log of many chunks (3 MB: about a hundred 32 KiB chunks, more than one page of the
/// database) is shipped whole, streamed page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_log_is_shipped_whole() {
    let objects = tempfile::tempdir().unwrap();
    let t = Tern::new();
    log_store(&t, &format!("file://{}", objects.path().display()));
    t.write_dag(
        "big.star",
        r#"
dag(id = "big")
shell(id = "say", cmd = "head -c 3000000 /dev/zero | tr '\\0' x | fold -w 100")
"#,
    );
    let _sa = tokio::task::block_in_place(|| {
        let sa = t.standalone();
        t.ok(&["dags", "trigger", "big", "--run-id", "r1"]);
        let v = t.wait_run("big", "r1", "the run's end", finished);
        assert_eq!(run_state(&v), "success", "{v:#}");
        sa
    });
    let store =
        tern_store::Store::open(&format!("sqlite://{}", t.path().join("tern.db").display()))
            .await
            .unwrap();
    let start = Instant::now();
    while store.logs_waiting_to_ship().await.unwrap().0 > 0 {
        assert!(start.elapsed() < DEADLINE, "the log was never shipped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await;
    let objects = files_ending(objects.path(), ".1.log");
    assert_eq!(objects.len(), 1, "{objects:?}");
    let text = std::fs::read_to_string(&objects[0]).unwrap();
    let full = "x".repeat(100);
    assert_eq!(
        text.lines()
            .filter(|l| l.ends_with(&format!("Z {full}")))
            .count(),
        30_000,
        "every line of output is in the object"
    );
    assert!(text.ends_with("tern: task succeeded\n"));
    let cli = tokio::task::block_in_place(|| t.log("big", "r1", "say", None));
    assert_eq!(cli, text, "the CLI reads the object");
}
