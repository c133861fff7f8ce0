//! Python tasks with their own requirements, through the binary: the agent builds one virtual
//! environment per set (from PyPI), reuses it for every task that asks for the same set, and a
//! `python_version` it does not have fails the task with a clear message.

use crate::harness::{finished, run_state, task, Tern};

#[test]
fn a_python_task_runs_in_a_virtual_env_with_its_requirements_built_once() {
    let t = Tern::new();
    t.write_dag(
        "env.star",
        r#"dag(id = "env")
code = "import six, sys\nprint('six', six.__version__, 'venv', sys.prefix != sys.base_prefix)"
first = python(id = "first", code = code, requirements = ["six==1.16.0"])
again = python(id = "again", code = code, requirements = [" six==1.16.0"], python_version = "3.11")
plain = python(id = "plain", code = "import importlib.util as u\nprint('six here:', u.find_spec('six') is not None)")
future = python(id = "future", code = "print('never')", python_version = "3.99", requirements = ["six==1.16.0"], retries = 1, retry_delay = "1s")
missing = python(id = "missing", code = "print('never')", requirements = ["tern-no-such-package-q7x==0.0.1"], retries = 1, retry_delay = "1s")
first >> again
"#,
    );
    let _sa = t.standalone();
    let run = t.trigger("env", None);
    let v = t.wait_run("env", &run, "the run to end", finished);
    let first = t.log("env", &run, "first", None);
    assert_eq!(task(&v, "first")["state"], "success", "{first}");
    assert!(first.contains("six 1.16.0 venv True"), "{first}");
    assert!(first.contains("building virtual environment"), "{first}");
    let again = t.log("env", &run, "again", None);
    assert_eq!(task(&v, "again")["state"], "success", "{again}");
    assert!(again.contains("six 1.16.0 venv True"), "{again}");
    // python3.11 is the test machine's python3: the same interpreter and set, the same env.
    assert!(again.contains("reusing virtual environment"), "{again}");
    let plain = t.log("env", &run, "plain", None);
    assert!(
        plain.contains("tern: running python3 with"),
        "the agent's own python: {plain}"
    );
    assert!(
        !plain.contains("virtual environment"),
        "no requirements, no env: {plain}"
    );
    let future = t.log("env", &run, "future", None);
    assert_eq!(task(&v, "future")["state"], "failed", "{future}");
    assert!(
        future.contains("python_version 3.99: this agent has no `python3.99`"),
        "{future}"
    );
    assert_eq!(
        task(&v, "future")["try_number"],
        1,
        "a missing interpreter is not retried"
    );
    // A build that fails is retried (the index may be back), and leaves no environment behind.
    assert_eq!(task(&v, "missing")["state"], "failed");
    assert_eq!(task(&v, "missing")["try_number"], 2, "{v:#}");
    let missing = t.log("env", &run, "missing", Some(2));
    assert!(
        missing.contains("building the virtual environment: pip install"),
        "{missing}"
    );
    assert_eq!(
        std::fs::read_dir(t.path().join("venvs")).unwrap().count(),
        1
    );
    assert_eq!(run_state(&v), "failed");
}

/// An agent at a site without internet installs from its wheel folder only.
#[test]
fn an_agent_with_a_wheel_folder_installs_from_it_only() {
    let t = Tern::new();
    let wheels = t.path().join("wheels");
    let got = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "-q",
            "six==1.16.0",
            "-d",
        ])
        .arg(&wheels)
        .output()
        .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    t.agent_setting(&format!("pip_find_links = \"{}\"", wheels.display()));
    t.write_dag(
        "offline.star",
        r#"dag(id = "offline")
python(id = "ok", code = "import six; print('six', six.__version__)", requirements = ["six==1.16.0"])
python(id = "absent", code = "pass", requirements = ["attrs==23.2.0"])
"#,
    );
    let _sa = t.standalone();
    let run = t.trigger("offline", None);
    let v = t.wait_run("offline", &run, "the run to end", finished);
    let ok = t.log("offline", &run, "ok", None);
    assert_eq!(task(&v, "ok")["state"], "success", "{ok}");
    assert!(ok.contains("six 1.16.0"), "{ok}");
    let links = ok
        .lines()
        .find(|l| l.contains("Looking in links:"))
        .unwrap_or_default();
    assert!(links.contains(&wheels.display().to_string()), "{ok}");
    assert!(
        ok.contains(&format!("Processing {}", wheels.display())),
        "{ok}"
    );
    let absent = t.log("offline", &run, "absent", None);
    assert_eq!(task(&v, "absent")["state"], "failed", "{absent}");
    assert!(
        absent.contains("No matching distribution found for attrs==23.2.0"),
        "{absent}"
    );
}

/// With `uv` on the agent's PATH the environment is built with it.
#[test]
fn an_agent_with_uv_builds_environments_with_it() {
    let t = Tern::new();
    // uv from PyPI, in a venv of its own; only its binary goes on the agent's PATH.
    let tools = t.path().join("uv-venv");
    for (program, args) in [
        ("python3", vec!["-m", "venv", tools.to_str().unwrap()]),
        (
            tools.join("bin/python").to_str().unwrap(),
            vec![
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "uv",
            ],
        ),
    ] {
        let out = std::process::Command::new(program)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bin = t.path().join("uv-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(tools.join("bin/uv"), bin.join("uv")).unwrap();
    t.write_dag(
        "uv.star",
        r#"dag(id = "uvd")
python(id = "p", code = "import six, sys; print('six', six.__version__, sys.prefix != sys.base_prefix)", requirements = ["six==1.16.0"])
"#,
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let _sa = crate::harness::Standalone {
        child: t
            .command(&["standalone", "--port", "0", "--no-examples"])
            .env("PATH", path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    };
    let run = t.trigger("uvd", None);
    let v = t.wait_run("uvd", &run, "the run to end", finished);
    let log = t.log("uvd", &run, "p", None);
    assert_eq!(run_state(&v), "success", "{log}");
    assert!(log.contains(") with uv"), "{log}");
    assert!(log.contains("six 1.16.0 True"), "{log}");
}
