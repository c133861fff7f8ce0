//! The notifier against real receivers: an HTTP server in this process for webhooks, aiosmtpd
//! for mail, and a real (SQLite) store whose outbox the runs fill.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tern_server::notify::{Notifier, Settings};
use tern_store::notifications::Notification;
use tern_store::{NewRun, Store};
use tern_testkit::notify::{SmtpSink, WebhookReceiver};
use tern_testkit::{dag, TestDb};
use tern_worker::connections::{ConnectionConfig, Connections};

fn settings(retry_delays: Vec<Duration>) -> Settings {
    Settings {
        base_url: Some("https://tern.example.com".into()),
        timeout: Duration::from_secs(5),
        retry_delays,
        poll: Duration::from_millis(50),
        batch: 16,
    }
}

fn connections(list: &[(&str, &str, serde_json::Value)]) -> Connections {
    let file: BTreeMap<String, ConnectionConfig> = list
        .iter()
        .map(|(name, uri, extra)| {
            (
                name.to_string(),
                ConnectionConfig {
                    uri: uri.to_string(),
                    extra: extra.as_object().cloned().unwrap_or_default(),
                },
            )
        })
        .collect();
    Connections::resolve(&file, "the test", Vec::new()).unwrap()
}

/// A store with DAG `dag_id` (no tasks: its runs succeed at once) notifying `conns` on success,
/// and one finished run `r1`.
async fn store_with_run(db: &TestDb, dag_id: &str, conns: &[&str]) -> Store {
    let store = Store::open(&db.url).await.unwrap();
    let mut spec = dag(dag_id, vec![]);
    spec.on_success = conns.iter().map(|c| c.to_string()).collect();
    store.sync_dags(&[spec], &[]).await.unwrap();
    let v = store.latest_spec(dag_id).await.unwrap().0;
    let now = Utc::now();
    store
        .create_run(
            &NewRun {
                dag_id: dag_id.into(),
                run_id: "r1".into(),
                run_type: tern_core::RunType::Manual,
                logical_date: now,
                data_interval: tern_core::DataInterval {
                    start: now,
                    end: now,
                },
                conf: json!({}),
                params: json!({}),
            },
            v,
        )
        .await
        .unwrap();
    store
}

async fn row(store: &Store, conn: &str) -> Notification {
    store
        .list_notifications(None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.conn == conn)
        .unwrap_or_else(|| panic!("no notification for {conn}"))
}

#[tokio::test]
async fn webhooks_retry_passing_errors_and_stop_on_permanent_ones() {
    let hooks =
        WebhookReceiver::start(&[("/flaky", &[500, 200]), ("/bad", &[400]), ("/down", &[503])]);
    let db = TestDb::sqlite();
    let store = store_with_run(&db, "wh", &["flaky", "bad", "down", "hook", "missing"]).await;
    let conns = connections(&[
        ("flaky", &hooks.url("/flaky"), json!({})),
        ("bad", &hooks.url("/bad"), json!({})),
        ("down", &hooks.url("/down"), json!({})),
        (
            "hook",
            &hooks.url("/hook?team=ops"),
            json!({"token": "t0k-secret", "headers": {"X-Team": "ops"}}),
        ),
    ]);
    let notifier = Notifier::new(store.clone(), None, conns, settings(vec![Duration::ZERO]));

    assert_eq!(notifier.pass().await.unwrap(), 5);
    assert_eq!(row(&store, "hook").await.state, "sent");
    let bad = row(&store, "bad").await;
    assert_eq!((bad.state.as_str(), bad.tries), ("failed", 1));
    assert!(bad.last_error.unwrap().contains("400 Bad Request"));
    let missing = row(&store, "missing").await;
    assert_eq!(missing.state, "failed");
    let err = missing.last_error.unwrap();
    assert!(
        err.contains("connection \"missing\" (named in on_success) does not exist")
            && err.contains("tern connections add missing"),
        "{err}"
    );
    let flaky = row(&store, "flaky").await;
    assert_eq!((flaky.state.as_str(), flaky.tries), ("pending", 1));
    assert!(flaky.last_error.unwrap().contains("500"));

    // Second pass: the flaky hook answers 200; the down one fails its last try.
    assert_eq!(notifier.pass().await.unwrap(), 2);
    assert_eq!(row(&store, "flaky").await.state, "sent");
    let down = row(&store, "down").await;
    assert_eq!((down.state.as_str(), down.tries), ("failed", 2));
    assert!(down
        .last_error
        .unwrap()
        .starts_with("gave up after 2 tries"));
    assert_eq!(notifier.pass().await.unwrap(), 0);

    assert_eq!(hooks.calls_to("/flaky").len(), 2);
    assert_eq!(hooks.calls_to("/bad").len(), 1);
    assert_eq!(hooks.calls_to("/down").len(), 2);
    let call = &hooks.calls_to("/hook")[0];
    assert_eq!(call.headers["authorization"], "Bearer t0k-secret");
    assert_eq!(call.headers["x-team"], "ops");
    assert_eq!(call.headers["content-type"], "application/json");
    let body = &call.body;
    assert_eq!(body["event"], "dag_run_succeeded");
    assert_eq!(body["dag_id"], "wh");
    assert_eq!(body["run_id"], "r1");
    assert_eq!(body["state"], "success");
    assert_eq!(body["url"], "https://tern.example.com/dags/wh/runs/r1");
    assert!(!body.to_string().contains("t0k-secret"));
}

#[tokio::test]
async fn mail_goes_through_a_real_smtp_server() {
    let smtp = SmtpSink::start();
    let db = TestDb::sqlite();
    let store = store_with_run(&db, "sales_daily", &["ops_mail", "dead_mail"]).await;
    // Nothing listens on port 9 of this host: the try fails and is due again.
    let conns = connections(&[
        (
            "ops_mail",
            &format!(
                "smtp://127.0.0.1:{}?from=tern@example.com&to=ops@example.com,%20oncall@example.com&tls=none",
                smtp.port
            ),
            json!({}),
        ),
        (
            "dead_mail",
            "smtp://127.0.0.1:9?from=tern@example.com&to=ops@example.com&tls=none",
            json!({}),
        ),
    ]);
    let notifier = Notifier::new(
        store.clone(),
        None,
        conns,
        settings(vec![Duration::from_secs(600)]),
    );
    assert_eq!(notifier.pass().await.unwrap(), 2);
    let sent = row(&store, "ops_mail").await;
    assert_eq!(sent.state, "sent", "{:?}", sent.last_error);
    let dead = row(&store, "dead_mail").await;
    assert_eq!(dead.state, "pending", "a refused connection is retried");
    assert!(dead.next_at > Utc::now() + chrono::Duration::seconds(500));

    let mail = tern_testkit::wait_for("the mail to be filed", Duration::from_secs(10), || {
        let m = smtp.mails();
        async move { m.into_iter().next() }
    })
    .await;
    assert!(
        mail.contains("Subject: [tern] DAG sales_daily run r1 succeeded"),
        "{mail}"
    );
    assert!(mail.contains("ops@example.com") && mail.contains("oncall@example.com"));
    assert!(mail.contains("DAG:          sales_daily"), "{mail}");
    assert!(mail.contains("https://tern.example.com/dags/sales_daily/runs/r1"));
}

#[tokio::test]
async fn a_hanging_webhook_does_not_hold_up_shutdown_and_its_row_stays_due() {
    // Accepts connections (the kernel's backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let db = TestDb::sqlite();
    let store = store_with_run(&db, "hang", &["silent"]).await;
    let mut s = settings(vec![Duration::ZERO]);
    s.timeout = Duration::from_secs(60);
    let notifier = Notifier::new(
        store.clone(),
        None,
        connections(&[("silent", &url, json!({}))]),
        s,
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(notifier.run(stop.clone()));
    tern_testkit::wait_for("the row to be claimed", Duration::from_secs(10), || {
        let store = store.clone();
        async move { (row(&store, "silent").await.tries == 1).then_some(()) }
    })
    .await;
    let asked = std::time::Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the notifier stops at once")
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(5));
    let n = row(&store, "silent").await;
    assert_eq!(n.state, "pending", "sent again by the next process");
    assert!(
        n.next_at > Utc::now(),
        "held by its claim until the lease lapses"
    );
}
