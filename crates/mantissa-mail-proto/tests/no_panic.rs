//! No input makes the parser panic: arbitrary bytes, and real samples cut,
//! spliced and mangled.

use std::path::Path;

use proptest::prelude::*;

fn samples() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples/sisimai");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // Every fifth, for speed: a spread of formats.
    files
        .iter()
        .step_by(5)
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = mantissa_mail_proto::parse(&raw);
    }

    #[test]
    fn header_shaped_noise(lines in proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,60}|[ -~]{0,80}|--[=_a-z0-9]{0,10}", 0..60)) {
        let raw = lines.join("\r\n");
        let _ = mantissa_mail_proto::parse(raw.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn mangled_real_bounces(
        pick in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
    ) {
        thread_local!(static SAMPLES: Vec<Vec<u8>> = samples());
        let mut raw = SAMPLES.with(|s| pick.get(s).clone());
        raw.truncate(cut.index(raw.len() + 1));
        for (at, byte) in flips {
            if !raw.is_empty() {
                let i = at.index(raw.len());
                raw[i] = byte;
            }
        }
        let _ = mantissa_mail_proto::parse(&raw);
    }
}

#[test]
fn what_is_not_mail_is_a_typed_error() {
    use mantissa_mail_proto::{Error, parse};
    assert_eq!(parse(b""), Err(Error::Empty));
    assert_eq!(parse(b" \r\n\t"), Err(Error::Empty));
    assert!(matches!(
        parse(b"\x89PNG\r\n\x1a\n"),
        Err(Error::NotAHeader { .. })
    ));
    assert!(matches!(
        parse(b"hello world\nthis is text"),
        Err(Error::NotAHeader { .. })
    ));
    assert!(matches!(
        parse(b"{\"json\": true}"),
        Err(Error::NotAHeader { .. })
    ));
    assert_eq!(parse(b"X-Nothing: 1\n\nbody"), Err(Error::NoMailHeaders));
}
