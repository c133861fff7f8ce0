//! DAG bundles: two servers on one PostgreSQL, each with its own data folder and no DAG folder,
//! load their DAGs from a branch of a git repository. They load the same commit, DAG versions
//! record it, a bad commit shows its import error while the last good version keeps running,
//! and a fix is loaded on `POST /api/v1/dags/refresh`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{call, token_for};
use crate::harness::{finished, run_state, Tern, DEADLINE};

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(repo: &Path, file: &str, text: &str, message: &str) -> String {
    std::fs::write(repo.join(file), text).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

fn hello(word: &str) -> String {
    format!("dag(id = \"hello\")\nshell(id = \"say\", cmd = \"echo said-{word}\")\n")
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bundle_versions(url: &str, token: &str) -> Vec<(i64, Option<String>)> {
    let (status, v) = call(url, "GET", "/api/v1/dags/hello/versions", Some(token), "");
    if status != 200 {
        return Vec::new();
    }
    v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["bundle_version"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_load_the_same_commit_of_a_git_bundle_and_keep_the_last_good_one() {
    let db = tern_testkit::TestDb::postgres().await;
    tokio::task::block_in_place(|| {
        let repo_dir = tempfile::tempdir().unwrap();
        let repo = repo_dir.path();
        git(repo, &["init", "-q", "-b", "main"]);
        let first = commit(repo, "hello.star", &hello("one"), "first");
        let source = format!("git+file://{}#main", repo.display());
        // No shared disk: task logs in an object store (a folder), as in production.
        let logs = tempfile::tempdir().unwrap();
        let logs_store = format!("file://{}", logs.path().display());
        let servers: Vec<Tern> = (0..2)
            .map(|_| {
                let mut t = Tern::new();
                t.database_url = Some(db.url.clone());
                std::fs::remove_dir_all(&t.dags).unwrap();
                let mut settings = std::fs::read_to_string(t.path().join("tern.toml")).unwrap();
                settings.push_str(&format!(
                    "\n[dags]\nsource = {source:?}\nrefresh = \"1h\"\n\n[logs]\nstore = {logs_store:?}\n"
                ));
                std::fs::write(t.path().join("tern.toml"), settings).unwrap();
                t
            })
            .collect();
        let (_a, url_a) = crate::links::server_on(&servers[0], 0);
        let (_b, url_b) = crate::links::server_on(&servers[1], 0);
        let token = token_for(&servers[0], "deployer", "op");

        // Both servers load the branch's commit; the version records it.
        until("the first commit's DAG", || {
            bundle_versions(&url_b, &token) == vec![(1, Some(first.clone()))]
        });
        for t in &servers {
            assert!(t
                .path()
                .join("bundles/trees")
                .join(&first)
                .join("hello.star")
                .exists());
        }
        let run = |t: &Tern, id: &str| -> Value {
            t.ok(&["dags", "trigger", "hello", "--run-id", id]);
            t.wait_run("hello", id, "the run", finished)
        };
        let v = run(&servers[1], "r1");
        assert_eq!(run_state(&v), "success", "{v:#}");
        assert!(servers[1]
            .log("hello", "r1", "say", None)
            .contains("said-one"));

        // A bad commit: its import error shows, the last good version stays and runs.
        let bad = commit(repo, "hello.star", "dag(id = \"hello\"\n", "broken");
        let (status, _) = call(&url_a, "POST", "/api/v1/dags/refresh", Some(&token), "");
        assert_eq!(status, 202);
        until("the bad commit's import error", || {
            let (_, v) = call(&url_b, "GET", "/api/v1/importErrors", Some(&token), "");
            v["import_errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["file"] == "hello.star"))
        });
        for t in &servers {
            until("every server has the bad commit's tree", || {
                t.path().join("bundles/trees").join(&bad).exists()
            });
        }
        assert_eq!(
            bundle_versions(&url_a, &token),
            vec![(1, Some(first.clone()))]
        );
        let v = run(&servers[0], "r2");
        assert_eq!(run_state(&v), "success", "{v:#}");
        assert!(servers[0]
            .log("hello", "r2", "say", None)
            .contains("said-one"));

        // The fix, asked for through the other server.
        let fixed = commit(repo, "hello.star", &hello("two"), "fixed");
        let (status, _) = call(&url_b, "POST", "/api/v1/dags/refresh", Some(&token), "");
        assert_eq!(status, 202);
        until("the fixed commit's version", || {
            bundle_versions(&url_a, &token).first() == Some(&(2, Some(fixed.clone())))
        });
        until("no import error", || {
            let (_, v) = call(&url_a, "GET", "/api/v1/importErrors", Some(&token), "");
            v["import_errors"].as_array().is_some_and(|e| e.is_empty())
        });
        for url in [&url_a, &url_b] {
            until("each server shows the fixed source", || {
                let (_, v) = call(url, "GET", "/api/v1/dags/hello/source", Some(&token), "");
                v["source"].as_str().is_some_and(|s| s.contains("said-two"))
            });
        }
        let v = run(&servers[0], "r3");
        assert_eq!(run_state(&v), "success", "{v:#}");
        assert!(servers[0]
            .log("hello", "r3", "say", None)
            .contains("said-two"));
        // Refreshing needs the op role.
        let viewer = token_for(&servers[0], "watcher", "viewer");
        let (status, _) = call(&url_a, "POST", "/api/v1/dags/refresh", Some(&viewer), "");
        assert_eq!(status, 403);
    });
}

/// MWAA's way: the DAG files are the objects under a prefix of a bucket (the tests' S3 server).
/// The version is a digest of the objects; a change is loaded on refresh, and the DAG's
/// versions record which bundle version each came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_prefix_is_a_dag_bundle() {
    let s3 = tern_testkit::s3::S3::start().await;
    let source =
        s3.uri("datalake", tern_testkit::s3::SECRET)
            .replacen("@datalake?", "@datalake/dags/?", 1);
    let put = |key: &str, text: &str| {
        let path = s3.object("datalake", key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    put("dags/hello.star", &hello("one"));
    put("other/ignored.star", "this is not under the prefix");
    tokio::task::block_in_place(|| {
        let t = Tern::new();
        std::fs::remove_dir_all(&t.dags).unwrap();
        let mut settings = std::fs::read_to_string(t.path().join("tern.toml")).unwrap();
        settings.push_str(&format!(
            "\n[dags]\nsource = {source:?}\nrefresh = \"1h\"\n"
        ));
        std::fs::write(t.path().join("tern.toml"), settings).unwrap();
        let (_server, url) = crate::links::server_on(&t, 0);
        let token = token_for(&t, "deployer", "op");
        until("the bucket's DAG", || {
            bundle_versions(&url, &token).len() == 1
        });
        let first = bundle_versions(&url, &token)[0]
            .1
            .clone()
            .expect("a bundle version");
        t.ok(&["dags", "trigger", "hello", "--run-id", "r1"]);
        let v = t.wait_run("hello", "r1", "the run", finished);
        assert_eq!(run_state(&v), "success", "{v:#}");
        assert!(t.log("hello", "r1", "say", None).contains("said-one"));
        let (_, v) = call(&url, "GET", "/api/v1/importErrors", Some(&token), "");
        assert_eq!(
            v["import_errors"],
            serde_json::json!([]),
            "only the prefix is loaded"
        );

        put("dags/hello.star", &hello("two"));
        let (status, _) = call(&url, "POST", "/api/v1/dags/refresh", Some(&token), "");
        assert_eq!(status, 202);
        until("the changed object's version", || {
            let versions = bundle_versions(&url, &token);
            versions.len() == 2 && versions[0].1.as_ref().is_some_and(|b| *b != first)
        });
        t.ok(&["dags", "trigger", "hello", "--run-id", "r2"]);
        t.wait_run("hello", "r2", "the run", finished);
        assert!(t.log("hello", "r2", "say", None).contains("said-two"));
    });
}
