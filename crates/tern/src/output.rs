//! Printing data: aligned tables for people, JSON for scripts.

use serde::Serialize;

use crate::cli::Output;

/// Prints `rows` under `headers` as an aligned table, or `json` as JSON.
pub fn print<T: Serialize>(out: Output, headers: &[&str], rows: Vec<Vec<String>>, json: &T) {
    match out {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(json).expect("serialisable")
        ),
        Output::Table => print_table(headers, &rows),
    }
}

pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

pub fn duration(
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    match (start, end) {
        (Some(s), Some(e)) => format!("{:.3}s", (e - s).num_milliseconds() as f64 / 1000.0),
        _ => "-".into(),
    }
}
