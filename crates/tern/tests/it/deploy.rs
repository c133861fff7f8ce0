//! The service files in `deploy/`: `systemd-analyze verify` accepts them with no warning, with
//! the binary they start pointed at the one under test (and refuses a broken copy: the check can
//! fail).

use std::path::Path;
use std::process::Command;

const UNITS: [&str; 2] = ["tern-server.service", "tern-agent.service"];

/// `systemd-analyze verify` of `files`: whether it passed and what it said.
fn verify(files: &[&Path]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(files)
        .output()
        .expect("systemd-analyze is not installed: `apt-get install systemd` (scripts/test does this as root)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn the_systemd_units_verify_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(deploy.join(unit)).unwrap();
        assert!(
            text.contains("/usr/local/bin/tern"),
            "{unit} starts the installed binary"
        );
        let path = dir.path().join(unit);
        std::fs::write(
            &path,
            text.replace("/usr/local/bin/tern", env!("CARGO_BIN_EXE_tern")),
        )
        .unwrap();
        paths.push(path);
    }
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let (ok, said) = verify(&refs);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    // Positive control: a misspelt setting is reported.
    let broken = dir.path().join("broken.service");
    let text = std::fs::read_to_string(&paths[0]).unwrap();
    std::fs::write(&broken, text.replace("NoNewPrivileges", "NoNewPrivilege")).unwrap();
    let (_, said) = verify(&[&broken]);
    assert!(said.contains("NoNewPrivilege"), "{said}");
}

/// A database with the schema of the tern before this one (every migration but the newest):
/// its URL and `(applied, known)` versions.
async fn older_database(t: &crate::harness::Tern) -> (String, (i64, i64)) {
    let url = format!("sqlite://{}", t.path().join("tern.db").display());
    let store = tern_store::Store::connect(&url).await.unwrap();
    store.debug_migrate_all_but_the_newest().await.unwrap();
    let versions = store
        .older_schema()
        .await
        .unwrap()
        .expect("an older schema");
    store.close().await;
    (url, versions)
}

/// Runs `tern ARGS` on the older database at `url`: it must fail, saying that `who` does not
/// upgrade it (both versions, `tern db migrate`), and leave the database as it was.
async fn refuses_and_changes_nothing(
    t: &crate::harness::Tern,
    url: &str,
    (applied, known): (i64, i64),
    args: &[&str],
    who: &str,
) {
    let out = tokio::task::block_in_place(|| t.run(args));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "schema version {applied}, older than this tern's ({known}); {who} does not upgrade it"
        )) && err.contains("tern db migrate"),
        "{err}"
    );
    let store = tern_store::Store::connect(url).await.unwrap();
    assert_eq!(
        store.older_schema().await.unwrap(),
        Some((applied, known)),
        "nothing was changed"
    );
    store.close().await;
}

/// No other command upgrades a schema either (an operator's newer CLI pointed at a database
/// older servers use must not change it under them): on a database an older tern made, `tern
/// dags list` refuses with both versions and what to run, and changes nothing; `tern db
/// migrate` upgrades it, after which the command runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_refuses_an_older_schema_and_db_migrate_upgrades_it() {
    let t = crate::harness::Tern::new();
    t.write_dag(
        "d.star",
        "d = dag(id = \"d\")\nshell(id = \"a\", cmd = \"true\")\n",
    );
    let (url, versions) = older_database(&t).await;
    refuses_and_changes_nothing(&t, &url, versions, &["dags", "list"], "a command").await;
    tokio::task::block_in_place(|| {
        t.ok(&["db", "migrate"]);
        assert!(t.ok(&["dags", "list"]).contains("d.star"));
    });
    let store = tern_store::Store::connect(&url).await.unwrap();
    assert_eq!(store.older_schema().await.unwrap(), None, "upgraded");
    store.close().await;
}

/// `tern server` never upgrades a schema other servers of an older tern may be using: on a
/// database an older tern made it refuses to start, names both versions and says to run
/// `tern db migrate`; the database is left as it was. (`standalone` and a new, empty database
/// are migrated at start, as before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refuses_an_older_schema_until_db_migrate_has_run() {
    let t = crate::harness::Tern::new();
    let (url, versions) = older_database(&t).await;
    refuses_and_changes_nothing(&t, &url, versions, &["server", "--port", "0"], "a server").await;
}
