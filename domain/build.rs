//! `sqlx::migrate!` embeds the migration files at compile time, but cargo only rebuilds a crate
//! when its own sources change: without this, a migration added on its own left every binary
//! with the old set (seen: "column progress does not exist" until a domain source changed).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
