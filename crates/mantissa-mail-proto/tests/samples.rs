//! Every real message in `tests/samples/` (where each came from:
//! `tests/samples/SOURCES.md`) read as `tests/samples/expected.tsv` says:
//! its kind, and for each failing or complaining recipient, in order, the
//! address, permanent or temporary, the status code and the reason class.

use std::collections::BTreeMap;
use std::path::Path;

use mantissa_mail_proto::{Kind, Reason, Severity, parse};

#[derive(Debug, PartialEq)]
struct Row {
    address: String,
    severity: Severity,
    status: Option<String>,
    reason: Reason,
}

fn kind(text: &str) -> Kind {
    match text {
        "bounce" => Kind::Bounce,
        "complaint" => Kind::Complaint,
        "auto_reply" => Kind::AutoReply,
        "not_bounce" => Kind::NotBounce,
        other => panic!("unknown kind {other:?} in expected.tsv"),
    }
}

fn severity(text: &str) -> Severity {
    match text {
        "permanent" => Severity::Permanent,
        "temporary" => Severity::Temporary,
        other => panic!("unknown severity {other:?} in expected.tsv"),
    }
}

fn reason(text: &str) -> Reason {
    match text {
        "unknown_user" => Reason::UnknownUser,
        "disabled" => Reason::Disabled,
        "mailbox_full" => Reason::MailboxFull,
        "blocked" => Reason::Blocked,
        "domain_not_found" => Reason::DomainNotFound,
        "message_too_large" => Reason::MessageTooLarge,
        "expired" => Reason::Expired,
        "complaint" => Reason::Complaint,
        "other" => Reason::Other,
        other => panic!("unknown reason {other:?} in expected.tsv"),
    }
}

/// file → (kind, rows), from expected.tsv.
fn table() -> BTreeMap<String, (Kind, Vec<Row>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let text = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut table: BTreeMap<String, (Kind, Vec<Row>)> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 6, "expected.tsv: six columns in {line:?}");
        let entry = table
            .entry(cols[0].to_string())
            .or_insert_with(|| (kind(cols[1]), Vec::new()));
        assert_eq!(entry.0, kind(cols[1]), "one kind per file: {line:?}");
        if cols[2] != "-" {
            entry.1.push(Row {
                address: cols[2].to_string(),
                severity: severity(cols[3]),
                status: (cols[4] != "-").then(|| cols[4].to_string()),
                reason: reason(cols[5]),
            });
        }
    }
    table
}

#[test]
fn every_sample_reads_as_the_table_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let table = table();
    assert!(table.len() >= 100, "the table has {} messages", table.len());
    let mut failures = Vec::new();
    for (file, (kind, rows)) in &table {
        let raw = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let report = match parse(&raw) {
            Ok(report) => report,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        let got: Vec<Row> = report
            .recipients
            .iter()
            .map(|r| Row {
                address: r.address.clone(),
                severity: r.severity,
                status: r.status.clone(),
                reason: r.reason,
            })
            .collect();
        if report.kind != *kind || got != *rows {
            failures.push(format!(
                "{file}:\n  expected {kind:?} {rows:?}\n  got      {:?} {got:?}",
                report.kind
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} samples differ from expected.tsv:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

#[test]
fn every_sample_file_is_in_the_table() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let table = table();
    for sub in ["sisimai", "bounceparser"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".eml") {
                let key = format!("{sub}/{name}");
                assert!(table.contains_key(&key), "{key} has no row in expected.tsv");
            }
        }
    }
}

#[test]
fn a_bounce_names_the_returned_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let raw = std::fs::read(dir.join("sisimai/lhost-qmail-01.eml")).unwrap();
    let report = parse(&raw).unwrap();
    assert_eq!(
        report.original_message_id.as_deref(),
        Some("000000000.9999999999999.JavaMail.postmaster@mailhub")
    );
    let raw = std::fs::read(dir.join("sisimai/arf-18.eml")).unwrap();
    assert_eq!(
        parse(&raw).unwrap().feedback_type.as_deref(),
        Some("auth-failure")
    );
}

#[test]
fn a_bounce_to_a_verp_address_names_its_recipient() {
    // A real Postfix bounce, readdressed to a VERP return path.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let raw = std::fs::read_to_string(dir.join("sisimai/lhost-postfix-05.eml")).unwrap();
    let raw = format!("Delivered-To: bounces+q81.kijitora=example.org@example.co.jp\n{raw}");
    let report = parse(raw.as_bytes()).unwrap();
    let verp = report.verp.expect("the VERP address is read");
    assert_eq!(verp.tag, "q81");
    assert_eq!(verp.recipient, "kijitora=example.org".replace('=', "@"));
    assert_eq!(report.recipients[0].address, verp.recipient);
}
