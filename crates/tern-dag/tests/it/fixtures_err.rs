//! `tests/fixtures/err`: each `X.star` has an `X.expected` listing, one per line, the exact
//! `file:line: message` errors loading it produces (errors inside files it loads included).
//! Run with `TERN_BLESS=1` to rewrite the `.expected` files after a deliberate message change.

use std::fs;

use crate::{error_lines, fixture};

/// The `.star` files directly in `err/`, sorted (what the folder walk evaluates).
fn err_files() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(fixture("err"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".star"))
        .collect();
    v.sort();
    v
}

fn expected(file: &str) -> Vec<String> {
    let path = fixture("err").join(file.replace(".star", ".expected"));
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (every err fixture needs one)", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Cross-file errors only a folder load can produce.
fn folder_only(line: &str) -> bool {
    line.contains("must be unique in the DAG folder")
}

#[test]
fn every_fixture_reports_exactly_its_expected_errors() {
    let bless = std::env::var_os("TERN_BLESS").is_some();
    let mut failures = Vec::new();
    for file in err_files() {
        let r = tern_dag::load_file(&fixture("err"), &file);
        let got = error_lines(&r);
        if bless {
            let folder = tern_dag::load_folder(&fixture("err"));
            let mut lines = got.clone();
            lines.extend(
                error_lines(&folder)
                    .into_iter()
                    .filter(|l| folder_only(l) && l.starts_with(&format!("{file}:"))),
            );
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            fs::write(
                fixture("err").join(file.replace(".star", ".expected")),
                text,
            )
            .unwrap();
            continue;
        }
        let want: Vec<String> = expected(&file)
            .into_iter()
            .filter(|l| !folder_only(l))
            .collect();
        if got != want {
            failures.push(format!("{file}:\n  want {want:#?}\n  got  {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn folder_load_reports_every_files_errors_in_path_order() {
    let r = tern_dag::load_folder(&fixture("err"));
    let want: Vec<String> = err_files().iter().flat_map(|f| expected(f)).collect();
    assert_eq!(error_lines(&r), want);
}

#[test]
fn good_files_and_dags_still_load_next_to_broken_ones() {
    let r = tern_dag::load_folder(&fixture("err"));
    let loaded: Vec<(&str, &str)> = r
        .dags
        .iter()
        .map(|d| (d.file.as_str(), d.dag_id.as_str()))
        .collect();
    // dup_a.star keeps `shared_id` (first in path order); dup_dag_in_file.star keeps its first
    // `twice`; good.star is unaffected by all the broken files around it.
    assert_eq!(
        loaded,
        [
            ("dup_a.star", "shared_id"),
            ("dup_dag_in_file.star", "twice"),
            ("good.star", "good"),
        ]
    );
    let good = r.dags.iter().find(|d| d.dag_id == "good").unwrap();
    assert_eq!(good.tasks.len(), 2);
    assert_eq!(good.tasks[1].upstream, ["a"]);
}

#[test]
fn the_required_error_kinds_are_covered() {
    let all: Vec<String> = err_files().iter().flat_map(|f| expected(f)).collect();
    let has = |needle: &str| {
        assert!(
            all.iter().any(|l| l.contains(needle)),
            "no expected error contains {needle:?}"
        )
    };
    has("syntax.star:3: Parse error");
    has("Variable `shel` not found, did you mean `shell`?");
    has("has a cycle: a -> b -> c -> a");
    has("duplicate task id");
    has("duplicate dag id `shared_id`: already declared in dup_a.star:1");
    has("unknown upstream task `extarct`");
    has("invalid schedule \"0 2 * *\"");
    has("unknown time zone \"Europe/Madird\"");
    has("invalid duration \"5 minutes\"");
    has("unknown field `retires` for shell(); did you mean `retries`?");
    has("unknown trigger rule `all_sucess`; did you mean `all_success`?");
    has("script `scripts/nope.py` not found");
    has("load(\"../ok/lib.star\"): the path points outside the DAG folder");
}
