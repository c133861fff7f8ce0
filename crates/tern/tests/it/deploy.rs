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
