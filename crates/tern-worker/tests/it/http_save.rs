//! The `http` task saving its whole answer to an object store.

use tern_core::TaskKind;

use crate::data::{conns, run, S3};
use crate::sensors::late_server;

fn fetch(url: String, save_to: &str) -> TaskKind {
    TaskKind::Http(tern_core::HttpTask {
        method: "GET".into(),
        url,
        conn: None,
        headers: Default::default(),
        body: None,
        expected_status: vec![],
        max_body_bytes: 10,
        save_to_conn: Some("lake".into()),
        save_to: Some(save_to.into()),
    })
}

#[tokio::test]
async fn the_whole_answer_is_saved_and_a_failed_call_writes_nothing() {
    let s3 = S3::start().await;
    let lake = || conns(&[("lake", s3.uri("datalake", "secret-key-test"))]);
    let body = "{\"rates\": [1.08, 1.09, 1.10], \"note\": \"longer than the body cap\"}";
    let base = late_server(1, body).await;
    // First call: 503, a transient failure; nothing is written.
    let (done, log) = run(fetch(format!("{base}/rates"), "raw/{{ ds }}.json"), lake()).await;
    assert!(!done.success && done.retryable, "{done:?}\n{log}");
    assert!(!s3.object("datalake", "raw/2026-03-01.json").exists());
    // Second: saved whole (the body cap applies to the `body` output only).
    let (done, log) = run(fetch(format!("{base}/rates"), "raw/{{ ds }}.json"), lake()).await;
    assert!(done.success, "{done:?}\n{log}");
    assert_eq!(done.outputs["url"], "s3://datalake/raw/2026-03-01.json");
    assert_eq!(done.outputs["bytes"], body.len());
    assert!(done.outputs.get("body").is_none());
    assert_eq!(
        std::fs::read_to_string(s3.object("datalake", "raw/2026-03-01.json")).unwrap(),
        body
    );
    // A missing bucket is permanent and checked before the call.
    let (done, log) = run(
        fetch(format!("{base}/rates"), "raw/x.json"),
        conns(&[("lake", s3.uri("nobucket", "secret-key-test"))]),
    )
    .await;
    assert!(!done.success && !done.retryable, "{done:?}\n{log}");
}
