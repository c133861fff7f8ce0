//! Virtual environments for python tasks with `requirements` or `python_version` (MWAA's
//! `requirements.txt`, Airflow's `PythonVirtualenvOperator`): one per interpreter and
//! requirement set, built with `uv` when the agent has it (else `python -m venv` and pip) the
//! first time a task needs it, then reused by every task that asks for the same set. A build that fails leaves nothing behind,
//! so the next try builds again.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::logsink::LogSink;

/// Where pip installs packages from: pip's own settings when both are `None` (its default
/// index, `PIP_INDEX_URL`, `pip.conf`); an agent at a site without internet names an index of
/// its own or a wheel folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipSource {
    pub index_url: Option<String>,
    /// With no `index_url`, installs use only this folder (`--no-index`).
    pub find_links: Option<String>,
}

impl PipSource {
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(u) = &self.index_url {
            a.extend(["--index-url".to_string(), u.clone()]);
        }
        if let Some(f) = &self.find_links {
            a.extend(["--find-links".to_string(), f.clone()]);
            if self.index_url.is_none() {
                a.push("--no-index".into());
            }
        }
        a
    }
}

/// One build at a time in this process (two tasks asking for the same set wait for one build).
static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where environments are kept unless the agent says otherwise: the user's cache folder.
pub fn default_root() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("tern").join("venvs")
}

/// Why there is no environment: a missing interpreter (another try cannot help) or a build
/// that failed (the index may be back for the next try).
#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    #[error("{0}")]
    NoInterpreter(String),
    #[error("{0}")]
    BuildFailed(String),
}

/// The interpreter of the environment for `requirements` on `python_version` (or `base`),
/// built under `root` if it is not there yet; its build is written to `sink`.
pub async fn ensure(
    base: &str,
    root: &Path,
    pip: &PipSource,
    requirements: &[String],
    python_version: Option<&str>,
    sink: &dyn LogSink,
) -> Result<PathBuf, VenvError> {
    let interpreter = match python_version {
        Some(v) => format!("python{v}"),
        None => base.to_string(),
    };
    let probe = tokio::process::Command::new(&interpreter)
        .args(["-c", "import sys; print(sys.executable); print(sys.version)"])
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .ok_or_else(|| match python_version {
            Some(v) => format!(
                "python_version {v}: this agent has no `{interpreter}`; install Python {v} there or leave python_version out"
            ),
            None => format!("cannot run the agent's python `{interpreter}`"),
        })
        .map_err(VenvError::NoInterpreter)?;
    let (executable, version) = probe.split_once('\n').unwrap_or(("", &probe));
    let version = version.trim().to_string();
    let mut reqs: Vec<&str> = requirements.iter().map(|r| r.trim()).collect();
    reqs.sort_unstable();
    reqs.dedup();
    let mut h = Sha256::new();
    h.update(version.as_bytes());
    for r in &reqs {
        h.update(b"\n");
        h.update(r.as_bytes());
    }
    let key = hex::encode(&h.finalize()[..8]);
    let dir = root.join(&key);
    let python = dir.join("bin").join("python");
    let describe = format!("{} requirement(s) on {interpreter}", reqs.len());
    if dir.join(".ready").exists() {
        sink.line(&format!(
            "tern: reusing virtual environment {key} ({describe})"
        ));
        return Ok(python);
    }
    let _one_build = BUILDING.lock().await;
    if dir.join(".ready").exists() {
        sink.line(&format!(
            "tern: reusing virtual environment {key} ({describe})"
        ));
        return Ok(python);
    }
    // uv when the agent has it (much faster), else python -m venv and pip.
    let uv = crate::process::find_program("uv", None);
    sink.line(&format!(
        "tern: building virtual environment {key} ({describe}) with {}",
        if uv.is_some() { "uv" } else { "venv and pip" }
    ));
    let building = root.join(format!("{key}.building"));
    let fail = |what: &str, e: String| {
        let _ = std::fs::remove_dir_all(&building);
        VenvError::BuildFailed(format!("building the virtual environment: {what}: {e}"))
    };
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(root).map_err(|e| fail(&root.display().to_string(), e.to_string()))?;
    let venv = building.display().to_string();
    let interpreter_path = if executable.is_empty() {
        interpreter.clone()
    } else {
        executable.to_string()
    };
    match &uv {
        Some(uv) => run(
            sink,
            &uv.display().to_string(),
            &["venv", "--quiet", "--python", &interpreter_path, &venv],
        )
        .await
        .map_err(|e| fail("uv venv", e))?,
        None => run(sink, &interpreter, &["-m", "venv", &venv])
            .await
            .map_err(|e| fail("python -m venv", e))?,
    }
    if !reqs.is_empty() {
        let file = building.join("requirements.txt");
        std::fs::write(&file, reqs.join("\n") + "\n")
            .map_err(|e| fail("requirements.txt", e.to_string()))?;
        let file = file.display().to_string();
        let python = building.join("bin").join("python").display().to_string();
        let (program, mut args): (String, Vec<String>) = match &uv {
            Some(uv) => (
                uv.display().to_string(),
                ["pip", "install", "--python", &python]
                    .map(String::from)
                    .to_vec(),
            ),
            None => (
                python.clone(),
                [
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ]
                .map(String::from)
                .to_vec(),
            ),
        };
        args.extend(pip.args());
        args.extend(["-r".to_string(), file]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let step = if uv.is_some() {
            "uv pip install"
        } else {
            "pip install"
        };
        run(sink, &program, &args)
            .await
            .map_err(|e| fail(step, e))?;
    }
    std::fs::write(building.join(".ready"), &version).map_err(|e| fail(".ready", e.to_string()))?;
    std::fs::rename(&building, &dir).map_err(|e| fail("moving it in place", e.to_string()))?;
    sink.line(&format!("tern: virtual environment {key} ready"));
    Ok(python)
}

/// Runs a build step, its output into the task log; an error says how it ended.
async fn run(sink: &dyn LogSink, program: &str, args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        sink.line(line);
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} ended with {}; see the lines above",
            args.join(" "),
            out.status
        ))
    }
}
