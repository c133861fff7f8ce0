//! The control plane's connections moved between installations: `connections export` and
//! `connections import`.

use crate::harness::Tern;

/// `connections export` masks passwords unless asked; `connections import` refuses a masked
/// export and moves a full one to another control plane (sealed there with its own key).
#[test]
fn connections_move_between_control_planes_by_export_and_import() {
    let a = Tern::new();
    let uri = "postgres://loader:s3cret-pass@db.internal:5432/sales";
    a.ok(&[
        "connections",
        "add",
        "sales_db",
        "--uri",
        uri,
        "--extra",
        r#"{"sslmode": "require"}"#,
        "--description",
        "sales replica",
    ]);
    let masked = a.ok(&["connections", "export"]);
    assert!(!masked.contains("s3cret-pass"), "{masked}");
    assert!(masked.contains("***"), "{masked}");
    let full = a.ok(&["connections", "export", "--include-secrets"]);
    assert!(full.contains("s3cret-pass"), "{full}");

    let b = Tern::new();
    let masked_file = b.path().join("masked.json");
    std::fs::write(&masked_file, &masked).unwrap();
    let out = b.run(&["connections", "import", masked_file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exported without its secrets"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full_file = b.path().join("full.json");
    std::fs::write(&full_file, &full).unwrap();
    b.ok(&["connections", "import", full_file.to_str().unwrap()]);
    let shown = b.json(&["connections", "show", "sales_db"]);
    assert_eq!(shown["host"], "db.internal");
    assert_eq!(shown["login"], "loader");
    assert_eq!(shown["password"], "***");
    assert_eq!(shown["extra"]["sslmode"], "require");
    // Again without --replace: the name is taken.
    let out = b.run(&["connections", "import", full_file.to_str().unwrap()]);
    assert!(!out.status.success());
    b.ok(&[
        "connections",
        "import",
        full_file.to_str().unwrap(),
        "--replace",
    ]);
    // Sealed with b's own key: a's key file differs, the stored ciphertext never moved.
    assert_ne!(
        std::fs::read(a.path().join("secret.key")).unwrap(),
        std::fs::read(b.path().join("secret.key")).unwrap()
    );
}

/// The same through `--server`, as YAML: export with secrets needs an admin token, import and
/// test go through the API and answer as the local commands do.
#[test]
fn connections_export_import_and_test_through_the_api_as_yaml() {
    let a = Tern::new();
    a.ok(&[
        "connections",
        "add",
        "meta",
        "--uri",
        "postgres://postgres@127.0.0.1:5432/postgres",
        "--description",
        "the machine's database",
    ]);
    let mut sa = a.standalone();
    let url = crate::agents::server_url(&mut sa);
    let admin = crate::api::token_for(&a, "ada", "admin");
    let op = crate::api::token_for(&a, "oz", "op");
    let remote = |token: &str, args: &[&str]| {
        let mut all = vec!["--server", url.as_str(), "--token", token];
        all.extend(args);
        a.run(&all)
    };
    // An op may export masked, not with secrets.
    let out = remote(&op, &["connections", "export", "--include-secrets"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = remote(
        &admin,
        &[
            "connections",
            "export",
            "--include-secrets",
            "--format",
            "yaml",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("name: meta") && yaml.contains("secrets_included: true"),
        "{yaml}"
    );
    assert_eq!(
        yaml,
        a.ok(&[
            "connections",
            "export",
            "--include-secrets",
            "--format",
            "yaml"
        ]),
        "the same export locally and remotely"
    );
    // Into another control plane through its API, from YAML.
    let b = Tern::new();
    let mut sb = b.standalone();
    let url_b = crate::agents::server_url(&mut sb);
    let op_b = crate::api::token_for(&b, "oz", "op");
    let file = b.path().join("conns.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = b.run(&[
        "--server",
        &url_b,
        "--token",
        &op_b,
        "connections",
        "import",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 connection(s) imported"));
    let listed = b.ok(&["connections", "list"]);
    assert!(
        listed.contains("meta") && listed.contains("the machine's database"),
        "{listed}"
    );
    // Tested through b's API and locally: both reach the database.
    let out = b.run(&[
        "--server",
        &url_b,
        "--token",
        &op_b,
        "connections",
        "test",
        "meta",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let there = String::from_utf8(out.stdout).unwrap();
    assert!(there.starts_with("ok: SELECT 1"), "{there}");
    assert_eq!(there, b.ok(&["connections", "test", "meta"]));
    let (_, audit) = crate::api::call(&url, "GET", "/api/v1/audit", Some(&admin), "");
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "connection.export" && e["actor"] == "ada"),
        "an export with secrets is audited: {audit}"
    );
}
