//! Micro-benchmarks: signing one request, and CRC32C throughput.

use std::time::SystemTime;

use backbeat::s3::signing::{Credentials, Payload, Signer};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn signing(c: &mut Criterion) {
    let signer = Signer::new(
        &Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        },
        "us-east-1",
    );
    let request = || {
        http::Request::get(
            "/bucket/some/key%20with%20spaces?versionId=3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY",
        )
        .header("host", "s3.example.com:9000")
        .header("x-amz-checksum-mode", "ENABLED")
        .body(())
        .unwrap()
    };
    c.bench_function("sign GetObject (fast path, cached key)", |b| {
        b.iter(|| {
            let mut req = request();
            signer
                .sign(&mut req, Payload::Unsigned, SystemTime::now())
                .unwrap();
            req
        })
    });
    c.bench_function("sign GetObject (aws-sigv4 reference)", |b| {
        b.iter(|| {
            let mut req = request();
            signer
                .sign_reference(&mut req, Payload::Unsigned, SystemTime::now())
                .unwrap();
            req
        })
    });
    c.bench_function("build the request alone (baseline)", |b| b.iter(request));
}

fn crc(c: &mut Criterion) {
    let buf = vec![0xa5u8; 1 << 20];
    let mut g = c.benchmark_group("crc32c");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("1 MiB", |b| {
        b.iter(|| crc32c::crc32c(std::hint::black_box(&buf)))
    });
    g.finish();
}

criterion_group!(benches, signing, crc);
criterion_main!(benches);
