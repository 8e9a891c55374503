//! `guestbook-site`: the whole `mantissa` command line, serving the
//! guestbook next to Mantissa's own pages (`guestbook-site serve`).

use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    mantissa::cli::main_with(vec![Arc::new(guestbook::Guestbook)])
}
