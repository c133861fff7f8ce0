//! Runs the `tern` binary against a private data folder and DAG folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Tern {
    pub home: tempfile::TempDir,
    pub dags: PathBuf,
    pub database_url: Option<String>,
}

/// Fast settings so tests spend their time on behaviour, not on waiting.
const TEST_SETTINGS: &str = r#"
[scheduler]
dag_scan_interval = "200ms"
housekeeping_interval = "100ms"
lease = "5s"

[agent]
kill_grace = "500ms"
"#;

impl Tern {
    pub fn new() -> Tern {
        let home = tempfile::tempdir().expect("temp home");
        let dags = home.path().join("dags");
        std::fs::create_dir_all(&dags).unwrap();
        std::fs::write(home.path().join("tern.toml"), TEST_SETTINGS).unwrap();
        Tern {
            home,
            dags,
            database_url: None,
        }
    }

    /// The test settings with another attempt lease.
    pub fn with_lease(&self, lease: &str) {
        let settings = TEST_SETTINGS.replace("lease = \"5s\"", &format!("lease = \"{lease}\""));
        std::fs::write(self.path().join("tern.toml"), settings).unwrap();
    }

    /// Adds a line to the `[agent]` section (the last one of the test settings).
    pub fn agent_setting(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path().join("tern.toml"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    pub fn write_dag(&self, name: &str, text: &str) {
        let path = self.dags.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tern"));
        c.arg("--home")
            .arg(self.home.path())
            .arg("--dags")
            .arg(&self.dags);
        if let Some(url) = &self.database_url {
            c.arg("--database-url").arg(url);
        }
        c.args(args).env_remove("TERN_HOME").env_remove("TERN_DAGS");
        c
    }

    /// Runs a command to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("tern runs")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tern {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// Starts `tern standalone` on a free port.
    pub fn standalone(&self) -> Standalone {
        let child = self
            .command(&["standalone", "--port", "0", "--no-examples"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("standalone starts");
        Standalone { child }
    }

    /// The run's JSON (`runs show`), once `done` says it is what we wait for.
    pub fn wait_run(
        &self,
        dag: &str,
        run_id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let v = self.json(&["runs", "show", dag, run_id]);
            if done(&v) {
                return v;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; last: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn trigger(&self, dag: &str, conf: Option<&str>) -> String {
        let mut args = vec!["dags", "trigger", dag];
        if let Some(c) = conf {
            args.extend(["--conf", c]);
        }
        self.ok(&args).trim().to_string()
    }

    pub fn log(&self, dag: &str, run: &str, task: &str, try_number: Option<u32>) -> String {
        let t = try_number.map(|t| t.to_string());
        let mut args = vec!["logs", dag, run, task];
        if let Some(t) = &t {
            args.extend(["--try", t]);
        }
        self.ok(&args)
    }

    pub fn path(&self) -> &Path {
        self.home.path()
    }
}

pub struct Standalone {
    pub child: Child,
}

impl Standalone {
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the process to exit and returns its stderr.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status, err);
            }
            assert!(start.elapsed() < DEADLINE, "standalone did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn task<'a>(run: &'a Value, task_id: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == task_id)
        .unwrap_or_else(|| panic!("no task {task_id} in {run:#}"))
}

pub fn run_state(v: &Value) -> &str {
    v["run"]["state"].as_str().unwrap()
}

pub fn finished(v: &Value) -> bool {
    matches!(run_state(v), "success" | "failed")
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(p.display().to_string());
                }
            }
        }
    }
    found
}

/// A raw HTTP/1.1 request on loopback (`url` is `http://host:port`): (status, body).
pub fn http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = exchange(url, method, path, headers, "application/json", body);
    (status, body)
}

/// A raw HTTP/1.1 exchange: (status, headers as lowercase `name: value` lines, body).
pub fn exchange(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &str,
) -> (u16, Vec<String>, String) {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head[9..12].parse().unwrap();
    let headers = head.lines().skip(1).map(|l| l.to_lowercase()).collect();
    (status, headers, body.to_string())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
