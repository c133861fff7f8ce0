//! DAG bundles: the DAG folder taken from a branch of a git repository (`dags.source =
//! "git+https://host/repo.git#main"`, or any URL git reads: `git+file:///srv/dags.git#main`,
//! `git+ssh://…`), through the `git` binary. Each server keeps a bare mirror under
//! `HOME/bundles/repo.git` and unpacks each commit it loads into `HOME/bundles/trees/<commit>`
//! (a fixed tree: a run never sees a file change under it).
//!
//! Which commit is loaded is the metadata database's business (`Store::bundle_version`): a
//! fetch that finds a new head records it there, and every server loads the recorded commit,
//! fetching it if it does not have it yet, so all servers load the same files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::process::Command;

use crate::config::ConfigError;

/// A failure to fetch or unpack a bundle: what git said, and what to check.
#[derive(Debug, thiserror::Error)]
#[error("DAG bundle {source_name}: {message}")]
pub struct BundleError {
    pub source_name: String,
    pub message: String,
}

/// A git branch as the DAG folder.
#[derive(Debug, Clone)]
pub struct GitBundle {
    /// The setting as written (the key of its recorded version).
    pub source: String,
    url: String,
    /// `None`: the remote's default branch (`HEAD`).
    branch: Option<String>,
    root: PathBuf,
}

/// Trees kept besides the one loaded now (for readers of the previous one).
const KEEP_TREES: usize = 2;

impl GitBundle {
    /// `git+URL[#BRANCH]`, kept under `home/bundles`.
    pub fn parse(source: &str, home: &Path) -> Result<GitBundle, ConfigError> {
        let bad = |message: String| ConfigError {
            key: "dags.source".into(),
            message,
        };
        let Some(rest) = source.strip_prefix("git+") else {
            return Err(bad(format!(
                "{source:?} is not a DAG bundle: write git+https://host/repo.git#branch (or git+file:///path/repo#branch)"
            )));
        };
        let (url, branch) = match rest.rsplit_once('#') {
            Some((u, b)) if !b.is_empty() => (u, Some(b.to_string())),
            Some((u, _)) => (u, None),
            None => (rest, None),
        };
        if url.is_empty() || url.starts_with('-') {
            return Err(bad(format!("{source:?} names no repository")));
        }
        if let Some(b) = &branch {
            if b.starts_with('-') || b.contains("..") || b.contains(char::is_whitespace) {
                return Err(bad(format!("{b:?} is not a branch name")));
            }
        }
        Ok(GitBundle {
            source: source.to_string(),
            url: url.to_string(),
            branch,
            root: home.join("bundles"),
        })
    }

    fn error(&self, message: impl Into<String>) -> BundleError {
        BundleError {
            source_name: self.source.clone(),
            message: message.into(),
        }
    }

    fn repo(&self) -> PathBuf {
        self.root.join("repo.git")
    }

    async fn git(&self, args: &[&str]) -> Result<String, BundleError> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.repo())
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| self.error(format!("cannot run git (is it installed?): {e}")))?;
        if !out.status.success() {
            return Err(self.error(format!(
                "git {} failed: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    async fn ensure_repo(&self) -> Result<(), BundleError> {
        if self.repo().join("HEAD").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.root)
            .map_err(|e| self.error(format!("cannot create {}: {e}", self.root.display())))?;
        let out = Command::new("git")
            .args(["init", "--bare", "-q"])
            .arg(self.repo())
            .output()
            .await
            .map_err(|e| self.error(format!("cannot run git (is it installed?): {e}")))?;
        if !out.status.success() {
            return Err(self.error(format!(
                "git init failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Fetches the branch and returns the commit at its head.
    pub async fn fetch_head(&self) -> Result<String, BundleError> {
        self.ensure_repo().await?;
        let branch = self.branch.as_deref().unwrap_or("HEAD");
        self.git(&["fetch", "-q", "--no-tags", "--", &self.url, branch])
            .await?;
        let commit = self.git(&["rev-parse", "FETCH_HEAD^{commit}"]).await?;
        // A ref keeps the commit (and what it needs) through git's garbage collection.
        self.git(&["update-ref", "refs/tern/head", &commit]).await?;
        Ok(commit)
    }

    /// The folder holding the files of `commit`, unpacked if this server has not yet; a commit
    /// another server recorded is fetched first.
    pub async fn tree(&self, commit: &str) -> Result<PathBuf, BundleError> {
        if commit.len() < 7 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(self.error(format!("{commit:?} is not a commit id")));
        }
        let dir = self.root.join("trees").join(commit);
        if dir.exists() {
            return Ok(dir);
        }
        self.ensure_repo().await?;
        let object = format!("{commit}^{{commit}}");
        if self.git(&["cat-file", "-e", &object]).await.is_err() {
            self.fetch_head().await?;
            self.git(&["cat-file", "-e", &object]).await.map_err(|_| {
                self.error(format!(
                    "commit {commit}, which another server loaded, is not on the branch here: check that every server has the same dags.source"
                ))
            })?;
        }
        let trees = self.root.join("trees");
        let tmp = trees.join(format!(".unpack-{commit}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .map_err(|e| self.error(format!("cannot create {}: {e}", tmp.display())))?;
        let tar = trees.join(format!(".{commit}-{}.tar", std::process::id()));
        let tar_arg = tar.to_string_lossy().to_string();
        self.git(&["archive", "--format=tar", "-o", &tar_arg, commit])
            .await?;
        let out = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&tmp)
            .output()
            .await
            .map_err(|e| self.error(format!("cannot run tar: {e}")));
        let _ = std::fs::remove_file(&tar);
        let out = out?;
        if !out.status.success() {
            return Err(self.error(format!(
                "cannot unpack commit {commit}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Another loader of this server's folder won the race: its tree is the same.
            Err(_) if dir.exists() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(self.error(format!("cannot create {}: {e}", dir.display()))),
        }
        self.prune(commit);
        Ok(dir)
    }

    /// Removes unpacked trees but the newest few and `keep`.
    fn prune(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(self.root.join("trees")) else {
            return;
        };
        let mut trees: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.file_name() != keep)
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        trees.sort();
        let extra = trees.len().saturating_sub(KEEP_TREES);
        for (_, path) in trees.into_iter().take(extra) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Where the DAG files this server loaded last are (a plain folder, or a bundle's tree): what
/// the UI and API show as a DAG's source.
#[derive(Debug, Clone, Default)]
pub struct CurrentFolder(Arc<RwLock<Option<PathBuf>>>);

impl CurrentFolder {
    pub fn fixed(dir: PathBuf) -> CurrentFolder {
        CurrentFolder(Arc::new(RwLock::new(Some(dir))))
    }

    pub fn get(&self) -> Option<PathBuf> {
        self.0.read().expect("current DAG folder").clone()
    }

    pub fn set(&self, dir: PathBuf) {
        *self.0.write().expect("current DAG folder") = Some(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_a_repository_and_maybe_a_branch() {
        let home = Path::new("/h");
        let b = GitBundle::parse("git+https://example.com/dags.git#main", home).unwrap();
        assert_eq!(
            (b.url.as_str(), b.branch.as_deref()),
            ("https://example.com/dags.git", Some("main"))
        );
        let b = GitBundle::parse("git+file:///srv/dags", home).unwrap();
        assert_eq!((b.url.as_str(), b.branch), ("file:///srv/dags", None));
        for bad in [
            "https://x/y.git",
            "git+",
            "git+-upload-pack=x",
            "git+u#--force",
        ] {
            let e = GitBundle::parse(bad, home).unwrap_err();
            assert_eq!(e.key, "dags.source", "{bad}");
        }
    }
}
