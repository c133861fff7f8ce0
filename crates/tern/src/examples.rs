//! The example DAGs shipped inside the binary, written into an empty DAG folder by
//! `standalone` so a newcomer sees pipelines run with no set-up.

use std::path::Path;

const FILES: &[(&str, &str)] = &[
    (
        "branching.star",
        include_str!("../../../examples/dags/branching.star"),
    ),
    (
        "grouped_etl.star",
        include_str!("../../../examples/dags/grouped_etl.star"),
    ),
    (
        "mapped_etl.star",
        include_str!("../../../examples/dags/mapped_etl.star"),
    ),
    (
        "hello.star",
        include_str!("../../../examples/dags/hello.star"),
    ),
    (
        "regional_exports.star",
        include_str!("../../../examples/dags/regional_exports.star"),
    ),
    (
        "manual_report.star",
        include_str!("../../../examples/dags/manual_report.star"),
    ),
    (
        "_lib/regions.star",
        include_str!("../../../examples/dags/_lib/regions.star"),
    ),
];

/// Writes the examples into `dir` when it does not exist or is empty. Returns whether it did.
pub fn install_if_empty(dir: &Path) -> std::io::Result<bool> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e),
    };
    if !empty {
        return Ok(false);
    }
    for (name, text) in FILES {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("example paths have a parent"))?;
        std::fs::write(path, text)?;
    }
    Ok(true)
}
