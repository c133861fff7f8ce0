//! `schedule =` beyond a cron string: `cron()`, `every()`, `at()` and `any_of()`.

use chrono::{TimeZone, Utc};
use tern_core::Schedule;

use crate::{errors_of, one_dag};

#[test]
fn each_schedule_function_declares_its_kind() {
    let cases = [
        (
            r#"schedule = cron("0 2 * * *", interval = "1d")"#,
            Schedule::CronTrigger {
                cron: "0 2 * * *".into(),
                interval_ms: Some(86_400_000),
            },
        ),
        (
            r#"schedule = cron("@hourly")"#,
            Schedule::CronTrigger {
                cron: "@hourly".into(),
                interval_ms: None,
            },
        ),
        (
            r#"schedule = every("30m"), start_date = "2026-01-01""#,
            Schedule::Every {
                period_ms: 1_800_000,
                data_interval: true,
            },
        ),
        (
            r#"schedule = every(3600, data_interval = False), start_date = "2026-01-01""#,
            Schedule::Every {
                period_ms: 3_600_000,
                data_interval: false,
            },
        ),
        (
            r#"schedule = any_of(cron("0 6 * * 1-5", interval = "1h"), "0 9 * * 0,6")"#,
            Schedule::AnyOf(vec![
                Schedule::CronTrigger {
                    cron: "0 6 * * 1-5".into(),
                    interval_ms: Some(3_600_000),
                },
                Schedule::CronTrigger {
                    cron: "0 9 * * 0,6".into(),
                    interval_ms: None,
                },
            ]),
        ),
        (
            r#"schedule = "0 2 * * *""#,
            Schedule::Cron("0 2 * * *".into()),
        ),
        (r#"schedule = None"#, Schedule::None),
    ];
    for (args, want) in cases {
        let d = one_dag(&format!(
            "dag(id = \"d\", {args})\nshell(id = \"t\", cmd = \"true\")\n"
        ));
        assert_eq!(d.schedule, want, "for {args}");
    }
}

#[test]
fn at_reads_its_times_in_the_dags_time_zone_sorted_and_once_each() {
    let d = one_dag(
        r#"
dag(id = "d", timezone = "Europe/Madrid",
    schedule = at(["2026-07-01T06:00", "2026-03-01T06:00", "2026-03-01 06:00:00", "2026-08-01T00:00:00Z"]))
shell(id = "t", cmd = "true")
"#,
    );
    assert_eq!(
        d.schedule,
        Schedule::At(vec![
            // 06:00 in Madrid: UTC+1 in winter, UTC+2 in summer.
            Utc.with_ymd_and_hms(2026, 3, 1, 5, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 7, 1, 4, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 8, 1, 0, 0, 0).unwrap(),
        ])
    );
}

#[test]
fn bad_schedules_are_import_errors_naming_the_line_and_the_fix() {
    let cases = [
        (
            "dag(id = \"d\", schedule = cron(\"0 2 * *\"))",
            "d.star:1: cron(): invalid schedule \"0 2 * *\": it has 4 fields",
        ),
        (
            "dag(id = \"d\", schedule = cron(\"0 2 * * *\", interval = \"1 fortnight\"))",
            "d.star:1: cron(): `interval`:",
        ),
        (
            "dag(id = \"d\", schedule = every(\"30m\"))",
            "d.star:1: dag `d`: every() counts its periods from `start_date`; set start_date",
        ),
        (
            "dag(id = \"d\", start_date = \"2026-01-01\", schedule = every(\"0s\"))",
            "d.star:1: every(): the period must be at least 1s",
        ),
        (
            "dag(id = \"d\", schedule = at([\"2026-13-01\"]))",
            "d.star:1: at(): invalid date \"2026-13-01\"",
        ),
        (
            "dag(id = \"d\", schedule = at([]))",
            "d.star:1: at(): give at least one datetime",
        ),
        (
            "dag(id = \"d\", schedule = any_of(cron(\"@daily\")))",
            "d.star:1: any_of(): give two or more crons",
        ),
        (
            "dag(id = \"d\", schedule = any_of(cron(\"@daily\"), at([\"2026-01-01\"])))",
            "d.star:1: any_of(): argument 2 must be cron(...) or a cron string",
        ),
        (
            "dag(id = \"d\", schedule = 5)",
            "d.star:1: dag `d`: `schedule` must be a cron string, \"none\", cron(...), every(...), at([...]) or any_of(...), got int",
        ),
    ];
    for (src, want) in cases {
        let errs = errors_of(&format!("{src}\nshell(id = \"t\", cmd = \"true\")\n"));
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "for {src}: want an error starting {want:?}, got {errs:#?}"
        );
    }
}
