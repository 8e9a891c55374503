//! `mantissa-notes-site`: the `mantissa` command line plus the testkit's
//! notes offering (`mantissa_testkit::notes`), which publishes notes and
//! shares them. It is what an application's binary looks like, and the site
//! that `tests/browser/sharing.test.mjs` drives in Chromium.

use std::process::ExitCode;
use std::sync::Arc;

use mantissa_testkit::notes::Notes;

fn main() -> ExitCode {
    mantissa::cli::main_with(vec![Arc::new(Notes)])
}
