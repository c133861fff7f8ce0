//! Across runs, through the binary: a run past its `dagrun_timeout` fails and the task process
//! it was running is stopped; a DAG pauses itself after `max_consecutive_failed_dag_runs`.

use std::time::{Duration, Instant};

use crate::harness::{finished, run_state, task, Tern, DEADLINE};

#[test]
fn a_run_past_its_dagrun_timeout_fails_and_its_task_process_is_stopped() {
    let t = Tern::new();
    let pid_file = t.path().join("sleeper.pid");
    t.write_dag(
        "slow.star",
        &format!(
            "dag(id = \"slow\", dagrun_timeout = \"2s\")\n\
             shell(id = \"sleeper\", cmd = \"echo $$ > {}; exec sleep 120\")\n\
             shell(id = \"after\", cmd = \"true\", upstream = [\"sleeper\"])\n",
            pid_file.display()
        ),
    );
    let _sa = t.standalone();
    let run = t.trigger("slow", None);
    let done = t.wait_run("slow", &run, "the run to time out", finished);
    assert_eq!(run_state(&done), "failed", "{done:#}");
    for id in ["sleeper", "after"] {
        let ti = task(&done, id);
        assert_eq!(ti["state"], "skipped", "{ti:#}");
        assert!(
            ti["note"]
                .as_str()
                .unwrap_or("")
                .contains("dagrun_timeout of 2s"),
            "{ti:#}"
        );
    }
    // The sleep it was running is gone (the agent stopped it), long before its 120 s.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            start.elapsed() < DEADLINE,
            "the timed-out task's process {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dag_pauses_itself_after_its_last_runs_failed() {
    let t = Tern::new();
    t.write_dag(
        "flaky.star",
        "dag(id = \"flaky\", max_consecutive_failed_dag_runs = 2)\nshell(id = \"a\", cmd = \"exit 3\")\n",
    );
    let _sa = t.standalone();
    for n in 0..2 {
        let run = t.trigger("flaky", None);
        let done = t.wait_run("flaky", &run, "the failing run", finished);
        assert_eq!(run_state(&done), "failed", "run {n}: {done:#}");
    }
    let dags = t.json(&["dags", "list"]);
    let flaky = dags
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dag_id"] == "flaky")
        .unwrap();
    assert_eq!(flaky["is_paused"], true, "{flaky:#}");
    let out = t.run(&["dags", "trigger", "flaky"]);
    assert!(!out.status.success(), "a paused DAG cannot be triggered");
}
