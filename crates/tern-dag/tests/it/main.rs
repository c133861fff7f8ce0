//! Integration tests of `tern-dag`: fixture folders (`tests/fixtures/ok`, `tests/fixtures/err`),
//! language behaviour on small generated folders, and speed.

mod fixtures_err;
mod fixtures_ok;
mod flow;
mod groups;
mod language;
mod limits;
mod mapping;
mod scale;
mod schedules;

use std::path::{Path, PathBuf};

use tern_core::{DagSpec, TaskSpec};

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A temporary DAG folder holding `files` (path, content).
pub fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

/// The errors of a load as `file:line: message` lines.
pub fn error_lines(r: &tern_dag::LoadResult) -> Vec<String> {
    r.errors.iter().map(|e| e.to_string()).collect()
}

/// The only DAG of a single-file folder, failing with the errors otherwise.
pub fn one_dag(src: &str) -> DagSpec {
    let dir = folder(&[("d.star", src)]);
    let r = tern_dag::load_folder(dir.path());
    assert!(
        r.errors.is_empty(),
        "unexpected errors: {:#?}",
        error_lines(&r)
    );
    assert_eq!(r.dags.len(), 1, "expected one DAG");
    r.dags.into_iter().next().unwrap()
}

/// The errors of a single-file folder named `d.star`.
pub fn errors_of(src: &str) -> Vec<String> {
    let dir = folder(&[("d.star", src)]);
    error_lines(&tern_dag::load_folder(dir.path()))
}

pub fn task<'a>(d: &'a DagSpec, id: &str) -> &'a TaskSpec {
    d.task(id)
        .unwrap_or_else(|| panic!("no task {id} in {}", d.dag_id))
}

pub fn ids(d: &DagSpec) -> Vec<&str> {
    d.tasks.iter().map(|t| t.task_id.as_str()).collect()
}

pub fn ups<'a>(d: &'a DagSpec, id: &str) -> Vec<&'a str> {
    task(d, id).upstream.iter().map(String::as_str).collect()
}
