//! Scale: 1,000 small files and one 10,000-task DAG load completely and correctly. Durations
//! are printed (`--nocapture`), not asserted: timings belong to `bench/` (its `parse` workload).

use std::time::Instant;

use crate::folder;

#[test]
fn a_thousand_small_files() {
    let files: Vec<(String, String)> = (0..1000)
        .map(|i| {
            (
                format!("team_{}/dag_{i:04}.star", i % 10),
                format!(
                    "d = dag(id = \"dag_{i}\", schedule = \"@daily\", default_args = {{\"retries\": 1}})\n\
                     a = shell(id = \"extract\", cmd = \"echo {{{{ ds }}}}\")\n\
                     b = python(id = \"transform\", code = \"print(1)\")\n\
                     c = empty(id = \"done\")\n\
                     a >> b >> c\n"
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = folder(&refs);
    let start = Instant::now();
    let r = tern_dag::load_folder(dir.path());
    let took = start.elapsed();
    eprintln!("1,000 files: {took:?}");
    assert!(r.errors.is_empty());
    assert_eq!(r.dags.len(), 1000);
}

#[test]
fn a_ten_thousand_task_dag() {
    let src = r#"
dag(id = "big")
prev = None
layer = []
for i in range(10000):
    t = shell(id = "t%d" % i, cmd = "echo %d" % i, upstream = ["t%d" % (i - 100)] if i >= 100 else [])
    if prev != None and i % 100 != 0:
        prev >> t
    prev = t
"#;
    let dir = folder(&[("big.star", src)]);
    let start = Instant::now();
    let r = tern_dag::load_folder(dir.path());
    let took = start.elapsed();
    eprintln!("10,000 tasks: {took:?}");
    assert!(r.errors.is_empty(), "{:?}", r.errors.first());
    let d = &r.dags[0];
    assert_eq!(d.tasks.len(), 10_000);
    // Topological: every upstream comes earlier.
    let pos: std::collections::HashMap<&str, usize> = d
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.task_id.as_str(), i))
        .collect();
    for (i, t) in d.tasks.iter().enumerate() {
        for u in &t.upstream {
            assert!(pos[u.as_str()] < i);
        }
    }
}
