//! `sqlx::migrate!` embeds the migration files at compile time; tell Cargo to rebuild the
//! crate when they change, or an edited migration would silently not ship.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
