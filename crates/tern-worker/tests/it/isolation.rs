//! Container tasks with real podman and a locally imported image, and sandboxed shell and
//! python tasks under real bubblewrap.

use std::collections::BTreeMap;

use serde_json::json;
use tern_core::{ContainerTask, Mount, Sandbox, TaskKind};

use crate::{assignment, run};

fn container(cmd: &str) -> ContainerTask {
    ContainerTask {
        image: tern_testkit::busybox_image(),
        command: vec!["sh".into(), "-c".into()],
        args: vec![cmd.into()],
        env: BTreeMap::from([("GREETING".to_string(), "hello {{ ds }}".to_string())]),
        mounts: vec![],
        memory: None,
        cpus: None,
        network: false,
        runtime: Some("podman".into()),
    }
}

#[tokio::test]
async fn container_streams_logs_passes_env_and_outputs_and_exit_codes() {
    let mut t = container(
        "echo \"$GREETING from $TERN_DAG_ID\"; echo rows=3 >> \"$TERN_OUTPUT\"; ls /sys/class/net; \
         cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    );
    t.memory = Some("64m".into());
    t.cpus = Some("0.5".into());
    let (c, log) = run(&assignment(TaskKind::Container(t))).await;
    assert!(c.success, "{c:?}\n{log}");
    assert!(log.contains("hello 2026-03-01 from d"), "{log}");
    assert_eq!(c.outputs["rows"], json!(3));
    // No network: only the loopback interface; the memory limit is applied.
    let ifaces: Vec<&str> = log
        .lines()
        .filter(|l| *l == "lo" || l.starts_with("eth"))
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{log}");
    assert!(log.lines().any(|l| l.trim() == "67108864"), "{log}");
    // The exit code decides.
    let (c, log) = run(&assignment(TaskKind::Container(container(
        "echo bad; exit 3",
    ))))
    .await;
    assert!(!c.success, "{log}");
    assert_eq!(c.exit_code, Some(3));
    assert!(log.contains("bad"), "{log}");
}

#[tokio::test]
async fn container_mounts_are_read_only_when_asked_and_a_timeout_removes_the_container() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from the host\n").unwrap();
    let mut t = container("cat /in/in.txt; touch /in/new && echo wrote || echo refused");
    t.mounts = vec![Mount {
        source: dir.path().display().to_string(),
        target: "/in".into(),
        read_only: true,
    }];
    let (c, log) = run(&assignment(TaskKind::Container(t))).await;
    assert!(c.success, "{log}");
    assert!(log.contains("from the host"), "{log}");
    assert!(log.contains("refused") && !log.contains("wrote"), "{log}");
    assert!(!dir.path().join("new").exists());

    let mut a = assignment(TaskKind::Container(container("echo started; sleep 60")));
    a.ti_id = 424242;
    a.task.execution_timeout_ms = Some(3_000);
    let (c, log) = run(&a).await;
    assert!(!c.success);
    assert!(c.reason.unwrap().contains("timed out"), "{log}");
    assert!(log.contains("started"), "{log}");
    let left = std::process::Command::new("podman")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            "name=tern-424242-",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "", "{log}");
}

#[tokio::test]
async fn a_missing_image_fails_with_the_runtime_message() {
    let mut t = container("true");
    t.image = "localhost/tern-no-such-image:1".into();
    let (c, log) = run(&assignment(TaskKind::Container(t))).await;
    assert!(!c.success);
    assert!(log.contains("tern-no-such-image"), "{log}");
}

fn sandboxed_shell(cmd: &str, sandbox: Sandbox) -> TaskKind {
    TaskKind::Shell {
        cmd: cmd.into(),
        env: BTreeMap::new(),
        cwd: None,
        sandbox: Some(sandbox),
    }
}

#[tokio::test]
async fn sandbox_makes_the_system_read_only_tmp_private_and_cuts_the_network() {
    let marker = tempfile::Builder::new()
        .prefix("tern-host-marker-")
        .tempfile_in("/tmp")
        .unwrap();
    let marker_name = marker
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let writable = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cmd = format!(
        "touch /usr/tern-x 2>/dev/null && echo system-writable || echo system-read-only; \
         ls /tmp | grep -c {marker_name} || true; \
         echo ok > {w}/out.txt && echo wrote-writable; \
         echo done=1 >> \"$TERN_OUTPUT\"; \
         python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2); print(\"net-open\")' 2>/dev/null || echo net-closed",
        w = writable.path().display()
    );
    let sandbox = Sandbox {
        network: false,
        writable: vec![writable.path().display().to_string()],
    };
    let (c, log) = run(&assignment(sandboxed_shell(&cmd, sandbox.clone()))).await;
    assert!(c.success, "{c:?}\n{log}");
    assert!(log.contains("system-read-only"), "{log}");
    assert!(
        log.lines().any(|l| l.trim() == "0"),
        "the host's /tmp is hidden: {log}"
    );
    assert!(log.contains("wrote-writable"), "{log}");
    assert_eq!(c.outputs["done"], json!(1));
    assert!(log.contains("net-closed"), "{log}");
    // Positive control: with the network allowed the same connection succeeds.
    let (c, log) = run(&assignment(sandboxed_shell(
        &cmd,
        Sandbox {
            network: true,
            ..sandbox
        },
    )))
    .await;
    assert!(c.success, "{log}");
    assert!(log.contains("net-open"), "{log}");
    drop(listener);
}

#[tokio::test]
async fn sandboxed_python_reads_its_code_from_stdin() {
    let (c, log) = run(&assignment(TaskKind::Python {
        code: "import os\nprint('in sandbox', os.getpid())\nopen(os.environ['TERN_OUTPUT'], 'w').write('{\"n\": 1}')\n".into(),
        script: None,
        args: vec![],
        env: BTreeMap::new(),
        cwd: None,
        sandbox: Some(Sandbox::default()),
        requirements: vec![],
        python_version: None,
    }))
    .await;
    assert!(c.success, "{c:?}\n{log}");
    // Its own PID namespace: the interpreter is one of the first processes.
    let pid: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("in sandbox "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid < 10, "{log}");
    assert_eq!(c.outputs["n"], json!(1));
}
