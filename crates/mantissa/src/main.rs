//! The `mantissa` command line.
//!
//! Thin on purpose: everything, argument parsing included, is
//! [`mantissa::cli::main_with`], which an application's own binary calls
//! with its offerings; this one links none beyond Mantissa's own.

use std::process::ExitCode;

/// mimalloc, not the system's malloc: a request's data is made on a store
/// reader thread and freed on a web worker, and glibc's per-thread arenas
/// spent an eighth of the server's time on such allocations and frees
/// (perf, under `bench/web.sh`; "Web" in bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    mantissa::cli::main_with(Vec::new())
}
