//! The executor against real child processes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;
use tern_core::{TaskKind, TaskSpec};
use tern_protocol::{Assignment, RunContext};
use tern_worker::{execute, ExecOptions, LogSink};
use tokio_util::sync::CancellationToken;

mod claiming;
mod data;
mod fence;
mod http_save;
mod isolation;
mod lake;
mod parquet;
mod sensors;

#[derive(Default)]
pub struct Collect(pub Mutex<Vec<String>>);

impl LogSink for Collect {
    fn line(&self, text: &str) {
        self.0.lock().unwrap().push(text.to_string());
    }
}

impl Collect {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

pub fn assignment(kind: TaskKind) -> Assignment {
    let t = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    Assignment {
        ti_id: 1,
        attempt: "att".into(),
        dag_id: "d".into(),
        run_id: "manual__x".into(),
        task_id: "t".into(),
        try_number: 1,
        max_tries: 1,
        task: TaskSpec::new("t", kind),
        context: RunContext {
            logical_date: t,
            data_interval_start: t,
            data_interval_end: t,
            run_type: "manual".into(),
            params: json!({"who": "world"}).as_object().unwrap().clone(),
            conf: json!({}),
            outputs: Default::default(),
            timezone: "UTC".into(),
        },
        lease_ms: 30_000,
        connections: Default::default(),
        external_state: None,
        variables: Default::default(),
        map_index: None,
        map_values: Default::default(),
    }
}

fn shell(cmd: &str) -> TaskKind {
    TaskKind::Shell {
        cmd: cmd.into(),
        env: BTreeMap::new(),
        cwd: None,
        sandbox: None,
    }
}

fn opts() -> ExecOptions {
    ExecOptions {
        python: "python3".into(),
        kill_grace: Duration::from_millis(500),
        ..ExecOptions::default()
    }
}

async fn run(a: &Assignment) -> (tern_protocol::Completion, String) {
    let sink = Collect::default();
    let c = execute(a, &opts(), &sink, &CancellationToken::new()).await;
    (c, sink.text())
}

#[tokio::test]
async fn shell_output_env_and_outputs() {
    let a = assignment(shell(
        "echo hello {{ params.who }}; echo to-stderr >&2; echo \"ds=$TERN_DS run=$TERN_RUN_ID\"; \
         echo rows=42 >> \"$TERN_OUTPUT\"; echo 'path=s3://b/k' >> \"$TERN_OUTPUT\"; env | grep -c SECRET_FROM_PARENT || true",
    ));
    std::env::set_var("SECRET_FROM_PARENT", "x");
    let (c, log) = run(&a).await;
    assert!(c.success, "{log}");
    assert_eq!(c.exit_code, Some(0));
    assert_eq!(c.outputs["rows"], json!(42));
    assert_eq!(c.outputs["path"], json!("s3://b/k"));
    assert!(log.contains("hello world"), "{log}");
    assert!(log.contains("to-stderr"), "{log}");
    assert!(log.contains("ds=2026-03-01 run=manual__x"), "{log}");
    assert!(
        log.lines().any(|l| l.trim() == "0"),
        "the parent's environment must not leak: {log}"
    );
}

#[tokio::test]
async fn nonzero_exit_and_missing_command_fail_with_reason() {
    let (c, log) = run(&assignment(shell("echo about to fail; exit 3"))).await;
    assert!(!c.success);
    assert!(c.retryable);
    assert_eq!(c.exit_code, Some(3));
    assert_eq!(c.reason.as_deref(), Some("exit code 3"));
    assert!(log.contains("tern: task failed: exit code 3"), "{log}");
    let (c, log) = run(&assignment(shell("definitely-not-a-command-xyz"))).await;
    assert_eq!(c.exit_code, Some(127));
    assert!(c.reason.unwrap().contains("command not found"));
    assert!(log.contains("not found"), "{log}");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let marker = tempfile::tempdir().unwrap();
    let pidfile = marker.path().join("pid");
    let mut a = assignment(shell(&format!(
        "sleep 30 & echo $! > {}; wait",
        pidfile.display()
    )));
    a.task.execution_timeout_ms = Some(300);
    let (c, _log) = run(&a).await;
    assert!(!c.success);
    assert!(
        c.reason
            .as_deref()
            .unwrap()
            .contains("timed out after 300ms"),
        "{:?}",
        c.reason
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild `sleep` was in the task's process group and must be gone (or a zombie
    // reaped by init shortly after).
    let gone = tern_testkit_wait(|| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.is_empty() || status.contains("State:\tZ")
    })
    .await;
    assert!(gone, "grandchild {pid} survived the timeout");
}

async fn tern_testkit_wait(check: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn python_inline_code_with_templated_args() {
    let a = assignment(TaskKind::Python {
        code: "import sys, os\nprint('args', sys.argv[1:])\nopen(os.environ['TERN_OUTPUT'], 'w').write('{\"n\": 7}')\n".into(),
        script: None,
        args: vec!["{{ ds }}".into(), "x".into()],
        env: BTreeMap::new(),
        cwd: None,
        sandbox: None,
        requirements: vec![],
        python_version: None,
    });
    let (c, log) = run(&a).await;
    assert!(c.success, "{log}");
    assert!(log.contains("args ['2026-03-01', 'x']"), "{log}");
    assert_eq!(c.outputs["n"], json!(7));
}

#[tokio::test]
async fn template_error_fails_without_retry_and_names_the_field() {
    let (c, log) = run(&assignment(shell("echo {{ outputs.extract.rows }}"))).await;
    assert!(!c.success);
    assert!(!c.retryable, "a template error cannot succeed on retry");
    let reason = c.reason.unwrap();
    assert!(reason.contains("template error in field cmd"), "{reason}");
    assert!(log.contains("template error in field cmd"), "{log}");
}

#[tokio::test]
async fn cancellation_stops_the_process() {
    let a = assignment(shell("sleep 30"));
    let sink = Collect::default();
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c2.cancel();
    });
    let c = execute(&a, &opts(), &sink, &cancel).await;
    assert!(!c.success);
    assert!(c.reason.unwrap().contains("cancelled"));
}

#[tokio::test]
async fn bad_output_file_fails_the_task() {
    let (c, _) = run(&assignment(shell("echo garbage-line > \"$TERN_OUTPUT\""))).await;
    assert!(!c.success);
    assert!(c.reason.unwrap().contains("$TERN_OUTPUT line 1"));
}

const CANARY: &str = "Canary-pw-7Qx9";

fn opts_with_secret() -> ExecOptions {
    let mut file = BTreeMap::new();
    file.insert(
        "warehouse".to_string(),
        tern_worker::connections::ConnectionConfig {
            uri: format!("postgres://etl:{CANARY}@db.site:5432/sales"),
            extra: Default::default(),
        },
    );
    let conns =
        tern_worker::connections::Connections::resolve(&file, "agent.toml", Vec::new()).unwrap();
    opts().with_connections(conns)
}

#[tokio::test]
async fn secrets_are_masked_even_when_written_in_pieces_or_in_huge_lines() {
    // The password printed whole, from the environment, in two writes with a pause between
    // them, across the 64 KiB piece boundary of a line with no newline, in the outputs and in
    // the failure reason.
    let cmd = r#"echo "whole: $TERN_CONN_WAREHOUSE"; printf 'split: Canary-'; sleep 0.3; printf 'pw-7Qx9 end\n';
python3 -c "import sys; sys.stdout.write('x' * 65530 + 'Canary-pw-7Qx9' + 'y' * 10)";
echo;
echo "host={{ conn.warehouse.host }} login={{ conn.warehouse.login }}";
echo "leak=Canary-pw-7Qx9" > "$TERN_OUTPUT"; exit 3"#;
    let a = assignment(shell(cmd));
    let sink = Collect::default();
    let c = execute(&a, &opts_with_secret(), &sink, &CancellationToken::new()).await;
    let log = sink.text();
    assert!(!log.contains("Canary-pw"), "the secret leaked:\n{log}");
    // (The command line itself holds the two halves written separately; nothing else may.)
    assert!(
        !log.lines()
            .filter(|l| !l.starts_with("tern: running:"))
            .any(|l| l.contains("pw-7Qx9")),
        "a piece of the secret leaked"
    );
    assert!(log.contains("whole: ***"), "{log}");
    assert!(log.contains("split: *** end"), "{log}");
    assert!(log.contains("host=db.site login=etl"), "{log}");
    let joined: String = sink.0.lock().unwrap().concat();
    assert!(
        joined.contains("xxx***yyy") || joined.contains("***"),
        "the long line was masked"
    );
    assert!(!c.success);
    assert!(!format!("{c:?}").contains("Canary-pw"), "{c:?}");
}

#[tokio::test]
async fn templates_cannot_read_a_connection_password() {
    let a = assignment(shell("echo {{ conn.warehouse.password }}"));
    let sink = Collect::default();
    let c = execute(&a, &opts_with_secret(), &sink, &CancellationToken::new()).await;
    assert!(!c.success && !c.retryable, "{c:?}");
    assert!(c.reason.unwrap().contains("password"));
}
