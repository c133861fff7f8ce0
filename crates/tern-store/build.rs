//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the migration folders at
//! compile time and would otherwise miss new files in an incremental build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
