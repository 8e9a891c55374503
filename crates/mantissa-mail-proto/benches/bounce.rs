//! Bounce parsing speed: every sample of `tests/samples/` parsed once per
//! iteration; criterion reports messages per second (`thrpt`).
//!
//! Run with: cargo bench -p mantissa-mail-proto

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn samples() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let mut out = Vec::new();
    for sub in ["sisimai", "bounceparser"] {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(sub))
            .expect("the samples folder")
            .map(|e| e.expect("a sample").path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        out.extend(files.iter().map(|p| std::fs::read(p).expect("a sample")));
    }
    out
}

fn bench(c: &mut Criterion) {
    let samples = samples();
    let mut group = c.benchmark_group("bounce");
    group.throughput(Throughput::Elements(samples.len() as u64));
    group.bench_function("parse every sample", |b| {
        b.iter(|| {
            for raw in &samples {
                std::hint::black_box(mantissa_mail_proto::parse(std::hint::black_box(raw)).ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
