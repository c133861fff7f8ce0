//! The `container` task: the command line that runs an image with podman or docker, and the
//! clean-up of a container whose client was stopped.
//!
//! Environment values never appear on the command line (it is visible to every local user):
//! each variable is set on the runtime's own process and passed by name (`-e NAME`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tern_core::ContainerTask;

/// Folder inside the container where the task's output file lives.
pub const OUTPUT_DIR: &str = "/tern";

/// A container run with its templates rendered.
pub struct Rendered {
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// (source, target, read-only)
    pub mounts: Vec<(String, String, bool)>,
}

/// The runtime to use: the one the task names, else podman, else docker, found on `path`.
pub fn find_runtime(choice: Option<&str>, path: Option<&str>) -> Result<PathBuf, String> {
    let candidates: Vec<&str> = match choice {
        Some(c) => vec![c],
        None => vec!["podman", "docker"],
    };
    candidates
        .iter()
        .find_map(|c| crate::process::find_program(c, path))
        .ok_or_else(|| {
            format!(
                "no container runtime: {} is not installed on the machine running this task; install podman (Debian/Ubuntu: apt install podman) or route the task to a queue whose agent has one",
                candidates.join(" or ")
            )
        })
}

/// A container name unique to the run of an attempt (`tern tasks test` runs share one attempt
/// token), so it can be removed after a timeout.
pub fn container_name(ti_id: i64, attempt: &str) -> String {
    let tail: String = attempt
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("tern-{ti_id}-{tail}-{}-{n}", std::process::id())
}

/// The runtime's arguments. `env_names` are passed by name (their values are in the runtime's
/// environment); `workdir` is mounted at [`OUTPUT_DIR`] for the output file.
pub fn run_args(
    t: &ContainerTask,
    r: &Rendered,
    name: &str,
    workdir: &Path,
    env_names: &[String],
) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), "--rm".into(), "--name".into(), name.into()];
    if !t.network {
        a.extend(["--network".into(), "none".into()]);
    }
    if let Some(m) = &t.memory {
        a.extend(["--memory".into(), m.clone()]);
    }
    if let Some(c) = &t.cpus {
        a.extend(["--cpus".into(), c.clone()]);
    }
    a.extend(["-v".into(), format!("{}:{OUTPUT_DIR}", workdir.display())]);
    for (source, target, ro) in &r.mounts {
        let mode = if *ro { ":ro" } else { "" };
        a.extend(["-v".into(), format!("{source}:{target}{mode}")]);
    }
    for n in env_names {
        a.extend(["-e".into(), n.clone()]);
    }
    let mut rest = Vec::new();
    if let Some((entry, more)) = r.command.split_first() {
        a.extend(["--entrypoint".into(), entry.clone()]);
        rest.extend(more.iter().cloned());
    }
    a.push(t.image.clone());
    a.extend(rest);
    a.extend(r.args.iter().cloned());
    a
}

/// Removes the container of a stopped attempt (its client was killed, so `--rm` may not have
/// run). Best effort, bounded.
pub async fn remove(runtime: &Path, name: &str) {
    let run = tokio::process::Command::new(runtime)
        .args(["rm", "-f", "--time", "1", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), run).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_arguments_limit_isolate_and_keep_values_off_the_command_line() {
        let t = ContainerTask {
            image: "localhost/etl:1".into(),
            command: vec!["python3".into(), "-u".into()],
            args: vec!["job.py".into()],
            env: BTreeMap::from([("TOKEN".into(), "s3cr3t".into())]),
            mounts: vec![],
            memory: Some("256m".into()),
            cpus: Some("0.5".into()),
            network: false,
            runtime: None,
        };
        let r = Rendered {
            command: t.command.clone(),
            args: t.args.clone(),
            env: t.env.clone(),
            mounts: vec![("/data".into(), "/in".into(), true)],
        };
        let a = run_args(&t, &r, "tern-1-x", Path::new("/tmp/w"), &["TOKEN".into()]);
        let line = a.join(" ");
        assert_eq!(
            line,
            "run --rm --name tern-1-x --network none --memory 256m --cpus 0.5 -v /tmp/w:/tern \
             -v /data:/in:ro -e TOKEN --entrypoint python3 localhost/etl:1 -u job.py"
        );
        assert!(!line.contains("s3cr3t"));
        let name = container_name(7, "ab-12_cd");
        assert!(name.starts_with("tern-7-ab12cd-"), "{name}");
        assert_ne!(name, container_name(7, "ab-12_cd"));
        assert!(find_runtime(Some("no-such-runtime"), Some("/nonexistent"))
            .unwrap_err()
            .contains("apt install podman"));
    }
}
