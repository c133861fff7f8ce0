//! The fingerprint of a DAG folder: a digest of everything a load of it can read, so a caller
//! that already stored the load of a folder can tell, without evaluating a file, that loading
//! it again would give the same result.
//!
//! Evaluation is hermetic (no clock, no environment, no network): a load depends only on the
//! folder's files (DAG files, `load()`ed helpers, `python(script=...)` scripts, requirements
//! files: any file of the folder may be one of them) and on the evaluator itself. The digest
//! therefore covers every entry under the folder — name, kind and content; a symlink's target
//! and what it points at — and this program's version and build. `.git` folders are left out
//! (a load never reads them), and a file larger than the loader accepts counts by its size
//! alone (the loader refuses it by its size). A folder too large to digest cheaply has no
//! fingerprint: it is simply loaded every time.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::loader::MAX_SOURCE;

/// Beyond this many bytes of content (or [`MAX_ENTRIES`] entries) a folder gets no
/// fingerprint.
const MAX_TOTAL: u64 = 256 << 20;
const MAX_ENTRIES: usize = 100_000;

/// The fingerprint of the DAG folder `dir`: equal fingerprints mean equal loads. `None` when
/// the folder cannot be read whole or is too large to digest (the caller loads it then).
pub fn fingerprint(dir: &Path) -> Option<String> {
    let mut hasher = Sha256::new();
    hasher.update(evaluator_identity().as_bytes());
    let mut budget = Budget {
        bytes: MAX_TOTAL,
        entries: MAX_ENTRIES,
    };
    digest_dir(dir, &mut hasher, &mut budget)?;
    Some(format!("{:x}", hasher.finalize()))
}

struct Budget {
    bytes: u64,
    entries: usize,
}

impl Budget {
    fn take(&mut self, bytes: u64) -> Option<()> {
        self.entries = self.entries.checked_sub(1)?;
        self.bytes = self.bytes.checked_sub(bytes)?;
        Some(())
    }
}

/// Digests the entries of `dir` in name order, folders depth first.
fn digest_dir(dir: &Path, hasher: &mut Sha256, budget: &mut Budget) -> Option<()> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir).ok()?.collect::<Result<_, _>>().ok()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let kind = entry.file_type().ok()?;
        if kind.is_dir() && name == ".git" {
            continue;
        }
        // Name and kind, length-prefixed so no two listings digest alike.
        let name = name.as_encoded_bytes();
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name);
        let path = entry.path();
        if kind.is_dir() {
            budget.take(0)?;
            hasher.update(b"d");
            digest_dir(&path, hasher, budget)?;
            hasher.update(b"D");
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).ok()?;
            let target = target.as_os_str().as_encoded_bytes();
            hasher.update(b"l");
            hasher.update((target.len() as u64).to_le_bytes());
            hasher.update(target);
            // What it points at now (the loader follows file links that stay in the folder).
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => digest_file(&path, m.len(), hasher, budget)?,
                Ok(m) if m.is_dir() => hasher.update(b"d"),
                Ok(_) => hasher.update(b"o"),
                Err(_) => hasher.update(b"x"),
            }
        } else if kind.is_file() {
            let len = entry.metadata().ok()?.len();
            digest_file(&path, len, hasher, budget)?;
        } else {
            hasher.update(b"o");
        }
    }
    Some(())
}

fn digest_file(path: &Path, len: u64, hasher: &mut Sha256, budget: &mut Budget) -> Option<()> {
    if len > MAX_SOURCE as u64 {
        // The loader refuses it by its size alone.
        budget.take(0)?;
        hasher.update(b"F");
        hasher.update(len.to_le_bytes());
        return Some(());
    }
    budget.take(len)?;
    let content = fs::read(path).ok()?;
    hasher.update(b"f");
    hasher.update((content.len() as u64).to_le_bytes());
    hasher.update(&content);
    Some(())
}

/// This evaluator: the program's version, and its executable's size and modification time (a
/// rebuilt binary may load the same files differently).
fn evaluator_identity() -> String {
    let build = std::env::current_exe()
        .and_then(fs::metadata)
        .map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{}:{modified}", m.len())
        })
        .unwrap_or_default();
    format!("tern {} {build}\n", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.star"), "x = 1\n").unwrap();
        fs::create_dir(dir.path().join("lib")).unwrap();
        fs::write(dir.path().join("lib/_h.star"), "y = 2\n").unwrap();
        dir
    }

    #[test]
    fn equal_folders_have_equal_fingerprints() {
        let (a, b) = (folder(), folder());
        assert_eq!(fingerprint(a.path()), fingerprint(b.path()));
        assert!(fingerprint(a.path()).is_some());
    }

    #[test]
    fn any_change_a_load_could_see_changes_the_fingerprint() {
        let base = fingerprint(folder().path()).unwrap();
        type Change = (&'static str, fn(&Path));
        let changes: [Change; 6] = [
            ("content of a helper", |d| {
                fs::write(d.join("lib/_h.star"), "y = 3\n").unwrap()
            }),
            ("a new hidden file", |d| {
                fs::write(d.join(".x"), "").unwrap()
            }),
            ("a removed file", |d| {
                fs::remove_file(d.join("a.star")).unwrap()
            }),
            ("a renamed file", |d| {
                fs::rename(d.join("a.star"), d.join("b.star")).unwrap()
            }),
            ("an empty folder", |d| fs::create_dir(d.join("e")).unwrap()),
            ("a symlink", |d| {
                std::os::unix::fs::symlink("a.star", d.join("c.star")).unwrap()
            }),
        ];
        for (what, change) in changes {
            let dir = folder();
            change(dir.path());
            assert_ne!(fingerprint(dir.path()).unwrap(), base, "{what}");
        }
    }

    #[test]
    fn a_symlink_counts_by_what_it_points_at() {
        let dir = folder();
        std::os::unix::fs::symlink("lib/_h.star", dir.path().join("c.star")).unwrap();
        let before = fingerprint(dir.path()).unwrap();
        fs::write(dir.path().join("lib/_h.star"), "y = 4\n").unwrap();
        let after = fingerprint(dir.path()).unwrap();
        assert_ne!(before, after);
    }

    #[test]
    fn git_internals_do_not_count_and_a_missing_folder_has_none() {
        let dir = folder();
        let before = fingerprint(dir.path()).unwrap();
        fs::create_dir(dir.path().join(".git")).unwrap();
        fs::write(dir.path().join(".git/HEAD"), "ref: x\n").unwrap();
        assert_eq!(fingerprint(dir.path()).unwrap(), before);
        assert_eq!(fingerprint(&dir.path().join("nope")), None);
    }
}
