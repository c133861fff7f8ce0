//! `group()`: prefixed ids, nesting, `build =`, group defaults, and `>>`/`<<` with groups
//! standing for their leaves and roots.

use tern_core::TriggerRule;

use crate::{errors_of, one_dag, task};

fn ups(d: &tern_core::DagSpec, id: &str) -> Vec<String> {
    let mut u = task(d, id).upstream.clone();
    u.sort();
    u
}

#[test]
fn groups_prefix_ids_nest_and_link_by_their_roots_and_leaves() {
    let d = one_dag(
        r#"
dag(id = "d", default_args = {"retries": 1, "queue": "main"})
start = empty(id = "start")
g = group("extract", default_args = {"retries": 3}, tooltip = "pull the sources")
a = shell(id = "orders", group = g, cmd = "true")
b = shell(id = "users", group = g, cmd = "true", retries = 5)
inner = group("clean", group = g)
c = empty(id = "dedupe", group = inner)
a >> c
def transform():
    x = empty(id = "x")
    y = empty(id = "y")
    x >> y
t = group("transform", build = transform, default_args = {"trigger_rule": "none_failed"})
done = empty(id = "done")
start >> g
g >> t
t >> done
"#,
    );
    let ids: Vec<&str> = d.tasks.iter().map(|t| t.task_id.as_str()).collect();
    for want in [
        "extract.orders",
        "extract.users",
        "extract.clean.dedupe",
        "transform.x",
        "transform.y",
    ] {
        assert!(ids.contains(&want), "{want} in {ids:?}");
    }
    assert_eq!(task(&d, "extract.orders").group.as_deref(), Some("extract"));
    assert_eq!(
        task(&d, "extract.clean.dedupe").group.as_deref(),
        Some("extract.clean")
    );
    assert_eq!(task(&d, "transform.y").group.as_deref(), Some("transform"));
    assert_eq!(task(&d, "start").group, None);
    // The group's roots follow `start`; its leaves precede transform's roots.
    assert_eq!(ups(&d, "extract.orders"), ["start"]);
    assert_eq!(ups(&d, "extract.users"), ["start"]);
    assert_eq!(ups(&d, "extract.clean.dedupe"), ["extract.orders"]);
    assert_eq!(
        ups(&d, "transform.x"),
        ["extract.clean.dedupe", "extract.users"]
    );
    assert_eq!(ups(&d, "transform.y"), ["transform.x"]);
    assert_eq!(ups(&d, "done"), ["transform.y"]);
    // Task fields over group defaults over the parent group's over the DAG's.
    assert_eq!(task(&d, "extract.orders").retries, 3);
    assert_eq!(task(&d, "extract.users").retries, 5);
    assert_eq!(task(&d, "extract.clean.dedupe").retries, 3);
    assert_eq!(task(&d, "extract.orders").queue, "main");
    assert_eq!(task(&d, "start").retries, 1);
    assert_eq!(
        task(&d, "transform.x").trigger_rule,
        TriggerRule::NoneFailed
    );
    let groups: Vec<&str> = d.groups.iter().map(|g| g.group_id.as_str()).collect();
    assert_eq!(groups, ["extract", "extract.clean", "transform"]);
    assert_eq!(d.groups[0].tooltip.as_deref(), Some("pull the sources"));
}

#[test]
fn a_group_is_accepted_as_an_upstream_and_in_set_downstream() {
    let d = one_dag(
        r#"
dag(id = "d")
g = group("g")
a = empty(id = "a", group = g)
b = empty(id = "b", upstream = [g])
c = empty(id = "c")
g.set_downstream(c)
print(g.group_id, a.task_id)
"#,
    );
    assert_eq!(ups(&d, "b"), ["g.a"]);
    assert_eq!(ups(&d, "c"), ["g.a"]);
}

#[test]
fn group_mistakes_are_import_errors_at_their_line() {
    let cases = [
        (
            "dag(id = \"d\")\ng = group(\"g\")\nempty(id = \"a\") >> g\n",
            "d.star:3: group `g` has no tasks yet: declare its tasks before linking it",
        ),
        (
            "dag(id = \"d\")\ngroup(\"g\")\ngroup(\"g\")\n",
            "d.star:3: group `g`: duplicate group id in dag `d`",
        ),
        (
            "dag(id = \"d\")\nempty(id = \"g\")\ngroup(\"g\")\n",
            "d.star:3: group `g`: `g` is already the id of a task in dag `d`",
        ),
        (
            "dag(id = \"d\")\ng = group(\"g\")\nempty(id = \"x\", group = g)\nempty(id = \"g.x\")\n",
            "d.star:4: task `g.x`: duplicate task id in dag `d`",
        ),
        (
            "dag(id = \"d\")\ngroup(\"bad id\")\n",
            "d.star:2: group `bad id`: invalid id `bad id`",
        ),
        (
            "dag(id = \"d\")\ngroup(\"g\", retries = 2)\n",
            "d.star:2: group `g`: unknown field `retries` for group()",
        ),
        (
            "dag(id = \"d\")\ngroup(\"g\", build = 3)\n",
            "d.star:2: group `g`: `build` must be a function",
        ),
        (
            "dag(id = \"d\")\nempty(id = \"a\", group = \"g\")\n",
            "d.star:2: task `a`: `group` must be a group value returned by group(...), got string",
        ),
    ];
    for (src, want) in cases {
        let errs = errors_of(src);
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "for {src}: want an error starting {want:?}, got {errs:#?}"
        );
    }
}
