//! The views an on-call engineer and a DAG author reach for, in a real headless Chromium
//! (helpers from [`crate::browser`]): the trigger form's run id, logical date and raw-JSON
//! conf; a run's params and conf on its page; a big run's task list by state and a page at a
//! time; searching and downloading a try's log; and the Browse page across DAGs. Screenshots
//! under `target/tmp/browser/`.

use serde_json::{json, Value};

use crate::agents::server_url;
use crate::browser::{browser, click, log_in, shot, text_of, type_into, until, until_at};
use crate::harness::Tern;

/// Runs `script` in the page and returns what it returns.
async fn eval(c: &fantoccini::Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_options_run_params_big_run_pages_log_search_and_browse_in_the_browser() {
    let t = Tern::new();
    t.write_dag(
        "views.star",
        r#"dag(id = "views", params = {"n": {"default": 2, "type": "integer"}})
say = shell(id = "say", cmd = "echo alpha 1; echo beta {{ params.n }}; echo alpha 3; echo mode {{ conf.mode }}")
boom = shell(id = "boom", cmd = "echo going down; exit 3")
for i in range(150):
    say >> empty(id = "e%d" % (1000 + i))
"#,
    );
    t.write_dag(
        "calm.star",
        r#"dag(id = "calm")
shell(id = "fine", cmd = "true")
"#,
    );
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let calm = t.trigger("calm", None);
    t.wait_run("calm", &calm, "the calm run", crate::harness::finished);
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;
    log_in(&c, &url, password.trim(), "/dags/views/trigger").await;

    // The advanced part of the form: conf that is not a JSON object is refused at its field,
    // and nothing is triggered.
    click(&c, "#trigger-advanced summary").await;
    type_into(&c, "#p_n", "7").await;
    type_into(&c, "#run_id", "my-run").await;
    type_into(&c, "#conf", "[1, 2]").await;
    click(&c, "#trigger-submit").await;
    let err = text_of(&c, "#err_conf").await;
    assert!(err.contains("JSON object"), "{err}");
    assert!(
        t.json(&["runs", "list", "--dag", "views"])
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "a refused form triggers nothing"
    );
    // The advanced part stays open with what was typed.
    let kept = eval(
        &c,
        "return [document.getElementById('trigger-advanced').open, document.getElementById('run_id').value];",
    )
    .await;
    assert_eq!(kept, json!([true, "my-run"]));
    shot(&c, "44-trigger-conf-refused").await;

    // A param given in the JSON wins over its field; other keys are the run's conf; the run
    // id and the logical date (UTC) are the ones typed.
    type_into(&c, "#conf", r#"{"params": {"n": 9}, "mode": "full"}"#).await;
    c.execute(
        "document.getElementById('logical_date').value = '2026-03-04T05:06:07';",
        vec![],
    )
    .await
    .unwrap();
    click(&c, "#trigger-submit").await;
    until_at(&c, "the new run's page", |p| p == "/dags/views/runs/my-run").await;
    let run = t.json(&["runs", "show", "views", "my-run"]);
    let run = &run["run"];
    assert_eq!(run["params"], json!({"n": 9}), "{run:#}");
    assert_eq!(run["conf"]["mode"], "full", "{run:#}");
    assert!(
        run["logical_date"]
            .as_str()
            .is_some_and(|d| d.starts_with("2026-03-04T05:06:07")),
        "{run:#}"
    );
    let params = text_of(&c, "#run-params").await;
    assert!(params.contains('n') && params.contains('9'), "{params}");
    assert!(crate::browser::shown(&c, "#run-conf").await);

    // The run ends (boom fails); its page counts tasks by state and lists 100 at a time.
    until(&c, "the run to end", |html| {
        html.contains("id=\"run-state-text\">failed<")
    })
    .await;
    until(&c, "the counts to settle", |html| {
        html.contains("data-count-state=\"success\"") && !html.contains("data-count-state=\"none\"")
    })
    .await;
    let all = text_of(&c, "#count-all").await;
    assert_eq!(all, "all 152");
    let rows = eval(
        &c,
        "return document.querySelectorAll('#tasks tbody tr').length;",
    )
    .await;
    assert_eq!(rows, json!(100), "the first page of 152 tasks");
    assert_eq!(text_of(&c, "#shown-range").await, "1–100 of 152");
    click(&c, "#tasks-next").await;
    until(&c, "the second page", |html| {
        html.contains("101–152 of 152")
    })
    .await;
    let rows = eval(
        &c,
        "return document.querySelectorAll('#tasks tbody tr').length;",
    )
    .await;
    assert_eq!(rows, json!(52));
    // The failed chip lists just the failed task, and the Gantt draws just it.
    click(&c, "a[data-count-state=failed]").await;
    until(&c, "the failed filter", |html| html.contains("1–1 of 1")).await;
    let listed = eval(
        &c,
        "return [...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.task);",
    )
    .await;
    assert_eq!(listed, json!(["boom"]));
    let bars = eval(
        &c,
        "return document.querySelectorAll('#run-tasks .gantt-wrap svg rect').length;",
    )
    .await;
    assert_eq!(bars, json!(1), "one bar for the one task listed");
    let chip_on = eval(
        &c,
        "const a = document.querySelector('a[data-count-state=failed]'); return [a.classList.contains('on'), getComputedStyle(a).fontWeight];",
    )
    .await;
    assert_eq!(chip_on[0], true);
    assert_eq!(chip_on[1], "600", "the chosen state stands out");
    // Finding by a part of the task id.
    c.goto(&format!("{url}/dags/views/runs/my-run"))
        .await
        .unwrap();
    type_into(&c, "#task-search", "e111").await;
    click(&c, "#task-filter button").await;
    until(&c, "the search result", |html| html.contains("1–10 of 10")).await;
    shot(&c, "45-run-page-filtered").await;

    // A try's log: searching shows only the matching lines; Download gives the whole file.
    c.goto(&format!("{url}/dags/views/runs/my-run/tasks/say"))
        .await
        .unwrap();
    // (The rendered command shows "alpha 3" too: wait for the log's own last line.)
    until(&c, "the log", |html| html.contains("mode full\n")).await;
    let full = text_of(&c, "#log-text").await;
    assert!(
        full.contains("beta 9") && full.contains("mode full"),
        "{full}"
    );
    type_into(&c, "#log-search", "ALPHA").await;
    let shown_log = text_of(&c, "#log-text").await;
    let lines: Vec<&str> = shown_log.lines().collect();
    // The two lines the task printed, and the header line quoting its command.
    assert_eq!(lines.len(), 3, "{shown_log}");
    assert!(lines.iter().all(|l| l.contains("alpha")), "{shown_log}");
    let count = text_of(&c, "#log-matches").await;
    assert!(count.starts_with("3 of "), "{count}");
    shot(&c, "46-log-search").await;
    let download = eval(
        &c,
        "const a = document.getElementById('log-download'); \
         return fetch(a.href, {credentials: 'same-origin'}).then(async r => [r.status, r.headers.get('content-disposition') || '', await r.text(), a.hasAttribute('download')]);",
    )
    .await;
    assert_eq!(download[0], 200, "{download:?}");
    assert!(
        download[1].as_str().unwrap().contains("attachment"),
        "{download:?}"
    );
    let text = download[2].as_str().unwrap();
    assert!(
        text.contains("alpha 1") && text.contains("beta 9"),
        "{text}"
    );
    assert_eq!(download[3], true);

    // Browse: with no filter, the failed task instances of every DAG, newest first.
    click(&c, "#nav-browse").await;
    until_at(&c, "the browse page", |p| p == "/browse").await;
    let failed = eval(
        &c,
        "return [...document.querySelectorAll('#browse-tasks tbody tr')].map(r => [r.dataset.state, r.cells[0].innerText, r.cells[1].innerText, r.cells[2].innerText]);",
    )
    .await;
    assert_eq!(failed, json!([["failed", "views", "my-run", "boom"]]));
    shot(&c, "47-browse-failing").await;
    // Any state of one DAG; then runs across DAGs.
    c.goto(&format!("{url}/browse?what=tasks&state=success&dag=calm"))
        .await
        .unwrap();
    let calm_rows = eval(
        &c,
        "return [...document.querySelectorAll('#browse-tasks tbody tr')].map(r => r.cells[2].innerText);",
    )
    .await;
    assert_eq!(calm_rows, json!(["fine"]));
    click(&c, "#tab-runs").await;
    until_at(&c, "the runs tab", |p| p == "/browse").await;
    let select_any = "document.getElementById('f-state').value = 'any'; document.getElementById('browse-filters').submit();";
    c.execute(select_any, vec![]).await.unwrap();
    until(&c, "every run", |html| {
        html.contains("id=\"browse-runs\"") && html.contains(&calm)
    })
    .await;
    let runs = eval(
        &c,
        "return [...document.querySelectorAll('#browse-runs tbody tr')].map(r => [r.cells[0].innerText, r.dataset.state]);",
    )
    .await;
    assert_eq!(
        runs,
        json!([["calm", "success"], ["views", "failed"]]),
        "newest logical date first: my-run's was set in March"
    );
    shot(&c, "48-browse-runs").await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_landing_times_calendar_run_bars_and_cluster_activity_in_the_browser() {
    let t = Tern::new();
    t.write_dag(
        "hist.star",
        r#"dag(id = "hist", params = {"pause": {"default": 0.1, "type": "number"}, "code": {"default": 0, "type": "integer"}})
quick = shell(id = "quick", cmd = "true")
slow = shell(id = "slow", cmd = "sleep {{ params.pause }}; exit {{ params.code }}")
quick >> slow
"#,
    );
    t.write_dag(
        "far.star",
        r#"dag(id = "far")
shell(id = "remote", cmd = "true", queue = "site-x")
"#,
    );
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let token = crate::api::token_for(&t, "author", "user");
    for (run, day, pause, code) in [
        ("r1", "2026-12-01", 0.1, 0),
        ("r2", "2026-12-02", 1.2, 0),
        ("r3", "2026-12-03", 0.1, 1),
    ] {
        let body = json!({"dag_run_id": run, "logical_date": format!("{day}T06:00:00Z"),
                          "conf": {"params": {"pause": pause, "code": code}}});
        let (status, v) = crate::api::call(
            &url,
            "POST",
            "/api/v1/dags/hist/dagRuns",
            Some(&token),
            &body.to_string(),
        );
        assert_eq!(status, 201, "{v}");
        t.wait_run("hist", run, "a history run", crate::harness::finished);
    }
    t.trigger("far", None);
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;
    log_in(&c, &url, password.trim(), "/dags/hist").await;

    // Above the grid, each run's bar is as tall as it took: r2 (1.2 s) is the tallest.
    let heights = eval(
        &c,
        "return Object.fromEntries([...document.querySelectorAll('#grid thead a.run')].map(a => [a.closest('th').dataset.r, a.getBoundingClientRect().height]));",
    )
    .await;
    let h = |r: &str| heights[r].as_f64().unwrap();
    assert!(h("r2") > h("r1") && h("r2") > h("r3"), "{heights}");
    assert_eq!(h("r2"), 41.0, "the longest run fills the bar: {heights}");
    shot(&c, "49-grid-run-bars").await;

    // Durations: a bar per run; a line per task, slowest first in the legend; the spread table.
    c.goto(&format!("{url}/dags/hist?tab=durations"))
        .await
        .unwrap();
    let bars = eval(
        &c,
        "return document.querySelectorAll('#run-durations rect.bar').length;",
    )
    .await;
    assert_eq!(bars, json!(3));
    let failed_bar = eval(
        &c,
        "return [...document.querySelectorAll('#run-durations rect.bar')].map(r => getComputedStyle(r).fill);",
    )
    .await;
    let fills = failed_bar.as_array().unwrap();
    assert_ne!(
        fills[2], fills[0],
        "the failed run's bar is coloured apart: {fills:?}"
    );
    let legend = eval(
        &c,
        "return [...document.querySelectorAll('#lines-legend a')].map(a => a.innerText.trim());",
    )
    .await;
    assert_eq!(legend, json!(["slow", "quick"]));
    let lines = eval(
        &c,
        "return document.querySelectorAll('#task-lines g.series').length;",
    )
    .await;
    assert_eq!(lines, json!(2));
    let points = eval(
        &c,
        "return document.querySelectorAll('#task-lines g.series[data-task=slow] circle').length;",
    )
    .await;
    assert_eq!(points, json!(3));
    let spread = eval(
        &c,
        "return [...document.querySelectorAll('#task-spread tbody tr')].map(r => r.dataset.task);",
    )
    .await;
    assert_eq!(spread, json!(["slow", "quick"]));
    shot(&c, "50-durations").await;
    click(&c, "#lines-legend a").await;
    until(&c, "the task's durations", |html| {
        html.contains("id=\"landing-times\"")
    })
    .await;
    let rows = eval(
        &c,
        "return [...document.querySelectorAll('#task-runs tbody tr')].map(r => [r.cells[0].innerText, r.cells[2].innerText !== '', r.cells[3].innerText !== '']);",
    )
    .await;
    assert_eq!(
        rows,
        json!([["r3", true, true], ["r2", true, true], ["r1", true, true]]),
        "newest first, each with a duration and a landing time"
    );
    let bars = eval(
        &c,
        "return document.querySelectorAll('#task-durations rect.bar').length;",
    )
    .await;
    assert_eq!(bars, json!(3));
    shot(&c, "51-task-durations").await;

    // The calendar: a square per day of the year, the runs' days coloured by their state,
    // linking to those runs.
    c.goto(&format!("{url}/dags/hist?tab=calendar"))
        .await
        .unwrap();
    let days = eval(
        &c,
        "const d = (x) => { const r = document.querySelector('#calendar rect[data-date=\"' + x + '\"]'); return r ? [r.getAttribute('class'), getComputedStyle(r).fill, r.closest('a') ? r.closest('a').getAttribute('href') : null] : null; }; \
         return [d('2026-12-01'), d('2026-12-03'), d('2026-11-20'), document.querySelectorAll('#calendar rect.day').length];",
    )
    .await;
    assert_eq!(days[0][0], "day s-success", "{days}");
    assert_eq!(days[1][0], "day s-failed", "{days}");
    assert_eq!(days[2][0], "day s-none", "{days}");
    assert_ne!(days[0][1], days[1][1], "{days}");
    assert_ne!(days[0][1], days[2][1], "{days}");
    assert_eq!(days[3], 365, "{days}");
    let href = days[1][2].as_str().unwrap().to_string();
    assert!(href.contains("since=2026-12-03&until=2026-12-03"), "{href}");
    shot(&c, "52-calendar").await;
    c.goto(&format!("{url}{href}")).await.unwrap();
    let runs = eval(
        &c,
        "return [...document.querySelectorAll('#browse-runs tbody tr')].map(r => r.cells[1].innerText);",
    )
    .await;
    assert_eq!(runs, json!(["r3"]));

    // The Code tab: numbered lines, tern's builtins, strings and numbers each in their colour.
    c.goto(&format!("{url}/dags/hist?tab=code")).await.unwrap();
    let code = eval(
        &c,
        "const colour = (sel) => { const e = document.querySelector(sel); return e ? getComputedStyle(e).color : null; }; \
         const line = document.querySelector('#source .line'); \
         return [document.querySelectorAll('#source .line').length, colour('#source .b'), colour('#source .s'), colour('#source .n'), getComputedStyle(document.getElementById('source')).color, \
                 document.querySelector('#source .b').textContent, getComputedStyle(line, '::before').content];",
    )
    .await;
    assert_eq!(code[0], 4, "one line per line of the file: {code}");
    assert_eq!(code[5], "dag", "{code}");
    assert_eq!(code[6], "counter(line)", "{code}");
    let plain = &code[4];
    for (i, what) in [(1, "builtin"), (2, "string"), (3, "number")] {
        assert!(code[i].is_string(), "no {what}: {code}");
        assert_ne!(&code[i], plain, "a {what} in the text's colour: {code}");
    }
    assert_ne!(code[1], code[2], "{code}");
    shot(&c, "55-code").await;

    // Cluster activity: far's task waits on site-x, which no agent serves.
    click(&c, "#nav-activity").await;
    until_at(&c, "the activity page", |p| p == "/activity").await;
    let row = eval(
        &c,
        "const r = document.querySelector('#queues tr[data-queue=\"site-x\"]'); return r ? [...r.cells].map(c => c.innerText) : null;",
    )
    .await;
    assert_eq!(row[1], "0", "{row}");
    assert_eq!(row[2], "1", "one queued: {row}");
    assert_eq!(row[6], "0", "no agent serves site-x: {row}");
    assert_eq!(text_of(&c, "#tile-queued b").await, "1");
    let pass = text_of(&c, "#tile-scheduler b").await;
    assert_ne!(pass, "–", "the scheduler's last pass is shown");
    shot(&c, "53-activity").await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_show_their_zone_and_follow_the_users_choice_of_utc_or_local() {
    let t = Tern::new();
    t.write_dag(
        "z.star",
        "dag(id = \"zoned\")\nshell(id = \"a\", cmd = \"true\")\n",
    );
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let token = crate::api::token_for(&t, "author", "user");
    let (status, v) = crate::api::call(
        &url,
        "POST",
        "/api/v1/dags/zoned/dagRuns",
        Some(&token),
        r#"{"dag_run_id": "z1", "logical_date": "2026-07-01T22:45:10Z"}"#,
    );
    assert_eq!(status, 201, "{v}");
    t.wait_run("zoned", "z1", "the run", crate::harness::finished);
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let profile = tempfile::tempdir().unwrap();
    // India: +05:30 all year, so the date and the minutes change too.
    let (_driver, c) = crate::browser::browser_in_zone(profile.path(), "Asia/Kolkata").await;
    log_in(&c, &url, password.trim(), "/dags/zoned").await;
    c.goto(&format!("{url}/dags/zoned?tab=runs")).await.unwrap();
    let logical = "#runs tbody tr td:nth-child(4) time";
    assert_eq!(
        text_of(&c, logical).await,
        "2026-07-01 22:45:10 UTC",
        "UTC by default"
    );
    c.execute(
        "const s = document.getElementById('tz-pref'); s.value = 'local'; s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(text_of(&c, logical).await, "2026-07-02 04:15:10 +05:30");
    let label = eval(
        &c,
        "return document.querySelector('#tz-pref option[value=local]').textContent;",
    )
    .await;
    // (ICU may name it by its older alias, Asia/Calcutta.)
    let label = label.as_str().unwrap();
    assert!(
        label == "Local (Asia/Kolkata)" || label == "Local (Asia/Calcutta)",
        "{label}"
    );
    shot(&c, "54-local-times").await;
    // The choice stays for the next pages, and across live refreshes.
    c.goto(&format!("{url}/dags/zoned/runs/z1")).await.unwrap();
    let header = text_of(&c, "#run-state p time").await;
    assert_eq!(header, "2026-07-02 04:15:10 +05:30");
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let header = text_of(&c, "#run-state p time").await;
    assert_eq!(header, "2026-07-02 04:15:10 +05:30", "after a live refresh");
    c.execute(
        "const s = document.getElementById('tz-pref'); s.value = 'UTC'; s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        text_of(&c, "#run-state p time").await,
        "2026-07-01 22:45:10 UTC"
    );

    // A new version of the DAG: the Versions tab says what changed and shows the lines.
    t.write_dag(
        "z.star",
        "dag(id = \"zoned\", max_active_runs = 3)\n\nshell(id = \"a\", cmd = \"echo changed\")\nshell(id = \"b\", cmd = \"true\")\n",
    );
    let start = std::time::Instant::now();
    loop {
        c.goto(&format!("{url}/dags/zoned?tab=versions"))
            .await
            .unwrap();
        let n = eval(
            &c,
            "return document.querySelectorAll('#versions tbody tr').length;",
        )
        .await;
        if n == json!(2) {
            break;
        }
        assert!(start.elapsed().as_secs() < 60, "no second version: {n}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    click(&c, "#versions tbody tr:first-child a").await;
    until(&c, "the diff", |html| html.contains("id=\"version-diff\"")).await;
    assert_eq!(text_of(&c, "#version-diff h2").await, "Version 1 → 2");
    assert_eq!(text_of(&c, "#diff-added").await, "Tasks added: b");
    assert_eq!(text_of(&c, "#diff-changed").await, "Tasks changed: a");
    assert_eq!(
        text_of(&c, "#diff-settings").await,
        "DAG settings changed: max_active_runs"
    );
    let rows = eval(
        &c,
        "const bg = (sel) => { const r = document.querySelector(sel); return r ? getComputedStyle(r.cells[2]).backgroundColor : null; }; \
         return [bg('#diff-lines tr.add'), bg('#diff-lines tr.del'), bg('#diff-lines tr.ctx'), \
                 [...document.querySelectorAll('#diff-lines tr.add')].map(r => r.cells[2].innerText).join(' | ')];",
    )
    .await;
    assert!(rows[0].is_string() && rows[1].is_string(), "{rows}");
    assert_ne!(
        rows[0], rows[1],
        "added and removed lines look apart: {rows}"
    );
    assert_ne!(rows[0], rows[2], "{rows}");
    assert!(rows[3].as_str().unwrap().contains("echo changed"), "{rows}");
    shot(&c, "56-version-diff").await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_added_by_fields_or_uri_and_tested_from_the_page() {
    let t = Tern::new();
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;
    log_in(&c, &url, password.trim(), "/connections").await;

    // By fields: the machine's PostgreSQL (trust auth), with a password full of URI syntax.
    type_into(&c, "#connection-form input[name=name]", "wh").await;
    c.execute(
        "document.getElementById('conn-type').value = 'postgres';",
        vec![],
    )
    .await
    .unwrap();
    type_into(&c, "#conn-host", "127.0.0.1").await;
    type_into(&c, "#conn-port", "5432").await;
    type_into(&c, "#conn-login", "postgres").await;
    type_into(&c, "#conn-password", "p@ss:w/rd#1").await;
    type_into(&c, "#conn-schema", "postgres").await;
    type_into(&c, "#conn-extra", r#"{"sslmode": "disable"}"#).await;
    shot(&c, "57-connection-fields").await;
    click(&c, "#connection-save").await;
    until(&c, "the new connection", |html| {
        html.contains("data-connection=\"wh\"")
    })
    .await;
    let row = text_of(&c, "tr[data-connection=wh]").await;
    assert!(
        row.contains("postgres") && row.contains("127.0.0.1"),
        "{row}"
    );
    assert!(
        !c.source().await.unwrap().contains("p@ss"),
        "the password is never shown"
    );
    let shown = t.json(&["connections", "show", "wh"]);
    assert_eq!(shown["port"], 5432, "{shown}");
    assert_eq!(shown["schema"], "postgres", "{shown}");
    // The CLI reaches the same database with what the form stored.
    let out = t.ok(&["connections", "test", "wh"]);
    assert!(out.starts_with("ok:"), "{out}");

    // Test from the page: reached.
    click(&c, "tr[data-connection=wh] button.test-connection").await;
    until(&c, "the test's answer", |html| {
        html.contains("OK: SELECT 1")
    })
    .await;
    let bad = eval(
        &c,
        "return document.getElementById('flash').classList.contains('bad');",
    )
    .await;
    assert_eq!(bad, json!(false));

    // By URI: a port nothing listens on; its test fails, in red, saying why.
    c.execute(
        "const r = document.querySelector('input[name=_form][value=uri]'); r.checked = true; r.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![],
    )
    .await
    .unwrap();
    let hidden = eval(
        &c,
        "return [document.getElementById('conn-fields').getClientRects().length, document.getElementById('conn-uri').getClientRects().length];",
    )
    .await;
    assert_eq!(hidden, json!([0, 1]), "only the URI field shows");
    type_into(&c, "#connection-form input[name=name]", "down").await;
    type_into(
        &c,
        "#conn-uri-text",
        "postgres://postgres@127.0.0.1:1/postgres",
    )
    .await;
    click(&c, "#connection-save").await;
    until(&c, "the second connection", |html| {
        html.contains("data-connection=\"down\"")
    })
    .await;
    click(&c, "tr[data-connection=down] button.test-connection").await;
    until(&c, "the failed test", |html| html.contains("Failed: ")).await;
    let flash = eval(
        &c,
        "const f = document.getElementById('flash'); return [f.classList.contains('bad'), getComputedStyle(f).backgroundColor];",
    )
    .await;
    assert_eq!(flash[0], true, "{flash}");
    assert_eq!(flash[1], "rgb(180, 35, 24)", "a failure shows red: {flash}");
    shot(&c, "58-connection-test-failed").await;
    c.close().await.unwrap();
}
