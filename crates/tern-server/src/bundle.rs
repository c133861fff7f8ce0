//! DAG bundles: the DAG folder taken from elsewhere, at a version, by every server alike.
//! - A branch of a git repository (`dags.source = "git+https://host/repo.git#main"`, or any URL
//!   git reads: `git+file:///srv/dags.git#main`, `git+ssh://…`), through the `git` binary: each
//!   server keeps a bare mirror under `HOME/bundles/repo.git`; the version is the commit.
//! - An object-store prefix (`s3://KEY:SECRET@BUCKET/dags/?endpoint=…`, `azure://…`,
//!   `file:///…`; MWAA's way): the version is a digest of the objects' paths and entity tags.
//!
//! Each version a server loads is unpacked once into `HOME/bundles/trees/<version>` (a fixed
//! tree: a run never sees a file change under it). Which version is loaded is the metadata
//! database's business (`Store::bundle_version`): a fetch that finds a new version records it
//! there, and every server loads the recorded one, so all servers load the same files.

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

/// Where a DAG bundle comes from.
#[derive(Debug, Clone)]
pub enum DagBundle {
    Git(GitBundle),
    Objects(ObjectBundle),
}

impl DagBundle {
    /// `git+URL[#BRANCH]`, or an object-store URI (`s3://`, `azure://`, `file://`); kept under
    /// `home/bundles`.
    pub fn parse(source: &str, home: &Path) -> Result<DagBundle, ConfigError> {
        if source.starts_with("git+") {
            GitBundle::parse(source, home).map(DagBundle::Git)
        } else {
            ObjectBundle::parse(source, home).map(DagBundle::Objects)
        }
    }

    /// The setting as written: the key of its recorded version.
    pub fn source(&self) -> &str {
        match self {
            DagBundle::Git(g) => &g.source,
            DagBundle::Objects(o) => &o.source,
        }
    }

    /// Looks at the source and returns its version now.
    pub async fn fetch_head(&self) -> Result<String, BundleError> {
        match self {
            DagBundle::Git(g) => g.fetch_head().await,
            DagBundle::Objects(o) => o.fetch_head().await,
        }
    }

    /// The folder holding the files of `version`, unpacked if this server has not yet.
    pub async fn tree(&self, version: &str) -> Result<PathBuf, BundleError> {
        match self {
            DagBundle::Git(g) => g.tree(version).await,
            DagBundle::Objects(o) => o.tree(version).await,
        }
    }
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
                "{source:?} is not a DAG bundle: write git+https://host/repo.git#branch (or git+file:///path/repo#branch), or an object-store prefix s3://KEY:SECRET@BUCKET/dags/?endpoint=…"
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
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir").arg(self.repo()).args(args);
        run(
            &mut cmd,
            &format!("git {}", args.first().copied().unwrap_or_default()),
        )
        .await
        .map_err(|m| self.error(m))
    }

    async fn ensure_repo(&self) -> Result<(), BundleError> {
        if self.repo().join("HEAD").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.root)
            .map_err(|e| self.error(format!("cannot create {}: {e}", self.root.display())))?;
        let mut cmd = Command::new("git");
        cmd.args(["init", "--bare", "-q"]).arg(self.repo());
        run(&mut cmd, "git init").await.map_err(|m| self.error(m))?;
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
        let tmp = match stage(&self.root, commit).map_err(|m| self.error(m))? {
            Staged::Ready(dir) => return Ok(dir),
            Staged::Fill(tmp) => tmp,
        };
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
        let tar = tmp.with_extension("tar");
        let tar_arg = tar.to_string_lossy().to_string();
        self.git(&["archive", "--format=tar", "-o", &tar_arg, commit])
            .await?;
        let mut untar = Command::new("tar");
        untar.arg("-xf").arg(&tar).arg("-C").arg(&tmp);
        let unpacked = run(&mut untar, "tar").await;
        let _ = std::fs::remove_file(&tar);
        unpacked.map_err(|m| self.error(format!("cannot unpack commit {commit}: {m}")))?;
        publish(&self.root, &tmp, commit).map_err(|m| self.error(m))
    }
}

/// Runs `cmd` (`what` in errors) to its end; its standard output, trimmed.
async fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {what} (is it installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Where the files of a version go.
enum Staged {
    /// This server unpacked the version already: its tree.
    Ready(PathBuf),
    /// An empty folder to fill, then to [`publish`].
    Fill(PathBuf),
}

/// The tree of `version` under `root/trees` if it is there, else an empty folder beside it to
/// unpack into. A version names a folder, so it must be a hex digest (a commit id, or an
/// object bundle's digest), whatever the database says.
fn stage(root: &Path, version: &str) -> Result<Staged, String> {
    if version.len() < 7 || !version.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{version:?} is not a bundle version"));
    }
    let trees = root.join("trees");
    let dir = trees.join(version);
    if dir.exists() {
        return Ok(Staged::Ready(dir));
    }
    let tmp = trees.join(format!(".unpack-{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    Ok(Staged::Fill(tmp))
}

/// Moves the filled folder `tmp` into place as the tree of `version` and prunes old trees.
fn publish(root: &Path, tmp: &Path, version: &str) -> Result<PathBuf, String> {
    let dir = root.join("trees").join(version);
    match std::fs::rename(tmp, &dir) {
        Ok(()) => {}
        // Another loader of this server's folder won the race: its tree is the same.
        Err(_) if dir.exists() => {
            let _ = std::fs::remove_dir_all(tmp);
        }
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    prune(root, version);
    Ok(dir)
}

/// Removes the unpacked trees under `root/trees` but the newest few and `keep`.
fn prune(root: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(root.join("trees")) else {
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

/// The objects under a prefix of an object store as the DAG folder.
#[derive(Clone)]
pub struct ObjectBundle {
    pub source: String,
    lake: Arc<tern_worker::data::lake::Lake>,
    /// The folder in the store, without slashes at either end (empty: the whole store).
    prefix: String,
    root: PathBuf,
}

impl std::fmt::Debug for ObjectBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBundle")
            .field("store", &self.lake.describe)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Most files an object-store bundle may hold (a prefix pointed at a whole data lake is a
/// mistake, not a DAG folder).
const MAX_BUNDLE_OBJECTS: usize = 10_000;

impl ObjectBundle {
    fn parse(source: &str, home: &Path) -> Result<ObjectBundle, ConfigError> {
        let (lake, prefix) =
            tern_worker::data::lake::Lake::open_uri(source, "dags.source").map_err(|e| {
                ConfigError {
                    key: "dags.source".into(),
                    message: format!(
                        "{} (a DAG bundle is git+https://host/repo.git#branch or an object-store prefix)",
                        e.message
                    ),
                }
            })?;
        Ok(ObjectBundle {
            source: source.to_string(),
            lake: Arc::new(lake),
            prefix,
            root: home.join("bundles"),
        })
    }

    fn error(&self, message: impl Into<String>) -> BundleError {
        BundleError {
            source_name: self.lake.describe.clone() + "/" + &self.prefix,
            message: message.into(),
        }
    }

    /// The objects and the version they make: a digest of their paths and fingerprints.
    async fn listing(&self) -> Result<(Vec<(String, String)>, String), BundleError> {
        let objects = self
            .lake
            .list_under(&self.prefix)
            .await
            .map_err(|e| self.error(e.message))?;
        if objects.len() > MAX_BUNDLE_OBJECTS {
            return Err(self.error(format!(
                "more than {MAX_BUNDLE_OBJECTS} objects under the prefix: point dags.source at the DAG files' folder"
            )));
        }
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        for (path, print) in &objects {
            digest.update(path.as_bytes());
            digest.update([0]);
            digest.update(print.as_bytes());
            digest.update([b'\n']);
        }
        let version = hex::encode(digest.finalize())[..40].to_string();
        Ok((objects, version))
    }

    async fn fetch_head(&self) -> Result<String, BundleError> {
        Ok(self.listing().await?.1)
    }

    /// Downloads the objects into a tree, if they still make `version` (an object store keeps
    /// no old versions: a bucket that changed since is fetched again by the loader).
    async fn tree(&self, version: &str) -> Result<PathBuf, BundleError> {
        let tmp = match stage(&self.root, version).map_err(|m| self.error(m))? {
            Staged::Ready(dir) => return Ok(dir),
            Staged::Fill(tmp) => tmp,
        };
        let (objects, now) = self.listing().await?;
        if now != version {
            return Err(self.error(format!(
                "the objects changed since version {version} was recorded (now {now}): the next fetch records the new one"
            )));
        }
        let at =
            |p: &Path, e: std::io::Error| self.error(format!("cannot write {}: {e}", p.display()));
        for (path, _) in &objects {
            let rel = match &self.prefix {
                p if p.is_empty() => path.as_str(),
                p => path
                    .strip_prefix(p.as_str())
                    .unwrap_or(path)
                    .trim_start_matches('/'),
            };
            if rel.is_empty() || rel.split('/').any(|s| s == ".." || s.is_empty()) {
                continue;
            }
            let bytes = self
                .lake
                .read_whole(path)
                .await
                .map_err(|e| self.error(e.message))?;
            let file = tmp.join(rel);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| at(parent, e))?;
            }
            std::fs::write(&file, bytes).map_err(|e| at(&file, e))?;
        }
        // Changed while downloading: this tree may mix versions.
        if self.listing().await?.1 != version {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(self.error("the objects changed while they were downloaded; the next fetch records the new version"));
        }
        publish(&self.root, &tmp, version).map_err(|m| self.error(m))
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
