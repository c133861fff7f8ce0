//! The `sandbox` of shell and python tasks: the process runs under bubblewrap with the whole
//! system read-only, a private `/tmp`, `/dev` and `/proc`, its own PID namespace (it dies with
//! the agent's child), no network unless allowed, and only its working folder and the
//! `writable` paths writable.

use std::path::Path;

use tern_core::Sandbox;

/// The bubblewrap command line that runs `program args` inside the sandbox, starting in `cwd`,
/// with `workdir` (the task's own temporary folder, holding its output file) writable.
pub fn wrap(
    bwrap: &Path,
    program: &str,
    args: &[String],
    cwd: &Path,
    workdir: &Path,
    s: &Sandbox,
) -> (String, Vec<String>) {
    let mut argv: Vec<String> = [
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !s.network {
        argv.push("--unshare-net".into());
    }
    let workdir = workdir.display().to_string();
    for path in std::iter::once(&workdir).chain(&s.writable) {
        argv.extend(["--bind".into(), path.clone(), path.clone()]);
    }
    argv.extend(["--chdir".into(), cwd.display().to_string(), "--".into()]);
    argv.push(program.to_string());
    argv.extend(args.iter().cloned());
    (bwrap.display().to_string(), argv)
}

/// The error when bubblewrap is missing, saying what to install.
pub fn missing() -> String {
    "this task asks for a sandbox, but bubblewrap (`bwrap`) is not installed on the machine running it: \
     install it (Debian/Ubuntu: apt install bubblewrap) or remove `sandbox`"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_isolates_and_binds_what_is_writable() {
        let (prog, argv) = wrap(
            Path::new("/usr/bin/bwrap"),
            "sh",
            &["-c".into(), "echo hi".into()],
            Path::new("/srv/job"),
            Path::new("/tmp/tern-task-1"),
            &Sandbox {
                network: false,
                writable: vec!["/data/out".into()],
            },
        );
        assert_eq!(prog, "/usr/bin/bwrap");
        let line = argv.join(" ");
        assert!(line.starts_with("--ro-bind / / "), "{line}");
        assert!(line.contains("--unshare-net"), "{line}");
        assert!(
            line.contains("--bind /tmp/tern-task-1 /tmp/tern-task-1"),
            "{line}"
        );
        assert!(line.contains("--bind /data/out /data/out"), "{line}");
        assert!(
            line.ends_with("--chdir /srv/job -- sh -c echo hi"),
            "{line}"
        );
        let (_, with_net) = wrap(
            Path::new("bwrap"),
            "sh",
            &[],
            Path::new("/"),
            Path::new("/tmp/w"),
            &Sandbox {
                network: true,
                writable: vec![],
            },
        );
        assert!(!with_net.contains(&"--unshare-net".to_string()));
    }
}
