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
