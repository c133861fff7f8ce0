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
