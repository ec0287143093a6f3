//! The `polymongo` binary: everything is in the library ([`polymongo_cli::main`]).

fn main() {
    polymongo_cli::main();
}
