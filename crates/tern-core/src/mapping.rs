//! Dynamic task mapping: a task declared with `expand = {...}` (every combination of its lists)
//! or `expand_zip = {...}` (element-wise) becomes one task instance per element set when it is
//! ready to run, each with its own `map_index`, tries, logs and outputs. This module owns what a
//! mapped task declares and the pure expansion: lists in, element sets out (or why not).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest number of instances one mapped task may expand to unless the setting
/// `scheduler.max_map_length` says otherwise (Airflow's `max_map_length`).
pub const DEFAULT_MAX_MAP_LENGTH: usize = 1024;

/// Template names a mapping key cannot take: the run's own variables.
pub const RESERVED_NAMES: &[&str] = &[
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "run_id",
    "run_type",
    "dag_id",
    "task_id",
    "try_number",
    "params",
    "conf",
    "conn",
    "var",
    "outputs",
    "map_index",
];

/// How one instance is named to people: `load` for a task that is not mapped (`map_index`
/// -1), `load[3]` for instance 3 of a mapped one.
pub fn instance_label(task_id: &str, map_index: i64) -> String {
    if map_index >= 0 {
        format!("{task_id}[{map_index}]")
    } else {
        task_id.to_string()
    }
}

/// What a mapped task expands over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expand {
    /// `expand_zip`: the n-th instance takes the n-th element of every list (as many instances
    /// as the shortest list has elements). Otherwise every combination, the first key varying
    /// slowest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zip: bool,
    /// The keys in declared order; each is a template variable of the instances.
    pub keys: Vec<ExpandKey>,
}

/// One key of `expand`: its name and where its list comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpandKey {
    pub name: String,
    pub source: MapSource,
}

/// Where a mapped task's list comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum MapSource {
    /// A list written in the DAG file.
    Values { values: Vec<Value> },
    /// A run parameter (`param("tables")`), read from the run's params.
    Param { name: String },
    /// An upstream task's output (`extract.output("tables")`): a JSON list, or, when that task
    /// is mapped itself, the list of its instances' values.
    Output { task: String, key: String },
}

impl MapSource {
    /// How the source reads in a DAG file, for messages.
    pub fn describe(&self) -> String {
        match self {
            MapSource::Values { .. } => "the list in the DAG file".into(),
            MapSource::Param { name } => format!("param(\"{name}\")"),
            MapSource::Output { task, key } => format!("{task}.output(\"{key}\")"),
        }
    }
}

/// A value as the list a mapping key expands over: a JSON list, or a string holding one (an
/// output written as `key=["a","b"]` by a tool that quotes it).
pub fn as_list(v: &Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(items) => Some(items.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(items)) => Some(items),
            _ => None,
        },
        _ => None,
    }
}

/// The element sets of a mapped task whose keys resolved to `lists` (in the order of
/// `expand.keys`): one object (key → element) per map index. More than `max` sets is an error
/// that says how many there would be, checked before any set is built.
pub fn element_sets(
    expand: &Expand,
    lists: &[Vec<Value>],
    max: usize,
) -> Result<Vec<Map<String, Value>>, String> {
    debug_assert_eq!(expand.keys.len(), lists.len());
    let count: u128 = if expand.zip {
        lists.iter().map(Vec::len).min().unwrap_or(0) as u128
    } else {
        lists.iter().map(|l| l.len() as u128).product()
    };
    if count > max as u128 {
        return Err(format!(
            "expands to {count} instances, more than max_map_length ({max}); raise \
             scheduler.max_map_length or split the list"
        ));
    }
    let count = count as usize;
    let mut sets = Vec::with_capacity(count);
    for i in 0..count {
        let mut set = Map::new();
        // Mixed radix over the lists, the last key varying fastest (itertools.product).
        let mut rest = i;
        let mut picks = vec![0usize; lists.len()];
        for (k, list) in lists.iter().enumerate().rev() {
            picks[k] = if expand.zip { i } else { rest % list.len() };
            if !expand.zip {
                rest /= list.len();
            }
        }
        for (k, key) in expand.keys.iter().enumerate() {
            set.insert(key.name.clone(), lists[k][picks[k]].clone());
        }
        sets.push(set);
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expand(zip: bool, names: &[&str]) -> Expand {
        Expand {
            zip,
            keys: names
                .iter()
                .map(|n| ExpandKey {
                    name: n.to_string(),
                    source: MapSource::Values { values: vec![] },
                })
                .collect(),
        }
    }

    #[test]
    fn a_product_varies_the_last_key_fastest() {
        let sets = element_sets(
            &expand(false, &["a", "b"]),
            &[
                vec![json!(1), json!(2)],
                vec![json!("x"), json!("y"), json!("z")],
            ],
            100,
        )
        .unwrap();
        let got: Vec<Value> = sets.into_iter().map(Value::Object).collect();
        assert_eq!(
            got,
            vec![
                json!({"a": 1, "b": "x"}),
                json!({"a": 1, "b": "y"}),
                json!({"a": 1, "b": "z"}),
                json!({"a": 2, "b": "x"}),
                json!({"a": 2, "b": "y"}),
                json!({"a": 2, "b": "z"}),
            ]
        );
    }

    #[test]
    fn zip_pairs_elements_up_to_the_shortest_list() {
        let sets = element_sets(
            &expand(true, &["a", "b"]),
            &[
                vec![json!(1), json!(2), json!(3)],
                vec![json!("x"), json!("y")],
            ],
            100,
        )
        .unwrap();
        let got: Vec<Value> = sets.into_iter().map(Value::Object).collect();
        assert_eq!(
            got,
            vec![json!({"a": 1, "b": "x"}), json!({"a": 2, "b": "y"})]
        );
    }

    #[test]
    fn an_empty_list_gives_no_instances() {
        assert!(
            element_sets(&expand(false, &["a", "b"]), &[vec![json!(1)], vec![]], 10)
                .unwrap()
                .is_empty()
        );
        assert!(element_sets(&expand(true, &["a"]), &[vec![]], 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn over_the_limit_is_refused_before_anything_is_built() {
        let big = vec![json!(0); 100_000];
        let err = element_sets(
            &expand(false, &["a", "b", "c"]),
            &[big.clone(), big.clone(), big],
            1024,
        )
        .unwrap_err();
        assert!(
            err.contains("1000000000000000 instances") && err.contains("max_map_length (1024)"),
            "{err}"
        );
        assert_eq!(
            element_sets(&expand(false, &["a"]), &[vec![json!(0); 1024]], 1024)
                .unwrap()
                .len(),
            1024
        );
    }

    #[test]
    fn lists_are_json_lists_or_strings_holding_one() {
        assert_eq!(as_list(&json!(["a", 1])), Some(vec![json!("a"), json!(1)]));
        assert_eq!(as_list(&json!("[\"a\"]")), Some(vec![json!("a")]));
        assert_eq!(as_list(&json!("a,b")), None);
        assert_eq!(as_list(&json!({"a": 1})), None);
    }
}
