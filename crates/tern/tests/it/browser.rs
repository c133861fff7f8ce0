//! The web UI in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven over
//! WebDriver with fantoccini): log in, trigger a DAG from its params form (an invalid value is
//! shown inline), watch the run finish without reloading, see it in the grid, read a task's
//! live log and rendered templates, clear a task and see it run again, pause the DAG. Screenshots of each step are
//! saved under `target/tmp/browser/` (the test's artifacts).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::agents::server_url;
use crate::harness::{free_port, Tern};

const WAIT: Duration = Duration::from_secs(60);

/// chromedriver in a process group of its own, with the Chromium it starts: dropping it (also
/// when the test fails before closing the session) ends them all.
pub(crate) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Starts chromedriver and opens a headless Chromium session with the flags STACK-NOTES lists.
pub(crate) async fn browser(profile: &std::path::Path) -> (Driver, Client) {
    browser_in_zone(profile, "UTC").await
}

/// [`browser`] with Chromium's local time zone set to `tz` (an IANA name).
pub(crate) async fn browser_in_zone(profile: &std::path::Path, tz: &str) -> (Driver, Client) {
    let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromedriver is not installed: `apt-get install chromium chromium-driver` (scripts/test does this as root)");
    let port = free_port();
    let driver = Driver(
        Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .env("TZ", tz)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < WAIT, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--window-size=1400,1000", "--disable-quic", "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.display())
        ]}),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (driver, client)
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts().join(format!("{name}.png")), png).unwrap();
}

/// Retries `act` on the element `css` finds until it works: the element may not be there yet
/// (a page still loading) or may have been replaced by a live-region refresh between finding
/// and using it (a stale element).
pub(crate) async fn with_element<T, F, Fut>(c: &Client, css: &str, act: F) -> T
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
{
    let start = Instant::now();
    loop {
        let error = match c.find(Locator::Css(css)).await {
            Ok(el) => match act(el).await {
                Ok(v) => return v,
                Err(e) => e,
            },
            Err(e) => e,
        };
        if start.elapsed() > WAIT {
            shot(
                c,
                &format!("timeout-{}", css.replace(['#', ' ', '[', ']', '='], "_")),
            )
            .await;
            panic!("cannot use the element {css}: {error}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn text_of(c: &Client, css: &str) -> String {
    with_element(c, css, |el| async move { el.text().await }).await
}

pub(crate) async fn click(c: &Client, css: &str) {
    with_element(c, css, |el| async move { el.click().await }).await
}

/// Replaces the value of the input `css` with `text`.
pub(crate) async fn type_into(c: &Client, css: &str, text: &str) {
    with_element(c, css, |el| async move {
        el.clear().await?;
        el.send_keys(text).await
    })
    .await
}

/// Waits until the browser is at a page whose path `check` accepts (a click that navigates, by a
/// form or by script, may return before the new page is there); returns the path.
pub(crate) async fn until_at(c: &Client, what: &str, check: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let path = c.current_url().await.unwrap().path().to_string();
        if check(&path) {
            return path;
        }
        if start.elapsed() > WAIT {
            shot(c, &format!("timeout-{}", what.replace(' ', "-"))).await;
            panic!("timed out waiting for {what}: still at {path}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `check` holds for the page as it is now (the page is not reloaded).
pub(crate) async fn until(c: &Client, what: &str, check: impl Fn(String) -> bool) {
    let start = Instant::now();
    loop {
        let html = c.source().await.unwrap();
        if check(html) {
            return;
        }
        if start.elapsed() > WAIT {
            shot(c, &format!("timeout-{}", what.replace(' ', "-"))).await;
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_triggers_watches_reads_logs_clears_and_pauses_in_the_browser() {
    let t = Tern::new();
    t.write_dag(
        "web.star",
        r#"dag(id = "web", tags = ["ui"], params = {"n": {"default": 2, "type": "integer"}})
a = shell(id = "extract", cmd = "echo extracting {{ params.n }} parts; sleep 1; echo extract-done")
b = shell(id = "load", cmd = "echo loaded")
a >> b
"#,
    );
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let password = std::fs::read_to_string(t.path().join("admin-password"))
        .expect("the first start saved the admin password")
        .trim()
        .to_string();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;

    // Every page needs a login; the login comes back to the page asked for.
    c.goto(&format!("{url}/dags/web")).await.unwrap();
    until_at(&c, "the login page", |p| p.starts_with("/login")).await;
    // The fields stand one under the other, each under its label, aligned.
    let layout = c
        .execute(
            "const u = document.getElementById('username').getBoundingClientRect(); \
             const p = document.getElementById('password').getBoundingClientRect(); \
             return [u.left, p.left, u.bottom <= p.top, u.width, p.width, getComputedStyle(document.getElementById('username')).display];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(layout[0], layout[1], "fields not aligned: {layout:?}");
    assert_eq!(layout[2], true, "password not under user: {layout:?}");
    assert_eq!(layout[3], layout[4], "{layout:?}");
    assert_eq!(layout[5], "block", "{layout:?}");
    with_element(
        &c,
        "#username",
        |el| async move { el.send_keys("admin").await },
    )
    .await;
    with_element(&c, "#password", |el| async move {
        el.send_keys("wrong password").await
    })
    .await;
    click(&c, "#login").await;
    until(&c, "the wrong password to be refused", |html| {
        html.contains("Wrong user name or password")
    })
    .await;
    with_element(
        &c,
        "#username",
        |el| async move { el.send_keys("admin").await },
    )
    .await;
    let pw = password.as_str();
    with_element(&c, "#password", |el| async move { el.send_keys(pw).await }).await;
    click(&c, "#login").await;
    until_at(&c, "the DAG page after login", |p| p == "/dags/web").await;
    shot(&c, "01-dag-page").await;

    // The graph of a DAG that never ran: every label is drawn in another colour than its box,
    // and every edge ends in an arrowhead.
    c.goto(&format!("{url}/dags/web?tab=graph")).await.unwrap();
    with_element(&c, "#graph g.node", |el| async move { el.text().await }).await;
    let colours = c
        .execute(
            "return [...document.querySelectorAll('#graph g.node')].map(g => [getComputedStyle(g.querySelector('text')).fill, getComputedStyle(g.querySelector('rect')).fill]);",
            vec![],
        )
        .await
        .unwrap();
    let colours = colours.as_array().unwrap();
    assert_eq!(colours.len(), 2, "{colours:?}");
    for pair in colours {
        assert_ne!(pair[0], pair[1], "a label in its box's colour: {pair:?}");
    }
    let arrows = c
        .execute(
            "return [...document.querySelectorAll('#graph path.edge')].map(e => getComputedStyle(e).markerEnd);",
            vec![],
        )
        .await
        .unwrap();
    let arrows = arrows.as_array().unwrap();
    assert!(!arrows.is_empty());
    assert!(
        arrows
            .iter()
            .all(|m| m.as_str().is_some_and(|m| m.contains("arrow"))),
        "{arrows:?}"
    );
    shot(&c, "01b-graph-never-run").await;

    // The DAG list shows it with its tag.
    c.goto(&format!("{url}/dags")).await.unwrap();
    let row = text_of(&c, "tr[data-dag=web]").await;
    assert!(row.contains("web") && row.contains("ui"), "{row}");
    shot(&c, "02-dag-list").await;

    // The trigger form is built from the params: a wrong type is shown next to the field.
    c.goto(&format!("{url}/dags/web/trigger")).await.unwrap();
    let value = with_element(&c, "#p_n", |el| async move { el.prop("value").await }).await;
    assert_eq!(value.as_deref(), Some("2"));
    type_into(&c, "#p_n", "many").await;
    click(&c, "#trigger-submit").await;
    until(&c, "the inline error", |html| {
        html.contains("not a whole number")
    })
    .await;
    assert!(text_of(&c, "#err_n").await.contains("not a whole number"));
    shot(&c, "03-trigger-invalid").await;
    type_into(&c, "#p_n", "7").await;
    click(&c, "#trigger-submit").await;
    let run_path = until_at(&c, "the run page", |p| p.starts_with("/dags/web/runs/")).await;

    // The run page follows the run to its end without a reload.
    until(&c, "the run to succeed", |html| {
        html.contains("id=\"run-state-text\">success<")
    })
    .await;
    shot(&c, "04-run-success-gantt").await;

    // The grid shows both tasks green.
    c.goto(&format!("{url}/dags/web")).await.unwrap();
    let green = c
        .find_all(Locator::Css("#grid td.c.s-success"))
        .await
        .unwrap();
    assert_eq!(green.len(), 2);
    shot(&c, "05-grid").await;
    // A cell opens its task instance.
    click(&c, "#grid tr[data-t=load] td.c.s-success").await;
    let load = format!("{run_path}/tasks/load");
    until_at(&c, "the task page from the grid", |p| p == load).await;
    c.goto(&format!("{url}/dags/web?tab=graph")).await.unwrap();
    assert_eq!(
        c.find_all(Locator::Css("#graph g.node.s-success"))
            .await
            .unwrap()
            .len(),
        2
    );
    shot(&c, "06-graph").await;

    // The task page streams the log of its try.
    c.goto(&format!("{url}{run_path}/tasks/extract"))
        .await
        .unwrap();
    // (The rendered command on the same page holds these words too: read the log's own element.)
    let start = Instant::now();
    loop {
        let log = text_of(&c, "#log-text").await;
        if log.contains("extracting 7 parts") && log.contains("extract-done") {
            break;
        }
        if start.elapsed() > WAIT {
            shot(&c, "timeout-log").await;
            panic!("the live log did not show the try's output: {log:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Streamed lines follow each other with no empty line between them.
    let raw = c
        .execute(
            "return document.getElementById('log-text').textContent;",
            vec![],
        )
        .await
        .unwrap();
    let raw = raw.as_str().unwrap();
    assert!(
        !raw.contains("\n\n"),
        "empty lines in the live log: {raw:?}"
    );
    shot(&c, "07-task-log").await;

    // Clearing the task runs it again: a second try appears, and it succeeds.
    c.execute("window.confirm = () => true;", vec![])
        .await
        .unwrap();
    click(&c, "#clear-task").await;
    until(&c, "the second try to succeed", |html| {
        let tries = html.split("id=\"tries\"").nth(1).unwrap_or("");
        let tries = tries.split("</table>").next().unwrap_or("");
        tries.matches("<tr><td>").count() == 2 && html.contains("id=\"ti-state-text\">success<")
    })
    .await;
    shot(&c, "08-cleared-and-rerun").await;

    // Pausing from the DAG page.
    c.goto(&format!("{url}/dags/web")).await.unwrap();
    click(&c, "#pause").await;
    let start = Instant::now();
    loop {
        let dags = t.json(&["dags", "list"]);
        let web: &Value = dags
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dag_id"] == "web")
            .unwrap();
        if web["is_paused"] == true {
            break;
        }
        assert!(start.elapsed() < WAIT, "the DAG was not paused: {web}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.refresh().await.unwrap();
    assert!(text_of(&c, "h1").await.contains("paused"));
    shot(&c, "09-paused").await;

    // The API docs page runs its (external) script under the page's CSP and lists the routes
    // in visible text.
    c.goto(&format!("{url}/api/v1/docs")).await.unwrap();
    let start = Instant::now();
    loop {
        let ops = text_of(&c, "#ops").await;
        if ops.contains("/api/v1/dags/{dag_id}/dagRuns") {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the API docs never listed the routes: {ops}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(&c, "10-api-docs").await;
    // Logging out ends the session.
    c.goto(&format!("{url}/dags")).await.unwrap();
    click(&c, "#logout").await;
    until_at(&c, "the login page after logging out", |p| {
        p.starts_with("/login")
    })
    .await;
    c.goto(&format!("{url}/dags")).await.unwrap();
    until_at(&c, "the login page for a logged-out user", |p| {
        p.starts_with("/login")
    })
    .await;
    c.close().await.unwrap();
}

/// Logs in through the form and waits to be at `path`.
pub(crate) async fn log_in(c: &Client, url: &str, password: &str, path: &str) {
    c.goto(&format!("{url}{path}")).await.unwrap();
    until_at(c, "the login page", |p| p.starts_with("/login")).await;
    with_element(
        c,
        "#username",
        |el| async move { el.send_keys("admin").await },
    )
    .await;
    with_element(
        c,
        "#password",
        |el| async move { el.send_keys(password).await },
    )
    .await;
    click(c, "#login").await;
    until_at(c, "the page after login", |p| p == path).await;
}

/// Whether the element `css` is shown (laid out, not `display: none` itself or by a parent).
pub(crate) async fn shown(c: &Client, css: &str) -> bool {
    let v = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e !== null && e.getClientRects().length > 0;",
            vec![json!(css)],
        )
        .await
        .unwrap();
    v == json!(true)
}

/// Groups in the grid open and close (and stay as left across live refreshes), a group's cell
/// shows its tasks' summary state, and the graph draws a closed group as one node that opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_groups_fold_and_unfold_in_the_grid_and_the_graph() {
    let t = Tern::new();
    t.write_dag(
        "g.star",
        r#"dag(id = "grouped", params = {"target": {"default": "lake", "type": "string"}})
def extract_tables():
    for table in ["orders", "users"]:
        shell(id = table, cmd = "true")
extract = group("extract", build = extract_tables)
route = branch(id = "route", cmd = "echo 'follow={{ params.target }}' >> $TERN_OUTPUT")
warehouse = group("warehouse")
stage = shell(id = "stage", group = warehouse, cmd = "true")
checks = group("checks", group = warehouse)
shell(id = "rows", group = checks, cmd = "true")
lake = group("lake")
shell(id = "parquet", group = lake, cmd = "true")
done = empty(id = "done", trigger_rule = "none_failed_min_one_success")
stage >> checks
extract >> route
route >> [warehouse, lake]
done << [warehouse, lake]
"#,
    );
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let run = t.trigger("grouped", None);
    let done = t.wait_run(
        "grouped",
        &run,
        "the grouped run to end",
        crate::harness::finished,
    );
    assert_eq!(crate::harness::run_state(&done), "success", "{done:#}");
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;
    log_in(&c, &url, password.trim(), "/dags/grouped").await;

    // Closed groups: their rows are there, their tasks' rows are not shown.
    with_element(&c, "#grid tr.grp[data-grp=extract]", |el| async move {
        el.text().await
    })
    .await;
    assert!(shown(&c, "#grid tr.grp[data-grp=extract]").await);
    assert!(!shown(&c, "#grid tr[data-t='extract.orders']").await);
    assert!(shown(&c, "#grid tr[data-t=route]").await);
    // A group's cell is its tasks' state: extract ran, warehouse was skipped by the branch.
    let class = |css: &'static str| {
        let c = &c;
        async move {
            with_element(c, css, |el| async move { el.attr("class").await })
                .await
                .unwrap_or_default()
        }
    };
    assert_eq!(
        class("#grid tr.grp[data-grp=extract] td.g").await,
        "g s-success"
    );
    assert_eq!(
        class("#grid tr.grp[data-grp=warehouse] td.g").await,
        "g s-skipped"
    );
    assert_eq!(
        class("#grid tr.grp[data-grp=lake] td.g").await,
        "g s-success"
    );
    let title = with_element(&c, "#grid tr.grp[data-grp=extract] td.g", |el| async move {
        el.attr("title").await
    })
    .await;
    assert_eq!(title.as_deref(), Some("2 success"));
    shot(&c, "20-grid-groups-closed").await;

    // Opening warehouse shows its task and its (closed) inner group, not the inner tasks.
    click(&c, "#grid tr.grp[data-grp=warehouse] button.grp-toggle").await;
    assert!(shown(&c, "#grid tr[data-t='warehouse.stage']").await);
    assert!(shown(&c, "#grid tr.grp[data-grp='warehouse.checks']").await);
    assert!(!shown(&c, "#grid tr[data-t='warehouse.checks.rows']").await);
    let expanded = with_element(
        &c,
        "#grid tr.grp[data-grp=warehouse] button",
        |el| async move { el.attr("aria-expanded").await },
    )
    .await;
    assert_eq!(expanded.as_deref(), Some("true"));
    // The task's row shows its own name, indented under the group.
    let (name, indent) = {
        let v = c
            .execute(
                "const td = document.querySelector(\"#grid tr[data-t='warehouse.stage'] td.task\"); return [td.textContent, parseFloat(getComputedStyle(td).paddingLeft)];",
                vec![],
            )
            .await
            .unwrap();
        (v[0].as_str().unwrap().to_string(), v[1].as_f64().unwrap())
    };
    assert_eq!(name, "stage");
    assert!(indent >= 14.0, "{indent}");
    shot(&c, "21-grid-warehouse-open").await;
    // A live refresh (every 3 s, when the grid changed: here a new run) keeps what is open.
    let columns = |html: &str| html.matches("<th data-r=").count();
    let before = columns(&c.source().await.unwrap());
    let second = t.trigger("grouped", None);
    t.wait_run(
        "grouped",
        &second,
        "the second run",
        crate::harness::finished,
    );
    until(&c, "a live refresh of the grid", |html| {
        columns(&html) == before + 1
    })
    .await;
    assert!(shown(&c, "#grid tr[data-t='warehouse.stage']").await);
    assert!(!shown(&c, "#grid tr[data-t='extract.orders']").await);
    // Closing it hides its rows again.
    click(&c, "#grid tr.grp[data-grp=warehouse] button.grp-toggle").await;
    assert!(!shown(&c, "#grid tr[data-t='warehouse.stage']").await);

    // The graph: closed groups are single nodes, labelled in a colour other than their box.
    c.goto(&format!("{url}/dags/grouped?tab=graph"))
        .await
        .unwrap();
    with_element(
        &c,
        "#graph g.node.group[data-group=extract]",
        |el| async move { el.text().await },
    )
    .await;
    let nodes = c
        .execute(
            "return [...document.querySelectorAll('#graph g.node')].map(g => [g.dataset.task || ('group:' + g.dataset.group), getComputedStyle(g.querySelector('text')).fill, getComputedStyle(g.querySelector('rect')).fill]);",
            vec![],
        )
        .await
        .unwrap();
    let nodes = nodes.as_array().unwrap().clone();
    let names: Vec<&str> = nodes.iter().map(|n| n[0].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "group:extract",
            "route",
            "group:warehouse",
            "group:lake",
            "done"
        ],
        "{nodes:?}"
    );
    for n in &nodes {
        assert_ne!(n[1], n[2], "a label in its box's colour: {n:?}");
    }
    shot(&c, "22-graph-groups-closed").await;
    click(&c, "#graph g.node.group[data-group=warehouse]").await;
    until(&c, "warehouse opened in the graph", |html| {
        html.contains("data-task=\"warehouse.stage\"")
            && html.contains("data-group=\"warehouse.checks\"")
    })
    .await;
    assert!(c
        .current_url()
        .await
        .unwrap()
        .query()
        .unwrap_or("")
        .contains("open=warehouse"));
    assert!(text_of(&c, "#open-groups").await.contains("warehouse"));
    shot(&c, "23-graph-warehouse-open").await;
    click(&c, "#open-groups a").await;
    until(&c, "warehouse closed again", |html| {
        html.contains("data-group=\"warehouse\"") && !html.contains("data-task=\"warehouse.stage\"")
    })
    .await;
    c.close().await.unwrap();
}

/// The variables page: an operator sets a plain and a secret variable from the form; the
/// plain value is shown, the secret one only as a badge, never in the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_are_set_from_the_page_and_a_secret_is_never_shown() {
    let t = Tern::new();
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;
    log_in(&c, &url, password.trim(), "/variables").await;
    for (key, value, secret) in [
        ("region", "eu-west-1", false),
        ("api_token", "sh-99-hidden", true),
    ] {
        type_into(&c, "#variable-form input[name=key]", key).await;
        type_into(&c, "#variable-form input[name=value]", value).await;
        if secret {
            click(&c, "#variable-form input[name=secret]").await;
        }
        click(&c, "#variable-form button[type=submit]").await;
        until(&c, &format!("{key} listed"), |html| {
            html.contains(&format!("<tr data-key=\"{key}\">"))
        })
        .await;
    }
    let shown = text_of(&c, "#variables tr[data-key=region] code.value").await;
    assert_eq!(shown, "eu-west-1");
    let badge = text_of(&c, "#variables tr[data-key=api_token] .badge").await;
    assert_eq!(badge, "secret");
    let visible = c
        .execute(
            "const b = document.querySelector('#variables tr[data-key=api_token] .badge'); return b.getClientRects().length > 0;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(visible, json!(true));
    assert!(!c.source().await.unwrap().contains("sh-99-hidden"));
    shot(&c, "30-variables").await;
    assert_eq!(
        t.ok(&["variables", "get", "api_token", "--reveal"]).trim(),
        "sh-99-hidden"
    );
    c.close().await.unwrap();
}

/// A mapped task's grid cell stands for all its instances (the count shown in a colour that
/// differs from the cell, the counts by state in its title), its click opens the task page
/// with the list of instances, and an instance's page shows its elements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_task_shows_one_cell_with_counts_and_its_page_lists_the_instances() {
    let t = Tern::new();
    t.write_dag(
        "m.star",
        r#"dag(id = "mapped")
work = shell(id = "work", cmd = "test {{ n }} != 3", expand = {"n": [1, 2, 3, 4]})
after = shell(id = "after", cmd = "true", trigger_rule = "all_done")
work >> after
"#,
    );
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let run = t.trigger("mapped", None);
    let done = t.wait_run("mapped", &run, "the mapped run", crate::harness::finished);
    // The leaf (`after`, all_done) decides the run, as in Airflow.
    assert_eq!(crate::harness::run_state(&done), "success", "{done:#}");
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;
    log_in(&c, &url, password.trim(), "/dags/mapped").await;

    let cell = "#grid tr[data-t=work] td.c";
    let (class, title, text) = with_element(&c, cell, |el| async move {
        Ok((
            el.attr("class").await?.unwrap_or_default(),
            el.attr("title").await?.unwrap_or_default(),
            el.text().await?,
        ))
    })
    .await;
    assert_eq!(class, "c mapped s-failed", "a failed instance shows first");
    assert_eq!(title, "4 mapped: 1 failed, 3 success");
    assert_eq!(text, "4");
    let colours = c
        .execute(
            "const td = document.querySelector(arguments[0]); const n = td.querySelector('span'); \
             const plain = document.querySelector('#grid tr[data-t=after] td.c').getBoundingClientRect(); \
             const r = td.getBoundingClientRect(); \
             return [getComputedStyle(n).color, getComputedStyle(td).backgroundColor, r.width, r.height, plain.width, plain.height];",
            vec![json!(cell)],
        )
        .await
        .unwrap();
    assert_ne!(
        colours[0], colours[1],
        "the count is readable on the cell: {colours}"
    );
    assert_eq!(
        (colours[2].as_f64(), colours[3].as_f64()),
        (colours[4].as_f64(), colours[5].as_f64()),
        "a mapped cell is as large as any other: {colours}"
    );
    let after = with_element(&c, "#grid tr[data-t=after] td.c", |el| async move {
        el.attr("class").await
    })
    .await;
    assert_eq!(
        after.as_deref(),
        Some("c s-success"),
        "a task that is not mapped keeps a bare cell"
    );
    shot(&c, "40-grid-mapped-cell").await;

    click(&c, cell).await;
    until_at(&c, "the mapped task's page", |p| p.ends_with("/tasks/work")).await;
    let rows = with_element(&c, "#instances tbody", |el| async move { el.text().await }).await;
    assert_eq!(rows.lines().count(), 4, "{rows}");
    assert!(shown(&c, "#instances").await);
    let failed_row = text_of(&c, "#instances tbody tr:nth-child(3)").await;
    assert!(failed_row.contains("failed"), "{failed_row}");
    shot(&c, "41-task-page-instances").await;

    click(&c, "#instances tbody tr:nth-child(3) a").await;
    until(&c, "instance 2's page", |html| {
        html.contains("id=\"map-index\"")
    })
    .await;
    assert_eq!(text_of(&c, "#map-index").await, "[2]");
    let body = text_of(&c, "#ti-state").await;
    assert!(body.contains("Expanded with n = 3"), "{body}");
    assert!(shown(&c, "#clear-instance").await);
    let rendered = text_of(&c, "#rendered").await;
    assert!(rendered.contains("test 3 != 3"), "{rendered}");
    shot(&c, "42-task-page-one-instance").await;

    // The run page names each instance and links to its own page.
    c.goto(&format!("{url}/dags/mapped/runs/{run}"))
        .await
        .unwrap();
    let link = with_element(&c, "a[href$='/tasks/work?map_index=2']", |el| async move {
        el.text().await
    })
    .await;
    assert_eq!(link, "work[2]");
    assert!(shown(&c, "a[href$='/tasks/work?map_index=2']").await);
    shot(&c, "43-run-page-instances").await;
    c.close().await.unwrap();
}
