//! The server knows no database (issue 15, item 6): it must not depend on
//! `mantissa-store`, so that what it listens on stays plain configuration
//! and what a connection thread sets up for the store stays a hook given by
//! whoever starts it ([`Server::on_thread_start`]). This keeps the
//! dependency from coming back unnoticed.
//!
//! [`Server::on_thread_start`]: mantissa_server::Server::on_thread_start

#[test]
fn the_server_does_not_depend_on_the_store() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let manifest = std::fs::read_to_string(path).unwrap();
    // Comments may name it (to say why it is not there); entries may not,
    // in any table: dependencies, dev- or build-dependencies, or a target's.
    let naming: Vec<&str> = manifest
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .filter(|entry| entry.contains("mantissa-store") || entry.contains("mantissa_store"))
        .collect();
    assert!(
        naming.is_empty(),
        "{path} names mantissa-store in {naming:?}: the server knows no database \
         (pass what a connection thread needs through Server::on_thread_start)"
    );
}
