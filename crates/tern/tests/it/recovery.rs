//! Stopping the control plane mid-run, by Ctrl-C or by SIGKILL: nothing is lost, nothing runs
//! twice at once, interrupted tasks are retried per policy.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{finished, run_state, task, Tern, DEADLINE};

/// A task that blocks on its first try (recording its shell's pid) and succeeds after.
fn dag(t: &Tern) -> std::path::PathBuf {
    let pidfile = t.path().join("first-try.pid");
    t.write_dag(
        "long.star",
        &format!(
            r#"
d = dag(id = "long")
shell(id = "long", retries = 1, retry_delay = "0s",
      cmd = "if [ $TERN_TRY_NUMBER = 1 ]; then echo $$ > {p}; echo first try blocks; sleep 60; else echo retried fine; fi")
"#,
            p = pidfile.display()
        ),
    );
    pidfile
}

fn wait_running(t: &Tern, run_id: &str, pidfile: &std::path::Path) -> i32 {
    t.wait_run("long", run_id, "the task to run", |v| {
        task(v, "long")["state"] == "running"
    });
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(pidfile) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(start.elapsed() < DEADLINE, "the first try never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the running first try's log is readable centrally.
fn wait_log_line(t: &Tern, run_id: &str) {
    let start = Instant::now();
    while !t
        .log("long", run_id, "long", Some(1))
        .contains("first try blocks")
    {
        assert!(
            start.elapsed() < DEADLINE,
            "the running task's log never showed up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn process_gone(pid: i32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn killed_control_plane_leaves_no_task_running_and_retries_on_restart() {
    let t = Tern::new();
    let pidfile = dag(&t);
    let sa = t.standalone();
    let run_id = t.trigger("long", None);
    let task_pid = wait_running(&t, &run_id, &pidfile);
    wait_log_line(&t, &run_id);
    sa.signal(Signal::SIGKILL);
    let _ = sa.wait_exit();
    assert!(
        process_gone(task_pid),
        "the task process outlived the killed control plane"
    );
    // Still `running` in the database: nobody has noticed yet.
    let v = t.json(&["runs", "show", "long", &run_id]);
    assert_eq!(task(&v, "long")["state"], "running");
    let _sa2 = t.standalone();
    let v = t.wait_run("long", &run_id, "the retried run to end", finished);
    assert_eq!(run_state(&v), "success");
    assert_eq!(task(&v, "long")["try_number"], 2);
    let first = t.log("long", &run_id, "long", Some(1));
    assert!(first.contains("first try blocks"), "{first}");
    assert!(t
        .log("long", &run_id, "long", Some(2))
        .contains("retried fine"));
}

#[test]
fn ctrl_c_stops_running_tasks_and_they_retry_after_restart() {
    let t = Tern::new();
    let pidfile = dag(&t);
    let sa = t.standalone();
    let run_id = t.trigger("long", None);
    let task_pid = wait_running(&t, &run_id, &pidfile);
    wait_log_line(&t, &run_id);
    sa.signal(Signal::SIGINT);
    let (status, err) = sa.wait_exit();
    assert!(status.success(), "graceful stop exits 0: {err}");
    assert!(
        process_gone(task_pid),
        "Ctrl-C must stop the task's processes"
    );
    let v = t.json(&["runs", "show", "long", &run_id]);
    let ti = task(&v, "long");
    // Waiting for its retry: up_for_retry, or already promoted by the scheduler's last
    // housekeeping pass before it stopped (retry_delay is 0s).
    let state = ti["state"].as_str().unwrap();
    assert!(
        ["up_for_retry", "scheduled", "queued"].contains(&state),
        "{v:#}"
    );
    assert_eq!(ti["try_number"], 1);
    assert!(ti["note"].as_str().unwrap().contains("interrupted"), "{ti}");
    let _sa2 = t.standalone();
    let v = t.wait_run("long", &run_id, "the retried run to end", finished);
    assert_eq!(run_state(&v), "success");
    assert_eq!(task(&v, "long")["try_number"], 2);
}

/// A task whose first try starts a child that would write to `side` after 30 s (recording its
/// pid in `grandchild.pid`), then blocks; its retry writes "retry". Returns both paths.
fn orphan_dag(t: &Tern) -> (std::path::PathBuf, std::path::PathBuf) {
    let gc_pid = t.path().join("grandchild.pid");
    let side = t.path().join("side.txt");
    t.write_dag(
        "orphan.star",
        &format!(
            r#"
d = dag(id = "orphan")
shell(id = "t", retries = 1, retry_delay = "0s",
      cmd = "if [ $TERN_TRY_NUMBER = 1 ]; then sh -c 'echo $$ > {gc}; sleep 30; echo late >> {side}' > /dev/null 2>&1 & echo started; sleep 60; else echo retry >> {side}; fi")
"#,
            gc = gc_pid.display(),
            side = side.display()
        ),
    );
    (gc_pid, side)
}

/// The guardian process of the `tern` process `pid` (its child named `tern-guardian`), once
/// it has started.
fn guardian_of(pid: u32) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(guardian) = find_guardian(pid) {
            return guardian;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "tern process {pid} has no guardian"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find_guardian(pid: u32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid: Option<u32> = rest.split(' ').nth(1).and_then(|p| p.parse().ok());
        if head.ends_with("(tern-guardian") && ppid == Some(pid) {
            return head.split(' ').next()?.parse().ok();
        }
    }
    None
}

#[test]
fn a_kill_9_of_the_control_plane_ends_everything_its_running_try_started_at_once() {
    let t = Tern::new();
    let (gc_pid, side) = orphan_dag(&t);
    // Not only the task's shell: the child it started in its group, before any restart.
    let run_id = kill_9_mid_try_and_expect_it_ended(&t, t.standalone(), &gc_pid, &side);
    let _sa2 = t.standalone();
    let v = t.wait_run("orphan", &run_id, "the retried run to end", finished);
    assert_eq!(run_state(&v), "success");
    assert_eq!(std::fs::read_to_string(&side).unwrap(), "retry\n");
}

#[test]
fn a_kill_9_before_the_guardian_knows_the_tries_group_still_ends_what_the_try_started() {
    let t = Tern::new();
    let (gc_pid, side) = orphan_dag(&t);
    // The agent waits 3 s between spawning the try and naming its group to the guardian: the
    // kill lands in that window.
    let child = t
        .command(&["standalone", "--port", "0", "--no-examples"])
        .env("TERN_DEBUG_PAUSE_AFTER_SPAWN_MS", "3000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("standalone starts");
    let sa = crate::harness::Standalone { child };
    kill_9_mid_try_and_expect_it_ended(&t, sa, &gc_pid, &side);
}

/// Triggers the `orphan` DAG on `sa`, kills `sa` with `kill -9` once the try's grandchild runs,
/// and checks that the grandchild and the guardian are gone and nothing went on writing; returns
/// the run's id.
fn kill_9_mid_try_and_expect_it_ended(
    t: &Tern,
    sa: crate::harness::Standalone,
    gc_pid: &std::path::Path,
    side: &std::path::Path,
) -> String {
    let guardian = guardian_of(sa.child.id());
    let run_id = t.trigger("orphan", None);
    let grandchild: i32 = first_line(gc_pid).parse().unwrap();
    sa.signal(Signal::SIGKILL);
    let _ = sa.wait_exit();
    assert!(
        process_gone(grandchild),
        "the running try's child outlived the killed control plane"
    );
    assert!(process_gone(guardian), "the guardian stayed after its job");
    assert!(!side.exists(), "the killed try's child went on writing");
    run_id
}

#[test]
fn what_a_killed_try_left_running_is_ended_before_its_retry() {
    let t = Tern::new();
    let (gc_pid, side) = orphan_dag(&t);
    let sa = t.standalone();
    let run_id = t.trigger("orphan", None);
    let grandchild: i32 = first_line(&gc_pid).parse().unwrap();
    // The guardian goes first (as in a crash that takes both), so the try's group is left.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guardian_of(sa.child.id())),
        Signal::SIGKILL,
    )
    .unwrap();
    sa.signal(Signal::SIGKILL);
    let _ = sa.wait_exit();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !process_gone_within(grandchild, Duration::from_millis(200)),
        "the grandchild is expected to outlive a kill -9 of both (that is the case under test)"
    );
    let _sa2 = t.standalone();
    let v = t.wait_run("orphan", &run_id, "the retried run to end", finished);
    assert_eq!(run_state(&v), "success");
    assert!(
        process_gone(grandchild),
        "the killed try's grandchild was not ended on restart"
    );
    assert_eq!(std::fs::read_to_string(&side).unwrap(), "retry\n");
}

/// The first line a task writes to `path`, once it has written one.
fn first_line(path: &std::path::Path) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') {
            return text.lines().next().unwrap_or("").trim().to_string();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} was never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn process_gone_within(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_result_recorded_before_a_kill_is_delivered_on_restart_not_run_again() {
    let t = Tern::new();
    let token_file = t.path().join("attempt.txt");
    let ran = t.path().join("ran.txt");
    t.write_dag(
        "once.star",
        &format!(
            r#"
d = dag(id = "once")
shell(id = "t", retries = 3, retry_delay = "0s",
      cmd = "echo run >> {ran}; echo $TERN_ATTEMPT > {tok}; sleep 60")
"#,
            ran = ran.display(),
            tok = token_file.display()
        ),
    );
    let sa = t.standalone();
    let run_id = t.trigger("once", None);
    let attempt = first_line(&token_file);
    sa.signal(Signal::SIGKILL);
    let _ = sa.wait_exit();
    // What the agent writes the moment a task's process exits, when the kill came before the
    // result reached the database: the end, recorded by a process that is now gone.
    let v = t.json(&["runs", "show", "once", &run_id]);
    let ti_id = task(&v, "t")["id"].as_i64().unwrap();
    let dir = t.path().join("run").join("ended");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("999999999.journal"),
        format!(
            r#"+ {ti_id}.{attempt} {{"ti_id": {ti_id}, "attempt": "{attempt}", "success": true, "retryable": false, "exit_code": 0, "reason": null, "outputs": {{}}}}"#
        ) + "\n",
    )
    .unwrap();
    let _sa2 = t.standalone();
    let v = t.wait_run("once", &run_id, "the run to end", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert_eq!(task(&v, "t")["try_number"], 1, "no second try: {v:#}");
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap(),
        "run\n",
        "the command ran once"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the record was used up"
    );
    // The log says how the try ended, and that its last lines may have died with the server.
    let log = t.log("once", &run_id, "t", None);
    assert!(
        log.contains("tern: the server stopped as this try ended; its recorded end is delivered now: task succeeded"),
        "{log}"
    );
}
