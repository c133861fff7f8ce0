//! DAG notifications end to end: `tern standalone` runs DAGs that name connections in
//! `on_failure`, `on_retry` and `on_success`; a webhook receiver in this process (answering
//! 500 once, then 200) and aiosmtpd get what the notifier sends.

use std::time::{Duration, Instant};

use tern_testkit::notify::{Call, SmtpSink, WebhookReceiver};

use crate::harness::{finished, run_state, Tern, DEADLINE};

/// Waits until `calls` holds a 2xx-answered call whose `event` is `event`; returns it.
fn delivered(hooks: &WebhookReceiver, event: &str) -> Call {
    let start = Instant::now();
    loop {
        if let Some(c) = hooks
            .calls()
            .into_iter()
            .find(|c| c.body["event"] == event && c.status == 200)
        {
            return c;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no {event} notification delivered; calls: {:#?}",
            hooks.calls()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn failed_run_posts_a_webhook_retry_notifies_and_success_mails() {
    let hooks = WebhookReceiver::start(&[("/hook", &[500, 200])]);
    let smtp = SmtpSink::start();
    let t = Tern::new();
    t.agent_setting(
        "\n[notifications]\nbase_url = \"https://tern.example.com\"\nretry_delays = [\"200ms\", \"200ms\"]",
    );
    t.ok(&[
        "connections",
        "add",
        "alerts_hook",
        "--uri",
        &hooks.url("/hook"),
        "--extra",
        r#"{"token": "s3cret-token"}"#,
    ]);
    t.ok(&[
        "connections",
        "add",
        "ops_mail",
        "--uri",
        &format!(
            "smtp://127.0.0.1:{}?from=tern@example.com&to=ops@example.com&tls=none",
            smtp.port
        ),
    ]);
    let marker = t.path().join("first-try-done");
    t.write_dag(
        "breaks.star",
        r#"
dag(id = "breaks", on_failure = ["alerts_hook"])
shell(id = "extract", cmd = "echo boom; exit 3")
"#,
    );
    t.write_dag(
        "flaky.star",
        &format!(
            r#"
dag(id = "flaky", on_retry = "alerts_hook", on_success = ["ops_mail"])
shell(id = "load", retries = 1, retry_delay = "100ms",
      cmd = "if [ -f {m} ]; then echo second try; else touch {m}; exit 1; fi")
"#,
            m = marker.display(),
        ),
    );
    let _sa = t.standalone();

    let failed_run = t.trigger("breaks", None);
    let v = t.wait_run("breaks", &failed_run, "the breaks run to end", finished);
    assert_eq!(run_state(&v), "failed");
    let flaky_run = t.trigger("flaky", None);
    let v = t.wait_run("flaky", &flaky_run, "the flaky run to end", finished);
    assert_eq!(run_state(&v), "success");

    let call = delivered(&hooks, "dag_run_failed");
    let body = &call.body;
    assert_eq!(body["dag_id"], "breaks");
    assert_eq!(body["run_id"], failed_run.as_str());
    assert_eq!(body["state"], "failed");
    assert_eq!(body["failed_tasks"][0]["task_id"], "extract");
    assert_eq!(body["failed_tasks"][0]["note"], "exit code 3");
    assert!(body["url"]
        .as_str()
        .unwrap()
        .starts_with("https://tern.example.com/dags/breaks/runs/"));
    assert_eq!(call.headers["authorization"], "Bearer s3cret-token");

    let call = delivered(&hooks, "task_up_for_retry");
    assert_eq!(call.body["dag_id"], "flaky");
    assert_eq!(call.body["task_id"], "load");
    assert_eq!(call.body["try_number"], 1);
    assert_eq!(call.body["note"], "exit code 1");

    // The first call was answered 500 and sent again; nothing leaks a secret.
    let calls = hooks.calls();
    assert_eq!(calls[0].status, 500, "{calls:#?}");
    assert_eq!(
        calls.len(),
        3,
        "one retried call and two delivered: {calls:#?}"
    );
    assert!(calls
        .iter()
        .all(|c| !c.body.to_string().contains("s3cret-token")));

    // The outbox tells the same story: everything sent, the first message on its second try.
    let start = Instant::now();
    let rows = loop {
        let rows = t.json(&["notifications", "list"]);
        let done = rows
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "sent");
        if done || start.elapsed() > DEADLINE {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(rows.iter().all(|r| r["state"] == "sent"), "{rows:#?}");
    assert_eq!(
        rows.iter().filter(|r| r["tries"] == 2).count(),
        1,
        "{rows:#?}"
    );
    assert!(rows
        .iter()
        .any(|r| r["last_error"].as_str().is_some_and(|e| e.contains("500"))));

    let start = Instant::now();
    let mail = loop {
        if let Some(m) = smtp.mails().into_iter().next() {
            // Unfold long header lines (RFC 5322).
            break m.replace("\r\n ", " ").replace("\n ", " ");
        }
        assert!(start.elapsed() < DEADLINE, "no mail arrived");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        mail.contains(&format!(
            "Subject: [tern] DAG flaky run {flaky_run} succeeded"
        )),
        "{mail}"
    );
    assert!(mail.contains("To: ops@example.com"), "{mail}");
}
