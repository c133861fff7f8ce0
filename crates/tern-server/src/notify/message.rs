//! What a notification says: the webhook's JSON body and the mail's subject and plain-text
//! body, both from the facts the store recorded with the event (never a secret) and, when
//! `notifications.base_url` is set, a link to the run.

use serde_json::Value;
use tern_store::notifications::Notification;

/// The link to a run in the web UI under `base_url`.
pub fn run_url(base_url: &str, dag_id: &str, run_id: &str) -> String {
    let seg = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!(
        "{}/dags/{}/runs/{}",
        base_url.trim_end_matches('/'),
        seg(dag_id),
        seg(run_id)
    )
}

/// The webhook body: the recorded facts plus `url` when a base URL is configured.
pub fn json_body(n: &Notification, base_url: Option<&str>) -> Value {
    let mut body = n.payload.clone();
    if let (Some(base), Value::Object(map)) = (base_url, &mut body) {
        map.insert(
            "url".into(),
            Value::String(run_url(base, &n.dag_id, &n.run_id)),
        );
    }
    body
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The mail subject, e.g. `[tern] DAG sales_daily run scheduled__2026-11-20 failed`.
pub fn subject(n: &Notification) -> String {
    let p = &n.payload;
    match n.event.as_str() {
        "dag_run_failed" => format!("[tern] DAG {} run {} failed", n.dag_id, n.run_id),
        "dag_run_succeeded" => format!("[tern] DAG {} run {} succeeded", n.dag_id, n.run_id),
        _ => format!(
            "[tern] DAG {} task {} up for retry (try {} of {}) in run {}",
            n.dag_id,
            text(p, "task_id"),
            p["try_number"],
            p["max_tries"],
            n.run_id
        ),
    }
}

/// The mail body: the same facts as the webhook's, one per line.
pub fn text_body(n: &Notification, base_url: Option<&str>) -> String {
    let p = &n.payload;
    let mut out = format!(
        "DAG:          {}\nRun:          {}\nLogical date: {}\nState:        {}\n",
        n.dag_id,
        n.run_id,
        text(p, "logical_date"),
        text(p, "state")
    );
    if n.event == "task_up_for_retry" {
        out.push_str(&format!(
            "Task:         {}\nTry:          {} of {}\nNext try at:  {}\nReason:       {}\n",
            text(p, "task_id"),
            p["try_number"],
            p["max_tries"],
            text(p, "retry_at"),
            text(p, "note")
        ));
    }
    if let Some(tasks) = p.get("failed_tasks").and_then(Value::as_array) {
        out.push_str("\nFailed tasks:\n");
        if tasks.is_empty() {
            out.push_str("  (none failed itself: see the run)\n");
        }
        for t in tasks {
            out.push_str(&format!(
                "  - {} (try {}): {}\n",
                text(t, "task_id"),
                t["try_number"],
                t.get("note")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason recorded")
            ));
        }
    }
    if let Some(base) = base_url {
        out.push_str(&format!("\n{}\n", run_url(base, &n.dag_id, &n.run_id)));
    }
    out.push_str(&format!(
        "\nSent by tern because DAG {} names this connection in {}.\n",
        n.dag_id, n.hook
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed() -> Notification {
        Notification {
            id: 1,
            dag_id: "sales_daily".into(),
            run_id: "scheduled__2026-11-20T00:00:00+00:00".into(),
            event: "dag_run_failed".into(),
            hook: "on_failure".into(),
            conn: "ops_mail".into(),
            payload: json!({"event": "dag_run_failed", "dag_id": "sales_daily",
                "run_id": "scheduled__2026-11-20T00:00:00+00:00", "state": "failed",
                "logical_date": "2026-11-20T00:00:00Z",
                "failed_tasks": [{"task_id": "load", "try_number": 2, "note": "exit code 1"}]}),
            state: "pending".into(),
            tries: 1,
            next_at: chrono::Utc::now(),
            last_error: None,
            created_at: chrono::Utc::now(),
            ended_at: None,
        }
    }

    #[test]
    fn subject_body_and_link() {
        let n = failed();
        assert_eq!(
            subject(&n),
            "[tern] DAG sales_daily run scheduled__2026-11-20T00:00:00+00:00 failed"
        );
        let body = text_body(&n, Some("https://tern.example.com/"));
        assert!(body.contains("  - load (try 2): exit code 1"), "{body}");
        assert!(
            body.contains(
                "https://tern.example.com/dags/sales_daily/runs/scheduled__2026-11-20T00%3A00%3A00%2B00%3A00"
            ),
            "{body}"
        );
        assert!(json_body(&n, None).get("url").is_none());
        assert!(json_body(&n, Some("http://h")).get("url").is_some());
    }
}
