//! Schedules beyond one cron, through the binary: `at()`, `cron(..., interval =)` and
//! `any_of()` make their runs with the logical dates and data intervals Airflow's timetables
//! give, and `tern dags next` prints the same runs locally, through `--server`, and on the DAG
//! page.

use chrono::{Duration, Timelike, Utc};
use serde_json::Value;

use crate::api::token_for;
use crate::harness::{exchange, Tern, DEADLINE};
use crate::links::server_on;
use crate::web::{json_call, login, remote};

fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The runs of `dag` once there are `n` of them, oldest first.
fn runs_of(t: &Tern, dag: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let runs = t.json(&["runs", "list", "--dag", dag]);
        let mut runs = runs.as_array().unwrap().clone();
        if runs.len() >= n {
            runs.sort_by_key(|r| r["logical_date"].as_str().unwrap().to_string());
            return runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{dag}: want {n} runs, have {runs:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn at_cron_trigger_and_any_of_make_their_runs_and_dags_next_shows_what_comes() {
    let t = Tern::new();
    let now = Utc::now();
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let (two_days_ago, yesterday) = (midnight - Duration::days(2), midnight - Duration::days(1));
    let future = midnight + Duration::days(30);
    t.write_dag(
        "events.star",
        &format!(
            "dag(id = \"events\", catchup = True, schedule = at([\"{}\", \"{}\", \"{}\"]))\nshell(id = \"w\", cmd = \"echo {{{{ ds }}}}\")\n",
            iso(future),
            iso(yesterday),
            iso(two_days_ago)
        ),
    );
    let start = (midnight - Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    t.write_dag(
        "trig.star",
        &format!(
            "dag(id = \"trig\", catchup = True, start_date = \"{start}\", max_active_runs = 4,\n    schedule = cron(\"0 0 * * *\", interval = \"1d\"))\nshell(id = \"w\", cmd = \"echo from {{{{ data_interval_start }}}} to {{{{ data_interval_end }}}}\")\n"
        ),
    );
    t.write_dag(
        "twice.star",
        "dag(id = \"twice\", timezone = \"Europe/Madrid\", schedule = any_of(\"0 6 * * *\", cron(\"0 18 * * *\", interval = \"12h\")))\nshell(id = \"w\", cmd = \"true\")\n",
    );
    let (_sa, url) = server_on(&t, 0);

    // at(): one run per past time (catchup), at that time, with an empty data interval.
    let events = runs_of(&t, "events", 2);
    let dates: Vec<&str> = events
        .iter()
        .map(|r| r["logical_date"].as_str().unwrap())
        .collect();
    assert_eq!(
        events.len(),
        2,
        "the future time has no run yet: {events:#?}"
    );
    for (r, want) in events.iter().zip([two_days_ago, yesterday]) {
        assert_eq!(
            r["run_id"],
            format!("scheduled__{}", iso(want)),
            "{dates:?}"
        );
        assert_eq!(r["data_interval_start"], r["data_interval_end"], "{r:#}");
    }

    // cron(..., interval = "1d"): a run at each midnight since start_date, today's included,
    // its data interval the day before the tick.
    let trig = runs_of(&t, "trig", 3);
    let last = trig.last().unwrap();
    assert_eq!(
        last["run_id"],
        format!("scheduled__{}", iso(midnight)),
        "{trig:#?}"
    );
    let done = t.wait_run(
        "trig",
        last["run_id"].as_str().unwrap(),
        "the end of today's run",
        crate::harness::finished,
    );
    assert_eq!(crate::harness::run_state(&done), "success", "{done:#}");
    let log = t.log("trig", last["run_id"].as_str().unwrap(), "w", None);
    assert!(
        log.contains(&format!("from {} to {}", iso(yesterday), iso(midnight)))
            || log.contains(&format!(
                "from {} to {}",
                (midnight - Duration::days(1)).format("%Y-%m-%dT%H:%M:%S%:z"),
                midnight.format("%Y-%m-%dT%H:%M:%S%:z")
            )),
        "{log}"
    );

    // dags next: the at() list's last time; any_of's 06:00 and 18:00 Madrid alternating, the
    // 18:00 ones with their 12 h interval.
    let next = t.json(&["dags", "next", "events"]);
    assert_eq!(next["runs"].as_array().unwrap().len(), 1, "{next:#}");
    assert_eq!(next["runs"][0]["logical_date"], iso(future));
    let next = t.json(&["dags", "next", "twice", "-n", "4"]);
    let runs = next["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{next:#}");
    let madrid: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
    let mut hours = Vec::new();
    for r in runs {
        let at: chrono::DateTime<Utc> = r["logical_date"].as_str().unwrap().parse().unwrap();
        let start: chrono::DateTime<Utc> = r["data_interval"]["start"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let h = at.with_timezone(&madrid).hour();
        hours.push(h);
        let want = if h == 18 {
            Duration::hours(12)
        } else {
            Duration::zero()
        };
        assert_eq!(at - start, want, "{r:#}");
    }
    assert!(
        hours == [6, 18, 6, 18] || hours == [18, 6, 18, 6],
        "{hours:?}"
    );

    // The same command through the API prints the same thing.
    let token = token_for(&t, "ci", "viewer");
    let local = t.ok(&["dags", "next", "twice", "-n", "4"]);
    let out = remote(&url, &token, &["dags", "next", "twice", "-n", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), local);
    assert!(
        local.contains("+01:00") || local.contains("+02:00"),
        "{local}"
    );
    let (status, v) = json_call(&url, "GET", "/api/v1/dags/twice/next?n=0", &token, "");
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], "bad_request");
    let (status, v) = json_call(&url, "GET", "/api/v1/dags/twice/next?n=many", &token, "");
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("n"), "{v}");
    assert!(!v["hint"].as_str().unwrap().is_empty(), "{v}");

    // dags show and the DAG page show the next run.
    let show = t.ok(&["dags", "show", "events"]);
    assert!(
        show.contains(&format!(
            "next run   {}",
            future.format("%Y-%m-%d %H:%M:%S")
        )),
        "{show}"
    );
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let (cookie, _) = login(&url, "admin", password.trim()).unwrap();
    let (status, _, html) = exchange(
        &url,
        "GET",
        "/dags/twice?tab=schedule",
        &[("Cookie", &cookie)],
        "",
        "",
    );
    assert_eq!(status, 200, "{html}");
    let first = runs[0]["logical_date"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<Utc>>()
        .unwrap();
    let shown = first
        .with_timezone(&madrid)
        .format("%Y-%m-%d %H:%M %:z")
        .to_string();
    assert!(
        html.contains(&format!("<span id=\"next-run\">{shown}</span>")),
        "{html}"
    );
    assert_eq!(
        html.matches("<tr><td>").count(),
        10,
        "ten next runs: {html}"
    );
}
