//! DAG files: hermetic evaluation of the Starlark files in a DAG folder into validated
//! [`DagSpec`]s, and the [`ImportError`]s of the files that fail.
//!
//! * [`load_folder`] evaluates every `*.star` file under a folder (sorted by path; names starting
//!   with `.` or `_` are skipped). One bad file never stops the others, and a file's errors
//!   never hide another file's DAGs.
//! * [`load_file`] evaluates one file of the folder.
//!
//! The language is documented in `docs/dag-files.md`. Module map: `builtins` (the `dag`,
//! `shell`, `python`, `empty` functions and the globals), `values` (the Starlark task and DAG
//! values, `>>`/`<<`), `draft` (what one evaluation declares), `loader` (folder walk, `load()`,
//! scripts, error conversion), `validate` (defaults, upstream resolution, topological order,
//! cycles), `fingerprint` (a digest of everything a folder's load depends on, so an unchanged
//! folder need not be evaluated again).

mod builtins;
mod draft;
mod fingerprint;
pub mod highlight;
pub mod isolate;
mod loader;
mod requirements;
mod validate;
mod values;

use std::collections::HashMap;
use std::path::Path;

pub use fingerprint::fingerprint as folder_fingerprint;
use serde::{Deserialize, Serialize};
pub use tern_core::DagSpec;

/// Why a DAG file (or part of it) could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ImportError {
    /// Path of the file the problem is in, relative to the DAG folder (a helper file when the
    /// problem is inside one).
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    pub message: String,
}

/// What a load produced: the valid DAGs (in file order, then declaration order) and the errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    pub dags: Vec<DagSpec>,
    pub errors: Vec<ImportError>,
    /// Every DAG file that was evaluated, relative to the DAG folder, sorted — including files
    /// that failed or declared no DAG.
    #[serde(default)]
    pub files: Vec<String>,
}

/// Options for a load. None yet; kept so options can be added without changing signatures.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {}

/// Loads every `*.star` file under `dir` (recursively, in path order), skipping files and
/// folders whose names start with `.` or `_`. A helper file that declares no DAG yields none.
///
/// A DAG is loaded only when it has no problem; a file whose evaluation fails loads no DAG.
/// A dag id already loaded from an earlier file is an error in the later file.
pub fn load_folder(dir: &Path) -> LoadResult {
    load_folder_with(dir, &LoadOptions::default())
}

/// Stack for the thread that evaluates DAG files: the Starlark parser and compiler recurse on
/// nesting, and a DAG file must never be able to overflow the caller's stack. Only the pages
/// actually used are committed.
const EVAL_STACK: usize = 256 << 20;

/// Runs `f` on a thread with [`EVAL_STACK`] of stack (inline if such a thread cannot start).
fn on_eval_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let f = std::sync::Mutex::new(Some(f));
    let spawned = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("tern-dag-eval".into())
            .stack_size(EVAL_STACK)
            .spawn_scoped(s, || {
                let f = f.lock().ok().and_then(|mut f| f.take());
                f.map(|f| f())
            })
            .map(|h| h.join())
    });
    match spawned {
        Ok(Ok(Some(r))) => r,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // The thread could not start (or did not run `f`): run it here.
        Ok(Ok(None)) | Err(_) => {
            let f = f.into_inner().ok().flatten();
            (f.expect("`f` did not run on the thread"))()
        }
    }
}

/// [`load_folder`] with options. In a child process when the program asked for it
/// ([`isolate::isolate_with`]).
pub fn load_folder_with(dir: &Path, _options: &LoadOptions) -> LoadResult {
    match isolate::evaluator() {
        Some(exe) => isolate::load_folder(exe, dir),
        None => load_folder_in_process(dir),
    }
}

/// [`load_folder`] in this process.
pub(crate) fn load_folder_in_process(dir: &Path) -> LoadResult {
    on_eval_thread(|| load_folder_here(dir))
}

fn load_folder_here(dir: &Path) -> LoadResult {
    let (files, errors) = loader::walk(dir);
    let session = loader::Session::new(dir);
    let per_file = files.iter().map(|f| session.process_file(f)).collect();
    merge(files, per_file, errors)
}

/// The load result of `files` (sorted) from what each declared and its errors, in the same
/// order, after the folder's own `errors`: a dag id already declared by an earlier file is an
/// error of the later one.
pub(crate) fn merge(
    files: Vec<String>,
    per_file: Vec<(Vec<DagSpec>, Vec<ImportError>)>,
    mut errors: Vec<ImportError>,
) -> LoadResult {
    let mut dags: Vec<DagSpec> = Vec::new();
    let mut seen: HashMap<String, (String, u32)> = HashMap::new();
    for (specs, errs) in per_file {
        errors.extend(errs);
        for spec in specs {
            if let Some((first_file, first_line)) = seen.get(&spec.dag_id) {
                errors.push(ImportError {
                    file: spec.file.clone(),
                    line: spec.line,
                    message: format!(
                        "duplicate dag id `{}`: already declared in {first_file}:{first_line}; dag ids must be unique in the DAG folder",
                        spec.dag_id
                    ),
                });
            } else {
                seen.insert(spec.dag_id.clone(), (spec.file.clone(), spec.line));
                dags.push(spec);
            }
        }
    }
    LoadResult {
        dags,
        errors,
        files,
    }
}

/// Loads the one DAG file `rel` (relative to the DAG folder `dir`). `load()` and scripts resolve
/// inside `dir` as with [`load_folder`]. Dag ids are not checked against other files.
pub fn load_file(dir: &Path, rel: &str) -> LoadResult {
    load_file_with(dir, rel, &LoadOptions::default())
}

/// [`load_file`] with options. In a child process when the program asked for it.
pub fn load_file_with(dir: &Path, rel: &str, _options: &LoadOptions) -> LoadResult {
    match isolate::evaluator() {
        Some(exe) => isolate::load_file(exe, dir, rel),
        None => load_file_in_process(dir, rel),
    }
}

/// [`load_file`] in this process.
pub(crate) fn load_file_in_process(dir: &Path, rel: &str) -> LoadResult {
    on_eval_thread(|| load_file_here(dir, rel))
}

fn load_file_here(dir: &Path, rel: &str) -> LoadResult {
    let rel_norm = match loader::resolve_rel("", rel) {
        Ok(r) => r,
        Err(m) => {
            return LoadResult {
                dags: vec![],
                errors: vec![ImportError {
                    file: rel.to_string(),
                    line: 0,
                    message: m,
                }],
                files: vec![],
            }
        }
    };
    let session = loader::Session::new(dir);
    let (dags, errors) = session.process_file(&rel_norm);
    LoadResult {
        dags,
        errors,
        files: vec![rel_norm],
    }
}
