//! Run with: cargo run -p mantissa-mail-proto --example parse -- FILE.eml...
//!
//! Prints one line of JSON per file: what the parser makes of it.

fn main() {
    for path in std::env::args().skip(1) {
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        match mantissa_mail_proto::parse(&raw) {
            Ok(report) => println!(
                "{path}\t{}",
                serde_json::to_string(&report).expect("a report serialises")
            ),
            Err(e) => println!("{path}\terror: {e}"),
        }
    }
}
