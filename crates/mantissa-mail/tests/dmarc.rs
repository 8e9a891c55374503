//! DMARC aggregate reports as Google, Microsoft and Amazon SES sent them
//! (tests/dmarc/SOURCES.md), read and summarised once each.

use mantissa_mail::dmarc::{self, Received};

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/dmarc/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn real_reports_are_summarised_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(&dir.path().join("site")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = |name: &str| rt.block_on(dmarc::receive(&site, &sample(name))).unwrap();
    assert_eq!(
        got("google.eml"),
        Received::Kept {
            org: "google.com".into(),
            domain: "stalw.art".into(),
            messages: 1,
            passed: 1
        }
    );
    assert!(matches!(
        got("microsoft.eml"),
        Received::Kept { passed: 0, .. }
    ));
    assert!(matches!(
        got("amazon-ses.eml"),
        Received::Kept { passed: 0, .. }
    ));
    // Sent again: kept once.
    assert_eq!(got("google.eml"), Received::Again);
    let reports = rt.block_on(dmarc::recent(&site, 10)).unwrap();
    assert_eq!(reports.len(), 3);
    let outlook = reports.iter().find(|r| r.org == "Outlook.com").unwrap();
    assert_eq!(
        (outlook.messages, outlook.dkim_failed, outlook.spf_failed),
        (1, 1, 1)
    );
    assert_eq!(outlook.failing_sources, "50.223.129.194 1");
    assert!(outlook.begin < outlook.end);
    // Not a report: said so, nothing kept.
    let e = rt
        .block_on(dmarc::receive(&site, b"Subject: hi\r\n\r\nhello\r\n"))
        .unwrap_err();
    assert!(
        e.to_string().contains("not a DMARC aggregate report"),
        "{e}"
    );
    assert_eq!(rt.block_on(dmarc::recent(&site, 10)).unwrap().len(), 3);
    assert_eq!(
        dmarc::record_for("example.org"),
        "_dmarc.example.org. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@example.org\""
    );
}
