//! Dynamic task mapping in DAG files: `expand`, `expand_zip`, `param(...)`,
//! `task.output(...)`, and the errors a mapping can have (each at its file:line).

use serde_json::json;
use tern_core::{Expand, ExpandKey, MapSource};

use crate::{errors_of, one_dag, task, ups};

#[test]
fn expand_reads_lists_params_and_outputs_and_links_the_producer() {
    let d = one_dag(
        r#"
dag(id = "d", params = {"countries": ["es", "pl"]})
extract = python(id = "extract", code = "print(1)")
loader = shell(id = "load", cmd = "load {{ table }} {{ country }}",
             expand = {"table": extract.output("tables"), "country": param("countries")})
shell(id = "pairs", cmd = "echo {{ a }}{{ b }}", expand_zip = {"a": [1, 2], "b": ["x", {"y": 1}]})
report = shell(id = "report", cmd = "true")
loader >> report
"#,
    );
    assert_eq!(
        task(&d, "load").expand,
        Some(Expand {
            zip: false,
            keys: vec![
                ExpandKey {
                    name: "table".into(),
                    source: MapSource::Output {
                        task: "extract".into(),
                        key: "tables".into()
                    }
                },
                ExpandKey {
                    name: "country".into(),
                    source: MapSource::Param {
                        name: "countries".into()
                    }
                },
            ]
        })
    );
    assert_eq!(
        ups(&d, "load"),
        vec!["extract"],
        "mapping over an output makes its task upstream"
    );
    let pairs = task(&d, "pairs").expand.clone().unwrap();
    assert!(pairs.zip);
    assert_eq!(
        pairs.keys[1].source,
        MapSource::Values {
            values: vec![json!("x"), json!({"y": 1})]
        }
    );
    assert_eq!(task(&d, "report").expand, None);
}

#[test]
fn mapping_errors_name_the_line_and_say_what_to_do() {
    let errs = errors_of(
        r#"
dag(id = "d", params = {"countries": ["es"]})
a = shell(id = "a", cmd = "true")
shell(id = "both", cmd = "true", expand = {"x": [1]}, expand_zip = {"y": [2]})
shell(id = "nokey", cmd = "true", expand = {})
shell(id = "reserved", cmd = "true", expand = {"ds": [1]})
shell(id = "badname", cmd = "true", expand = {"my-key": [1]})
shell(id = "notlist", cmd = "true", expand = {"x": "abc"})
shell(id = "noparam", cmd = "true", expand = {"x": param("contries")})
empty(id = "e", expand = {"x": [1]})
branch(id = "b", cmd = "true", expand = {"x": [1]})
shell(id = "s", cmd = "true", setup = True, expand = {"x": [1]})
"#,
    );
    let want = [
        ("d.star:4", "not both"),
        ("d.star:5", "needs at least one key"),
        ("d.star:6", "`ds` is already a template variable"),
        ("d.star:7", "letters, digits and `_`"),
        (
            "d.star:8",
            "must be a list, param(\"NAME\") or TASK.output(\"KEY\")",
        ),
        (
            "d.star:9",
            "has no param `contries`; did you mean `countries`?",
        ),
        ("d.star:10", "empty() cannot be mapped"),
        ("d.star:11", "branch() cannot be mapped"),
        ("d.star:12", "a setup or teardown task cannot be mapped"),
    ];
    for (at, what) in want {
        assert!(
            errs.iter().any(|e| e.starts_with(at) && e.contains(what)),
            "expected {at}: …{what}… in {errs:#?}"
        );
    }
}

#[test]
fn an_output_of_another_dag_cannot_be_mapped_over() {
    let errs = errors_of(
        r#"
one = dag(id = "one")
x = shell(id = "x", cmd = "true", dag = one)
two = dag(id = "two")
shell(id = "y", cmd = "true", dag = two, expand = {"v": x.output("list")})
"#,
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("d.star:5") && e.contains("belongs to another DAG")),
        "{errs:#?}"
    );
}

#[test]
fn every_working_kind_can_be_mapped() {
    let d = one_dag(
        r#"
dag(id = "d")
sql(id = "q", conn = "db", sql = "select {{ n }}", expand = {"n": [1, 2]})
http(id = "h", url = "https://example.invalid/{{ page }}", expand = {"page": [1, 2]})
container(id = "c", image = "localhost/x:1", command = ["echo", "{{ n }}"], expand = {"n": [1]})
file_sensor(id = "f", path = "/data/{{ name }}.done", expand = {"name": ["a", "b"]})
python(id = "p", code = "print(1)", args = ["{{ n }}"], expand_zip = {"n": [1, 2]})
"#,
    );
    for id in ["q", "h", "c", "f", "p"] {
        assert!(task(&d, id).expand.is_some(), "{id}");
    }
}
