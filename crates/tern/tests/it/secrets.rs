//! `tern secrets rotate`: every connection and secret variable re-encrypted under a new key in
//! one go, the key file or the `TERN_SECRET_KEY` hand-over, the old key no longer enough.

use std::os::unix::fs::PermissionsExt;

use crate::harness::Tern;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn with_key(t: &Tern, key: &str, args: &[&str]) -> std::process::Output {
    t.command(args)
        .env("TERN_SECRET_KEY", key)
        .output()
        .unwrap()
}

#[test]
fn rotating_the_key_file_reseals_everything_and_retires_the_old_key() {
    let t = Tern::new();
    t.ok(&[
        "connections",
        "add",
        "meta",
        "--uri",
        "postgres://postgres:unused-pw@127.0.0.1:5432/postgres",
    ]);
    t.ok(&["variables", "set", "api_key", "k-123-secret", "--secret"]);
    t.ok(&["variables", "set", "region", "eu-west-1"]);
    let key_file = t.path().join("secret.key");
    let old_key = std::fs::read_to_string(&key_file).unwrap();

    let out = t.run(&["secrets", "rotate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("re-encrypted 1 connection(s) and 1 secret variable(s)"),
        "{err}"
    );
    assert!(err.contains("Restart every server"), "{err}");
    let new_key = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(new_key.trim(), old_key.trim());
    assert_eq!(
        new_key.lines().count(),
        1,
        "only the new key stays in force"
    );
    let kept = t.path().join("secret.key.old");
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap().trim(),
        old_key.trim()
    );
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&kept), 0o600);

    // Everything reads with the new key.
    assert_eq!(
        t.ok(&["variables", "get", "api_key", "--reveal"]).trim(),
        "k-123-secret"
    );
    assert!(t.ok(&["connections", "test", "meta"]).starts_with("ok:"));
    assert_eq!(t.ok(&["variables", "get", "region"]).trim(), "eu-west-1");
    // The old key alone opens nothing any more.
    let out = with_key(
        &t,
        old_key.trim(),
        &["variables", "get", "api_key", "--reveal"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another secret key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rotating_a_key_from_the_environment_hands_the_new_key_over_in_a_file() {
    let t = Tern::new();
    let old_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let ok = |args: &[&str]| {
        let out = with_key(&t, old_key, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    ok(&[
        "connections",
        "add",
        "wh",
        "--uri",
        "postgres://etl:pw-9@db.internal:5432/wh",
    ]);
    let given = t.path().join("next.key");
    let next_key = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    std::fs::write(&given, next_key).unwrap();
    let out = ok(&[
        "secrets",
        "rotate",
        "--new-key-file",
        given.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set TERN_SECRET_KEY"), "{err}");
    let handed = t.path().join("secret.key.new");
    assert_eq!(std::fs::read_to_string(&handed).unwrap().trim(), next_key);
    assert_eq!(mode(&handed), 0o600);
    assert!(!t.path().join("secret.key").exists(), "no key file is made");

    let show = |key: &str| with_key(&t, key, &["connections", "show", "wh", "-o", "json"]);
    assert!(
        !show(old_key).status.success(),
        "the old key no longer opens it"
    );
    for key in [next_key.to_string(), format!("{next_key},{old_key}")] {
        let out = show(&key);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("db.internal"));
    }
    // A rotation that cannot open a value changes nothing.
    let out = with_key(&t, old_key, &["secrets", "rotate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connection \"wh\"") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(show(next_key).status.success());
}
