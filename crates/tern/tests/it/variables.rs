//! Variables through the binary: set with the CLI, read by templates (`var.value`, `var.json`),
//! a secret one encrypted at rest, hidden from listings and the API and masked in task logs;
//! a site agent's own variable wins over the control plane's and never reaches it.

use crate::agents::{new_code, start_agent, start_server};
use crate::harness::{files_containing, finished, run_state, task, Tern};
use crate::web::{json_call, remote};

const SECRET: &str = "tok-9f8e7d6c5b";

#[test]
fn templates_read_variables_and_secret_ones_stay_hidden() {
    let t = Tern::new();
    t.ok(&[
        "variables",
        "set",
        "region",
        "eu-west-1",
        "--description",
        "where we run",
    ]);
    t.ok(&["variables", "set", "cfg", r#"{"bucket": "b1", "n": 3}"#]);
    t.ok(&["variables", "set", "api_token", SECRET, "--secret"]);
    t.write_dag(
        "v.star",
        r#"dag(id = "v")
shell(id = "show", cmd = "echo region={{ var.value.region }} bucket={{ var.json.cfg.bucket }} n={{ var.json.cfg.n }} token={{ var.value.api_token }}")
shell(id = "site", queue = "site:warsaw", cmd = "echo site-region={{ var.value.region }} site-only={{ var.value.site_only }}")
shell(id = "typo", cmd = "echo {{ var.value.regoin }}")
"#,
    );
    let (_sa, url) = start_server(&t);
    // The site agent has its own `region` and a variable the control plane never sees.
    let dir = t.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        "[variables]\nregion = \"warsaw-dc\"\nsite_only = { value = \"local-7\", secret = false }\n",
    )
    .unwrap();
    let code = new_code(&t, "10m");
    let _agent = start_agent(&url, Some(&code), &dir);
    let run = t.trigger("v", None);
    let v = t.wait_run("v", &run, "the run to end", finished);
    assert_eq!(task(&v, "show")["state"], "success", "{v:#}");
    let log = t.log("v", &run, "show", None);
    assert!(
        log.contains("region=eu-west-1 bucket=b1 n=3 token=***"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "{log}");
    // The task page's preview of its templates reads the same variables, a secret one as ***.
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let (cookie, _) = crate::web::login(&url, "admin", password.trim()).unwrap();
    let (status, page) = crate::harness::http(
        &url,
        "GET",
        &format!("/dags/v/runs/{run}/tasks/show"),
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(status, 200);
    assert!(
        page.contains("region=eu-west-1 bucket=b1 n=3 token=***"),
        "the rendered templates: {}",
        &page[page.find("Rendered").unwrap_or(0)..]
    );
    assert!(!page.contains(SECRET));
    let site = t.log("v", &run, "site", None);
    assert!(
        site.contains("site-region=warsaw-dc site-only=local-7"),
        "{site}"
    );
    // A misspelt variable fails its task with a message naming it.
    assert_eq!(task(&v, "typo")["state"], "failed", "{v:#}");
    let typo = t.log("v", &run, "typo", None);
    assert!(
        typo.contains("template error") && typo.contains("regoin"),
        "{typo}"
    );
    assert_eq!(run_state(&v), "failed");

    // Listings and the API never show the secret; the local CLI shows it only when asked.
    let list = t.json(&["variables", "list"]);
    let token = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "api_token")
        .unwrap();
    assert_eq!(token["value"], serde_json::Value::Null, "{list:#}");
    assert_eq!(token["is_secret"], true);
    let out = t.run(&["variables", "get", "api_token"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reveal"));
    assert_eq!(
        t.ok(&["variables", "get", "api_token", "--reveal"]).trim(),
        SECRET
    );
    assert_eq!(t.ok(&["variables", "get", "region"]).trim(), "eu-west-1");
    let viewer = crate::api::token_for(&t, "vw", "viewer");
    let (status, v) = json_call(&url, "GET", "/api/v1/variables/api_token", &viewer, "");
    assert_eq!(status, 200, "{v}");
    assert!(!v.to_string().contains(SECRET), "{v}");
    let (status, v) = json_call(
        &url,
        "PUT",
        "/api/v1/variables/x",
        &viewer,
        r#"{"value": "1"}"#,
    );
    assert_eq!(status, 403, "{v}");
    let op = crate::api::token_for(&t, "opr", "op");
    let (status, v) = json_call(
        &url,
        "PUT",
        "/api/v1/variables/bad-key",
        &op,
        r#"{"value": "1"}"#,
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("letters, digits and `_`"),
        "{v}"
    );
    // The same commands through --server print the same.
    let out = remote(&url, &op, &["variables", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        t.ok(&["variables", "list"])
    );
    let out = remote(&url, &op, &["variables", "set", "from_remote", "42"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.ok(&["variables", "get", "from_remote"]).trim(), "42");
    let out = remote(&url, &op, &["variables", "delete", "from_remote"]);
    assert!(out.status.success());
    assert!(!t.run(&["variables", "get", "from_remote"]).status.success());
    // Encrypted at rest; the site's own variable never reached the control plane.
    assert!(
        files_containing(t.path(), SECRET).is_empty(),
        "the secret is on disk in clear"
    );
    let keys: Vec<String> = t
        .json(&["variables", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["api_token", "cfg", "region"]);
}
