//! Link settings of the `tern` and `tern-agent` binaries.
//!
//! Relative relocations are packed (`-z pack-relative-relocs`, DT_RELR): the position-independent
//! binary's table of relative relocations, read at every start and kept in memory, shrinks from
//! 3.4 MB to 40 KB (3 MB less idle memory; see BENCHMARKS.md). The loader must know the format
//! (glibc 2.36 or later), so the flag is given only when building on and for a glibc that does.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    if native && host_glibc_knows_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
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
