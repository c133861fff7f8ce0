//! Hostile or runaway DAG files end in an import error of that file: no stack overflow, no
//! hang, and the other files still load.

use crate::{error_lines, folder};

fn only_error(src: &str) -> String {
    let dir = folder(&[("a_fine.star", "dag(id = \"fine\")\n"), ("d.star", src)]);
    let r = tern_dag::load_folder(dir.path());
    assert_eq!(r.dags.len(), 1, "the other file still loads");
    let errs = error_lines(&r);
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn unbounded_recursion() {
    let e = only_error("def f(n):\n    return f(n + 1)\nf(0)\n");
    assert_eq!(e, "d.star:2: Starlark call stack overflow");
}

#[test]
fn runaway_loop_hits_the_tick_limit() {
    let e = only_error("for i in range(1000000000):\n    pass\n");
    assert!(e.contains("10000000 ticks"), "{e}");
}

#[test]
fn deep_nesting_and_long_chains_are_refused_before_parsing() {
    let deep = format!("x = {}1{}\n", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(
        only_error(&deep),
        "d.star:1: brackets nested deeper than 100 levels; split the expression"
    );
    for src in [
        format!("x = {}1\n", "1 + ".repeat(100_000)),
        format!("x = {}True\n", "not ".repeat(100_000)),
        format!("x = {}1\n", "lambda: ".repeat(100_000)),
        format!("x = [1]{}\n", "[0]".repeat(100_000)),
        format!("s = 1\nx = s{}\n", ".a".repeat(100_000)),
    ] {
        assert_eq!(
            only_error(&src)
                .split_once(": ")
                .map(|(_, m)| m.to_string())
                .unwrap(),
            "expression too long: more than 5000 chained operations; build it in a loop instead"
        );
    }
}

#[test]
fn the_shape_check_ignores_strings_and_comments() {
    let src = format!(
        "# {}\nx = \"{}\"\ny = '''\n{}\n'''\ndag(id = \"d\", description = \"a + b\")\n",
        "(".repeat(500),
        "[".repeat(500),
        "not + ".repeat(5000)
    );
    let dir = folder(&[("d.star", src.as_str())]);
    let r = tern_dag::load_folder(dir.path());
    assert!(r.errors.is_empty(), "{:?}", error_lines(&r));
}

#[test]
fn a_fifo_is_refused_without_blocking_the_load() {
    let dir = folder(&[
        ("a_fine.star", "dag(id = \"fine\")\n"),
        (
            "d.star",
            "load(\"_lib/pipe.star\", \"x\")\ndag(id = \"d\")\n",
        ),
    ]);
    std::fs::create_dir_all(dir.path().join("_lib")).unwrap();
    let pipe = dir.path().join("_lib/pipe.star");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success());
    // Also a FIFO named like a DAG file at the top.
    std::process::Command::new("mkfifo")
        .arg(dir.path().join("top.star"))
        .status()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(tern_dag::load_folder(&path));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the load must not block on a FIFO");
    assert_eq!(r.dags.len(), 1, "{:?}", r.errors);
    let errs = error_lines(&r);
    assert!(
        errs.iter()
            .any(|e| e.starts_with("d.star:1:") && e.contains("not a regular file")),
        "{errs:?}"
    );
}

#[test]
fn a_huge_sparse_file_is_refused_before_it_is_read() {
    let dir = folder(&[("a_fine.star", "dag(id = \"fine\")\n")]);
    let f = std::fs::File::create(dir.path().join("d.star")).unwrap();
    f.set_len(2 << 30).unwrap(); // 2 GiB, sparse
    let r = tern_dag::load_folder(dir.path());
    assert_eq!(r.dags.len(), 1);
    let errs = error_lines(&r);
    assert_eq!(
        errs,
        vec!["d.star:0: cannot read: the file is larger than 10 MiB"]
    );
}

#[test]
fn params_nested_too_deep_are_an_import_error() {
    let e = only_error(
        "p = 1\nfor i in range(200):\n    p = [p]\ndag(id = \"d\", params = {\"deep\": p})\n",
    );
    assert!(e.contains("nested deeper than 32 levels"), "{e}");
    // A list shared many times is bounded too (it would be 2^40 values once written out).
    let e = only_error(
        "p = [0]\nfor i in range(30):\n    p = [p, p]\ndag(id = \"d\", params = {\"wide\": p})\n",
    );
    assert!(e.contains("nested deeper than 32 levels"), "{e}");
}

#[test]
fn param_rules_are_checked_when_the_file_loads() {
    let e =
        only_error("dag(id = \"d\", params = {\"c\": {\"default\": \"x\", \"pattern\": \"(\"}})\n");
    assert!(e.contains("not a valid regular expression"), "{e}");
    let e = only_error(
        "dag(id = \"d\", params = {\"c\": {\"default\": \"toolong\", \"max_length\": 3}})\n",
    );
    assert!(e.contains("the default breaks its own rules"), "{e}");
    let e =
        only_error("dag(id = \"d\", params = {\"c\": {\"default\": \"eu\", \"enum\": \"eu\"}})\n");
    assert!(e.contains("`enum` must be a non-empty list"), "{e}");
    let dir = crate::folder(&[(
        "d.star",
        "dag(id = \"d\", params = {\"r\": {\"default\": \"eu\", \"enum\": [\"eu\", \"us\"], \"pattern\": \"[a-z]+\", \"maxLength\": 2}})\n",
    )]);
    let r = tern_dag::load_folder(dir.path());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let rules = &r.dags[0].params["r"].rules;
    assert_eq!(rules.max_length, Some(2));
    assert_eq!(rules.r#enum.as_ref().unwrap().len(), 2);
}
