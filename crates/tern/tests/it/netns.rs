//! A remote site in its own network namespace: it can dial the control plane, nothing can dial
//! into it (an nftables policy drops new inbound connections), and the agent listens on no port.
//! Both ends live in namespaces this test creates; nothing is added to the machine's own
//! namespace. Needs root, `ip` and `nft` (installed by `.ci/run`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{finished, run_state, task, Tern, DEADLINE};

pub(crate) const CLOUD_IP: &str = "198.51.100.1";
pub(crate) const SITE_IP: &str = "198.51.100.2";

pub(crate) struct Namespaces {
    pub cloud: String,
    pub site: String,
    children: Vec<Child>,
}

pub(crate) fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespaces {
    pub fn create() -> Namespaces {
        let id = std::process::id();
        let (cloud, site) = (format!("tcloud{id}"), format!("tsite{id}"));
        let n = Namespaces {
            cloud: cloud.clone(),
            site: site.clone(),
            children: Vec::new(),
        };
        sh(&format!("ip netns add {cloud} && ip netns add {site}"));
        sh(&format!(
            "ip link add vc{id} netns {cloud} type veth peer name vs{id} netns {site} && \
             ip -n {cloud} addr add {CLOUD_IP}/24 dev vc{id} && ip -n {cloud} link set vc{id} up && ip -n {cloud} link set lo up && \
             ip -n {site} addr add {SITE_IP}/24 dev vs{id} && ip -n {site} link set vs{id} up && ip -n {site} link set lo up"
        ));
        sh(&format!(
            "ip netns exec {site} nft -f - <<'NFT'\n\
             table inet site {{\n  chain input {{\n    type filter hook input priority 0; policy drop;\n    \
             iif \"lo\" accept\n    ct state established,related accept\n  }}\n}}\nNFT"
        ));
        n
    }

    pub fn spawn(&mut self, ns: &str, cmd: Command) -> u32 {
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program).args(args);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cloud])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.site])
            .status();
    }
}

/// Sockets in LISTEN state in a namespace (from its /proc/net/tcp and tcp6).
pub(crate) fn listening_sockets(ns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            "cat /proc/net/tcp /proc/net/tcp6",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
        .map(str::to_string)
        .collect()
}

pub(crate) fn is_root() -> bool {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI runs as root: this test must run there"
    );
    eprintln!("skipped: network namespaces need root");
    false
}

/// A control plane in the cloud namespace and an activated agent of site `warsaw` in the site
/// namespace, dialling out to it.
fn cloud_and_site(t: &Tern) -> Namespaces {
    let mut ns = Namespaces::create();
    let port = 18000 + (std::process::id() % 1000) as u16;
    ns.start_server(t, port);
    ns.start_site_agent(t, port, "warsaw", &t.path().join("agent"));
    ns
}

impl Namespaces {
    /// Starts `tern server` on `CLOUD_IP:port` in the cloud namespace and waits until it listens.
    pub fn start_server(&mut self, t: &Tern, port: u16) {
        let cloud_ns = self.cloud.clone();
        self.spawn(
            &cloud_ns,
            t.command(&["server", "--bind", &format!("{CLOUD_IP}:{port}")]),
        );
        let start = Instant::now();
        while !listening_sockets(&cloud_ns)
            .iter()
            .any(|l| l.contains(&format!(":{port:04X}")))
        {
            assert!(start.elapsed() < DEADLINE, "the server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Activates an agent of `site` with a one-time code and starts it in the site namespace,
    /// dialling the server on `CLOUD_IP:port`, with its folder `dir`.
    pub fn start_site_agent(&mut self, t: &Tern, port: u16, site: &str, dir: &std::path::Path) {
        let code = t
            .ok(&["agents", "activation", "create", "--site", site])
            .trim()
            .to_string();
        let mut agent = Command::new(env!("CARGO_BIN_EXE_tern"));
        agent
            .args([
                "agent",
                "--server",
                &format!("http://{CLOUD_IP}:{port}"),
                "--activation",
                &code,
                "--dir",
            ])
            .arg(dir);
        let site_ns = self.site.clone();
        self.spawn(&site_ns, agent);
    }
}

impl Namespaces {
    /// Cuts (or restores) the site's only link.
    fn link(&self, up: bool) {
        sh(&format!(
            "ip -n {} link set vs{} {}",
            self.site,
            std::process::id(),
            if up { "up" } else { "down" }
        ));
    }
}

#[test]
fn an_agent_behind_a_closed_firewall_runs_its_sites_tasks() {
    if !is_root() {
        return;
    }
    let t = Tern::new();
    t.write_dag(
        "hybrid.star",
        r#"
d = dag(id = "hybrid")
cloud = shell(id = "cloud", cmd = "echo cloud side")
site = shell(id = "site", cmd = "echo site side", queue = "site:warsaw")
done = empty(id = "done")
done << [cloud, site]
"#,
    );
    let mut ns = cloud_and_site(&t);
    let (cloud_ns, site_ns) = (ns.cloud.clone(), ns.site.clone());
    let run_id = t.trigger("hybrid", None);
    let v = t.wait_run("hybrid", &run_id, "the hybrid run", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert!(task(&v, "site")["worker"]
        .as_str()
        .unwrap()
        .starts_with("agent-"));
    assert!(t.log("hybrid", &run_id, "site", None).contains("site side"));

    // The site namespace holds only the agent: nothing there listens.
    assert_eq!(
        listening_sockets(&site_ns),
        Vec::<String>::new(),
        "the agent must listen on no port"
    );
    // And the site cannot be dialled: even a port that listens there (a listener started for
    // the check) is reachable from inside the site but not from the cloud side.
    let mut listener = Command::new("python3");
    listener.args([
        "-c",
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',9999))\ns.listen()\ntime.sleep(60)",
    ]);
    ns.spawn(&site_ns, listener);
    let start = Instant::now();
    while listening_sockets(&site_ns).is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "the check's listener never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dial = |from: &str, to: &str| {
        Command::new("ip")
            .args(["netns", "exec", from, "timeout", "2", "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{to}/9999"))
            .status()
            .unwrap()
            .success()
    };
    assert!(
        dial(&site_ns, SITE_IP),
        "positive control: the site reaches its own listener"
    );
    assert!(
        !dial(&cloud_ns, SITE_IP),
        "a connection into the site must not open"
    );
}

/// A control plane and a site agent with attempt lease `lease`, and a run of DAG `site` whose
/// one site task `work` (`cmd`, with `retries`) is running on the agent.
fn site_task_running(lease: &str, retries: u32, cmd: &str) -> (Tern, Namespaces, String) {
    let t = Tern::new();
    t.with_lease(lease);
    t.write_dag(
        "site.star",
        &format!(
            "d = dag(id = \"site\")\nshell(id = \"work\", queue = \"site:warsaw\", retries = {retries}, retry_delay = \"0s\", cmd = \"{cmd}\")\n"
        ),
    );
    let ns = cloud_and_site(&t);
    let run_id = t.trigger("site", None);
    t.wait_run("site", &run_id, "the task to run on the site", |v| {
        task(v, "work")["state"] == "running"
    });
    (t, ns, run_id)
}

#[test]
fn a_link_cut_shorter_than_the_lease_loses_nothing() {
    if !is_root() {
        return;
    }
    let (t, ns, run_id) =
        site_task_running("8s", 1, "echo before the cut; sleep 3; echo after the cut");
    ns.link(false);
    // The outage itself is the scenario: two seconds, a quarter of the lease.
    std::thread::sleep(Duration::from_secs(2));
    ns.link(true);
    let v = t.wait_run("site", &run_id, "the run", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert_eq!(task(&v, "work")["try_number"], 1, "one attempt: {v:#}");
    let log = t.log("site", &run_id, "work", None);
    assert!(
        log.contains("before the cut") && log.contains("after the cut"),
        "{log}"
    );
}

#[test]
fn a_link_cut_longer_than_the_lease_loses_the_attempt_and_the_retry_runs_after_it() {
    if !is_root() {
        return;
    }
    let pidfile = std::env::temp_dir().join(format!("tern-first-try-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let (t, ns, run_id) = site_task_running(
        "4s",
        1,
        &format!(
            "if [ $TERN_TRY_NUMBER = 1 ]; then echo first try; echo $$ > {}; sleep 20; echo first try done; else echo second try; fi",
            pidfile.display()
        ),
    );
    let first_pid: i32 = {
        let start = std::time::Instant::now();
        loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the first try never wrote its pid"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let _ = std::fs::remove_file(&pidfile);
    ns.link(false);
    // The control plane gives up on the silent agent when the lease runs out...
    let v = t.wait_run("site", &run_id, "the attempt to be lost", |v| {
        task(v, "work")["try_number"].as_u64() >= Some(2)
            || task(v, "work")["state"] == "up_for_retry"
    });
    assert!(
        v["tries"]["work"][0]["note"]
            .as_str()
            .unwrap_or("")
            .contains("lease expired"),
        "{v:#}"
    );
    // ...by which time the agent, unable to renew, has already stopped the try itself: a
    // retry can never overlap it.
    assert!(
        !std::path::Path::new(&format!("/proc/{first_pid}")).exists(),
        "the first try still runs after its lease ran out"
    );
    // The retry waits for the site, which comes back. A claim answered into the cut link is
    // given back without using a try, so exactly one retry runs.
    ns.link(true);
    let v = t.wait_run("site", &run_id, "the retry", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert_eq!(task(&v, "work")["try_number"], 2, "{v:#}");
    assert!(t
        .log("site", &run_id, "work", Some(2))
        .contains("second try"));
    // The first try's own result (spooled during the cut) says why it stopped, and is
    // recorded on the try without changing anything.
    t.wait_run("site", &run_id, "the late result to be recorded", |v| {
        v["tries"]["work"][0]["note"]
            .as_str()
            .unwrap_or("")
            .contains("late result ignored")
    });
    assert!(!t
        .log("site", &run_id, "work", Some(1))
        .contains("first try done"));
}

#[test]
fn a_claim_answered_into_a_cut_link_is_delivered_again_without_using_a_try() {
    if !is_root() {
        return;
    }
    let t = Tern::new();
    t.with_lease("3s");
    t.write_dag(
        "site.star",
        "d = dag(id = \"site\")\nshell(id = \"work\", queue = \"site:warsaw\", retries = 0, cmd = \"echo ran\")\n",
    );
    let ns = cloud_and_site(&t);
    // The agent is idle, waiting in its long poll; the link goes down under it.
    let start = std::time::Instant::now();
    while t.json(&["agents", "list"])[0]["connected"] != true {
        assert!(start.elapsed() < DEADLINE, "the agent never connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    ns.link(false);
    let run_id = t.trigger("site", None);
    // The waiting poll is answered with the task, into the cut link: claimed, never received.
    t.wait_run("site", &run_id, "the claim", |v| {
        task(v, "work")["state"] == "running"
    });
    // Unconfirmed, it goes back to the queue when its lease runs out, with no try used.
    let v = t.wait_run("site", &run_id, "the claim to be given back", |v| {
        task(v, "work")["state"] == "queued"
    });
    assert_eq!(task(&v, "work")["try_number"], 0, "{v:#}");
    eprintln!("agents: {:#}", t.json(&["agents", "list"]));
    ns.link(true);
    let v = t.wait_run("site", &run_id, "the run", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert_eq!(task(&v, "work")["try_number"], 1, "{v:#}");
    assert!(t.log("site", &run_id, "work", Some(1)).contains("ran"));
}
