//! Link settings of the `tern` and `tern-agent` binaries.
//!
//! Relative relocations are packed (`-z pack-relative-relocs`, DT_RELR): the position-independent
//! binary's table of relative relocations, read at every start and kept in memory, shrinks from
//! 3.4 MB to 40 KB (3 MB less idle memory; see BENCHMARKS.md). The loader must know the format
//! (glibc 2.36 or later), so the flag is given only when building on and for a glibc that does.
//!
//! The functions a server runs are laid out together in optimised builds of `tern`, those it
//! runs when idle first, then those of a burst of runs, then its start's (`text-order.txt`,
//! written by `tern-bench text-order` from the shipped build, `--profile dist`): the kernel
//! keeps the 64 KiB around each page of code a process touches, so scattered code keeps most
//! of the text resident, and once a server lets go of its code (`tern_worker::resident`) what
//! it maps again should be the idle code alone. The file names functions by their mangled
//! names, which hold each crate's build hash: a build with other dependencies, another
//! compiler or another profile finds fewer of them and is laid out as without the file
//! (nothing breaks). The linker must take a symbol ordering file (LLD, Rust's default linker
//! on Linux since 1.90); a probe link decides.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=text-order.txt");
    let native = var("HOST") == var("TARGET");
    if native && host_glibc_knows_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("text-order.txt");
    if var("OPT_LEVEL") != "0" && order.exists() && linker_takes_symbol_order(&order) {
        for arg in symbol_order_args(&order) {
            println!("cargo:rustc-link-arg-bin=tern={arg}");
        }
    }
}

/// The environment variable `name` as Cargo sets it for build scripts; empty when unset.
fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// The linker arguments that lay out the text by `order`.
fn symbol_order_args(order: &Path) -> [String; 2] {
    [
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        // Names the build does not have (another profile, other dependencies) are expected.
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ]
}

/// Whether a program links with `order` as its symbol ordering file, with this build's
/// compiler, target and flags.
fn linker_takes_symbol_order(order: &Path) -> bool {
    let out = Path::new(&var("OUT_DIR")).join("order-probe");
    if std::fs::create_dir_all(&out).is_err()
        || std::fs::write(out.join("probe.rs"), "fn main() {}\n").is_err()
    {
        return false;
    }
    let rustc = var("RUSTC");
    let mut cmd = Command::new(if rustc.is_empty() { "rustc" } else { &rustc });
    cmd.arg("--target")
        .arg(var("TARGET"))
        .arg("-o")
        .arg(out.join("probe"))
        .arg(out.join("probe.rs"));
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    for arg in symbol_order_args(order) {
        cmd.arg("-C").arg(format!("link-arg={arg}"));
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the glibc this build script runs on is 2.36 or later.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_glibc_knows_relr() -> bool {
    extern "C" {
        /// glibc's version, e.g. "2.36".
        fn gnu_get_libc_version() -> *const std::ffi::c_char;
    }
    // SAFETY: glibc returns a pointer to a static, NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
    let mut parts = version.to_str().unwrap_or_default().split('.');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (next(), next()) >= (2, 36)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn host_glibc_knows_relr() -> bool {
    false
}
