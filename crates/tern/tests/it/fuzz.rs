//! The fuzzing suite, bounded for CI (`TERN_FUZZ_CASES` raises the count): random hostile
//! requests to every route of the REST API (read from its own OpenAPI document) and to the
//! agent gateway, and random hostile DAG files through the real binary. The server never
//! crashes or answers 5xx, every refusal is a 4xx with `{code, message}`, and a hostile DAG file
//! is an import error of its own file while the other DAGs load.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::harness::{http, Tern};
use crate::links::server_on;

fn cases(default: u32) -> u32 {
    std::env::var("TERN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Ids as an attacker or a careless script would write them, already percent-encoded for a
/// path.
fn hostile_id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("d".to_string()),
        "[a-z_]{1,12}",
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just("a%2Fb".to_string()),
        Just("a%00b".to_string()),
        Just("%0a".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("x".repeat(400)),
        Just("%C3%A9t%C3%A9".to_string()),
        Just("%27%3B%20DROP%20TABLE%20dags%3B--".to_string()),
        Just("%24(id)".to_string()),
    ]
}

/// JSON values of every shape, with the numbers and strings that break parsers.
fn hostile_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-9223372036854775808i64)),
        Just(serde_json::json!(18446744073709551615u64)),
        "\\PC{0,30}".prop_map(Value::String),
        Just(Value::String("a\u{0}b".into())),
        Just(Value::String("../../etc/passwd".into())),
        Just(Value::String("$(id > /tmp/tern-fuzz-owned)".into())),
        Just(Value::String("x".repeat(10_000))),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("slots".to_string()),
                    Just("conf".to_string()),
                    Just("params".to_string()),
                    Just("dag_run_id".to_string()),
                    Just("expires_days".to_string()),
                    Just("uri".to_string()),
                    Just("site".to_string()),
                    Just("state".to_string()),
                    Just("is_paused".to_string()),
                    Just("username".to_string()),
                    Just("role".to_string()),
                    Just("password".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body: JSON, or text that is not quite JSON.
fn hostile_body() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => hostile_json().prop_map(|v| v.to_string()),
        1 => Just("{".to_string()),
        1 => Just("".to_string()),
        1 => Just(format!("{}1{}", "[".repeat(5000), "]".repeat(5000))),
        1 => Just("{\"slots\": 1e999999}".to_string()),
        1 => Just("\u{0}\u{1}\u{2}".to_string()),
    ]
}

fn assert_clear_refusal(what: &str, status: u16, body: &str) {
    assert!(status < 500, "{what:.300}: {status} {body:.300}");
    if status >= 400 {
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|_| panic!("{what:.300}: {status} without a JSON error: {body:.300}"));
        assert!(
            v["code"].is_string() && v["message"].is_string(),
            "{what:.300}: {status} {body:.300}"
        );
    }
}

#[test]
fn hostile_api_and_agent_requests_get_clear_4xx_and_never_a_crash() {
    let t = Tern::new();
    t.write_dag(
        "d.star",
        "dag(id = \"d\", params = {\"n\": 1})\nshell(id = \"t\", cmd = \"true\")\n",
    );
    let (mut sa, url) = server_on(&t, 0);
    let admin = t.ok(&["tokens", "create", "admin"]).trim().to_string();
    let auth = format!("Bearer {admin}");
    let (_, doc) = http(
        &url,
        "GET",
        "/api/v1/openapi.json",
        &[("Authorization", &auth)],
        "",
    );
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    for agent in [
        "activate",
        "claim",
        "heartbeat",
        "log",
        "complete",
        "report",
    ] {
        routes.push(("POST".into(), format!("/agent/v1/{agent}")));
    }
    assert!(routes.len() > 30, "{routes:?}");
    let mut runner = TestRunner::new(Config {
        cases: cases(256),
        failure_persistence: None,
        ..Config::default()
    });
    let n = routes.len();
    let strategy = (
        0..n,
        proptest::collection::vec(hostile_id(), 4),
        hostile_body(),
        any::<bool>(),
        prop_oneof![
            Just(""),
            Just("?offset=-1"),
            Just("?offset=99999999999999999999"),
            Just("?limit=0&offset=abc")
        ],
    );
    runner
        .run(&strategy, |(i, ids, body, authed, query)| {
            let (method, template) = &routes[i];
            let mut path = template.clone();
            for id in &ids {
                if let (Some(a), Some(b)) = (path.find('{'), path.find('}')) {
                    path.replace_range(a..=b, id);
                }
            }
            path.push_str(query);
            let headers: Vec<(&str, &str)> = if authed {
                vec![("Authorization", &auth), ("x-tern-protocol", "1.2")]
            } else {
                vec![("x-tern-protocol", "1.2")]
            };
            let (status, text) = http(&url, method, &path, &headers, &body);
            assert_clear_refusal(&format!("{method} {path} {body}"), status, &text);
            Ok(())
        })
        .unwrap();
    assert!(sa.child.try_wait().unwrap().is_none(), "the server died");
    assert_eq!(http(&url, "GET", "/health", &[], "").0, 200);
    assert!(!std::path::Path::new("/tmp/tern-fuzz-owned").exists());
}

/// Starlark that tries to exhaust the evaluator: deep nesting, huge allocations, recursion,
/// long loops, deep JSON, cycles, load cycles.
fn hostile_starlark() -> impl Strategy<Value = String> {
    let depth = 1usize..4000;
    prop_oneof![
        depth.clone().prop_map(|n| format!("x = []\nfor i in range({n}):\n    x = [x]\ns = json.encode(x)\n")),
        depth.clone().prop_map(|n| format!("p = 1\nfor i in range({n}):\n    p = {{\"k\": p}}\ndag(id = \"h\", params = {{\"p\": p}})\n")),
        (1u64..4_000_000_000).prop_map(|n| format!("x = [0] * {n}\n")),
        (1u64..4_000_000_000).prop_map(|n| format!("x = \"ab\" * {n}\n")),
        depth.clone().prop_map(|n| format!("x = {}1{}\n", "(".repeat(n), ")".repeat(n))),
        Just("def f(n):\n    return f(n + 1)\nf(0)\n".to_string()),
        Just("x = []\nx.append(x)\ndag(id = \"h\", params = {\"p\": x})\n".to_string()),
        Just("load(\"h.star\", \"x\")\n".to_string()),
        Just("for i in range(100000000):\n    pass\n".to_string()),
        "\\PC{0,200}",
    ]
}

#[test]
fn hostile_dag_files_are_import_errors_of_their_own_file() {
    let t = Tern::new();
    t.write_dag("a_fine.star", "dag(id = \"fine\")\n");
    let mut runner = TestRunner::new(Config {
        cases: cases(24),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&hostile_starlark(), |src| {
            t.write_dag("h.star", &src);
            let out = t.run(&["dags", "list", "-o", "json"]);
            use std::os::unix::process::ExitStatusExt;
            assert!(
                out.status.signal().is_none(),
                "the CLI crashed on {src:.200}"
            );
            let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
                panic!(
                    "no JSON for {src:.200}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            assert!(
                listed
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["dag_id"] == "fine"),
                "the good DAG is missing after {src:.200}"
            );
            Ok(())
        })
        .unwrap();
}
