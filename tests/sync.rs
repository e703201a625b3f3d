//! `backbeat sync` between two real S3 servers (moto), through a fault-injecting proxy
//! where a test needs one.

mod common;

use std::time::Duration;

use backbeat::s3::http::ReqBody;
use backbeat::s3::ops::head_object::{HeadObjectError, HeadObjectRequest};
use backbeat::s3::ops::put_object::UploadChecksum;
use backbeat::s3::ops::upload_part::CompletedPart;
use backbeat::s3::ops::ObjectMetadata;
use backbeat::s3::Client;
use common::proxy::{Kind, Proxy};
use common::*;

const MIB: usize = 1024 * 1024;

/// A source object uploaded in parts of 5 MiB + 5 MiB + 1 KiB.
async fn put_multipart(c: &Client, b: &str, key: &str, seed: u64) -> Vec<u8> {
    let parts = [
        data(5 * MIB, seed),
        data(5 * MIB, seed + 1),
        data(1024, seed + 2),
    ];
    let id = c
        .create_multipart_upload(
            b,
            key,
            &ObjectMetadata {
                content_type: Some("application/x-mp".into()),
                ..Default::default()
            },
            &[],
            false,
        )
        .await
        .unwrap();
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let part = c
            .upload_part(
                b,
                key,
                backbeat::s3::ops::upload_part::UploadPartRequest {
                    upload_id: &id,
                    part_number: i as u32 + 1,
                    body: ReqBody::full(p.clone()),
                    length: p.len() as u64,
                    checksum: UploadChecksum::None,
                },
            )
            .await
            .unwrap();
        done.push(CompletedPart {
            crc32c: None,
            ..part
        });
    }
    c.complete_multipart_upload(b, key, &id, &done)
        .await
        .unwrap();
    parts.concat()
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn versioned_bucket_replicates_version_by_version_and_second_run_copies_nothing() {
    let s = servers();
    let (sb, db) = (bucket("sync-src"), bucket("sync-dst"));
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &sb, &db).await;
        let meta = ObjectMetadata {
            content_type: Some("text/plain; charset=utf-8".into()),
            cache_control: Some("no-cache".into()),
            content_disposition: Some("inline".into()),
            content_encoding: Some("identity".into()),
            content_language: Some("de-CH".into()),
            expires: Some("Wed, 21 Oct 2099 07:28:00 GMT".into()),
            user: vec![("owner".into(), "team a".into()), ("n".into(), "1".into())],
            ..Default::default()
        };
        let tags = vec![
            ("class".to_string(), "gold".to_string()),
            ("k 2".to_string(), "a+b".to_string()),
        ];
        for i in 0..3 {
            put(
                &src,
                &sb,
                "docs/report.txt",
                &data(1000 + i, i as u64),
                &meta,
                &tags,
            )
            .await;
        }
        put_data(&src, &sb, "empty", b"").await;
        for key in [
            "a b+c%d?e#f",
            "dir//double/slash",
            "ünïcødé/日本語",
            &"x".repeat(1024),
        ] {
            put(
                &src,
                &sb,
                key,
                &data(300, 7),
                &ObjectMetadata::default(),
                &tags[..1],
            )
            .await;
        }
        // large object above the threshold (copied in ranged parts), and a source multipart
        // object whose layout must be kept
        put(&src, &sb, "big/ranged", &data(11 * MIB + 3, 11), &meta, &[]).await;
        put_multipart(&src, &sb, "big/multipart", 20).await;
        // versions and delete markers interleaved, a second apart (moto's timestamps have
        // one-second resolution)
        put_data(&src, &sb, "churn", b"first version").await;
        glommio::timer::sleep(Duration::from_millis(1100)).await;
        src.delete_object(&sb, "churn", None).await.unwrap();
        glommio::timer::sleep(Duration::from_millis(1100)).await;
        put_data(&src, &sb, "churn", b"back again").await;
        glommio::timer::sleep(Duration::from_millis(1100)).await;
        src.delete_object(&sb, "churn", None).await.unwrap();
    });

    let (code, summary, err) = sync(
        &s.source,
        &sb,
        &s.dest,
        &db,
        &["--multipart-threshold", "8MiB", "--part-size", "5MiB"],
    );
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(n(&summary, "failed"), 0);
    assert_eq!(n(&summary, "versions_found"), 3 + 1 + 4 + 2 + 4);
    assert_eq!(n(&summary, "versions_copied"), 3 + 1 + 4 + 2 + 2);
    assert_eq!(n(&summary, "delete_markers"), 2);

    block_on(async {
        let src = Client::new(endpoint(&s.source), None);
        let dst = Client::new(endpoint(&s.dest), None);
        assert_replicated(&src, &sb, &dst, &db).await;
        assert_replicated_by_boto3(&s.source, &sb, &s.dest, &db);
        // the source's part layout is kept, so the multipart ETag matches
        let sh = src
            .head_object(&sb, "big/multipart", HeadObjectRequest::default())
            .await
            .unwrap();
        let dh = dst
            .head_object(&db, "big/multipart", HeadObjectRequest::default())
            .await
            .unwrap();
        assert_eq!(sh.etag, dh.etag, "multipart ETag preserved");
        assert!(sh.etag.trim_matches('"').ends_with("-3"), "{}", sh.etag);
        // the ranged copy was split in parts of 5 MiB
        let dr = dst
            .head_object(&db, "big/ranged", HeadObjectRequest::default())
            .await
            .unwrap();
        assert!(dr.etag.trim_matches('"').ends_with("-3"), "{}", dr.etag);
        // the latest of "churn" is a delete marker on both sides
        assert!(matches!(
            dst.head_object(&db, "churn", HeadObjectRequest::default())
                .await,
            Err(HeadObjectError::DeleteMarker { .. })
        ));
    });

    let (code, again, err) = sync(
        &s.source,
        &sb,
        &s.dest,
        &db,
        &["--multipart-threshold", "8MiB", "--part-size", "5MiB"],
    );
    assert_eq!(code, 0, "{again}\n{err}");
    assert_eq!(n(&again, "versions_copied"), 0, "{again}");
    assert_eq!(n(&again, "delete_markers"), 0, "{again}");
    assert_eq!(n(&again, "skipped"), n(&summary, "versions_found"));
}

#[test]
fn flipped_byte_is_caught_and_the_corrupt_version_removed() {
    let s = servers();
    let (sb, db) = (bucket("flip-src"), bucket("flip-dst"));
    let proxy = Proxy::start(&s.dest, false);
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &sb, &db).await;
        put_data(&src, &sb, "once", &data(4000, 1)).await;
        put_data(&src, &sb, "always", &data(4000, 2)).await;
        // a large object: the flipped byte lands in a part
        put_data(&src, &sb, "large", &data(6 * MIB, 3)).await;
    });
    proxy.faults.add("PUT", Some("/once"), Kind::FlipByte, 1);
    proxy
        .faults
        .add("PUT", Some("/always"), Kind::FlipByte, 100);
    proxy
        .faults
        .add("PUT", Some("/large?partNumber=2"), Kind::FlipByte, 1);
    let (code, summary, err) = sync(
        &s.source,
        &sb,
        &proxy.url,
        &db,
        &[
            "--attempts",
            "3",
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
            "--destination-verify-after-write",
        ],
    );
    assert_eq!(code, 1, "a version failed: {summary}\n{err}");
    assert!(
        proxy.faults.hits(Kind::FlipByte) >= 3 + 2,
        "{:?}",
        proxy.faults.log.lock().unwrap()
    );
    assert_eq!(n(&summary, "versions_copied"), 2, "{summary}");
    assert_eq!(n(&summary, "failed"), 1);
    assert!(n(&summary, "checksum_mismatches") >= 5, "{summary}");
    let f = &summary["failures"][0];
    assert_eq!(f["key"], "always");
    assert_eq!(f["code"], "ChecksumMismatch");
    assert_eq!(f["attempts"], 3);
    block_on(async {
        let src = Client::new(endpoint(&s.source), None);
        let dst = Client::new(endpoint(&s.dest), None);
        assert!(read_all(&dst, &db, "once", None).await == read_all(&src, &sb, "once", None).await);
        assert!(
            read_all(&dst, &db, "large", None).await == read_all(&src, &sb, "large", None).await
        );
        let versions = all_versions(&dst, &db).await;
        assert_eq!(versions["once"].len(), 1, "the corrupt version was deleted");
        assert_eq!(versions["large"].len(), 1);
        assert!(
            !versions.contains_key("always"),
            "no corrupt version is left: {:?}",
            versions.get("always")
        );
    });
}

#[test]
fn retries_slowdown_and_resets_fails_permanent_errors_at_once() {
    let s = servers();
    let (sb, db) = (bucket("retry-src"), bucket("retry-dst"));
    let src_proxy = Proxy::start(&s.source, false);
    let dst_proxy = Proxy::start(&s.dest, false);
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &sb, &db).await;
        for k in ["a", "b", "c", "denied"] {
            put(
                &src,
                &sb,
                k,
                &data(5000, k.len() as u64),
                &ObjectMetadata::default(),
                &[],
            )
            .await;
        }
    });
    src_proxy.faults.add("GET", Some("/a?"), Kind::SlowDown, 2);
    src_proxy.faults.add("GET", Some("/b?"), Kind::Reset, 1);
    dst_proxy.faults.add("PUT", Some("/c"), Kind::SlowDown, 1);
    dst_proxy.faults.add("PUT", Some("/c"), Kind::Reset, 1);
    src_proxy
        .faults
        .add("GET", Some("/denied?"), Kind::Forbidden, 100);
    let (code, summary, err) = sync(&src_proxy.url, &sb, &dst_proxy.url, &db, &[]);
    assert_eq!(code, 1, "{summary}\n{err}");
    assert_eq!(n(&summary, "versions_copied"), 3, "{summary}");
    assert!(n(&summary, "retries") >= 5, "{summary}");
    let f = &summary["failures"][0];
    assert_eq!(f["key"], "denied");
    assert_eq!(f["code"], "AccessDenied");
    assert_eq!(f["retryable"], false);
    assert_eq!(f["attempts"], 1, "a permanent error is not retried");
    assert_eq!(src_proxy.faults.hits(Kind::Forbidden), 1);
    assert_eq!(src_proxy.faults.hits(Kind::SlowDown), 2);
    assert_eq!(dst_proxy.faults.hits(Kind::Reset), 1);
    assert_eq!(src_proxy.faults.hits(Kind::Reset), 1);
    // c was new at the destination: its first PUT was the conditional one (no HEAD before
    // it); the retries after the 503 and the reset asked the destination first.
    let lines = dst_proxy.request_lines();
    let c_requests: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("/{db}/c")))
        .collect();
    let methods: Vec<&str> = c_requests
        .iter()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        methods,
        ["PUT", "HEAD", "PUT", "HEAD", "PUT"],
        "{c_requests:#?}"
    );
    block_on(async {
        let src = Client::new(endpoint(&s.source), None);
        let dst = Client::new(endpoint(&s.dest), None);
        for k in ["a", "b", "c"] {
            assert!(
                read_all(&dst, &db, k, None).await == read_all(&src, &sb, k, None).await,
                "{k}"
            );
            assert_eq!(
                all_versions(&dst, &db).await[k].len(),
                1,
                "{k}: retries wrote one version"
            );
        }
    });
}

#[test]
fn tls_destination_behind_a_self_signed_ca() {
    let s = servers();
    let (sb, db) = (bucket("tls-src"), bucket("tls-dst"));
    let proxy = Proxy::start(&s.dest, true);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, proxy.ca_pem.as_ref().unwrap()).unwrap();
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &sb, &db).await;
        put_data(&src, &sb, "secret", &data(100_000, 9)).await;
    });
    // Without the CA the certificate is rejected: verification is on by default.
    let (code, out, err) = backbeat(&[
        "sync",
        &format!("s3://{sb}"),
        &format!("s3://{db}"),
        "--source-endpoint",
        &s.source,
        "--destination-endpoint",
        &proxy.url,
    ]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("TLS") && err.contains(&proxy.url), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    let ca_s = ca.to_str().unwrap();
    let (code, summary, err) = sync(
        &s.source,
        &sb,
        &proxy.url,
        &db,
        &["--destination-ca-file", ca_s],
    );
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(n(&summary, "versions_copied"), 1);
    block_on(async {
        let src = Client::new(endpoint(&s.source), None);
        let dst = Client::new(endpoint(&s.dest), None);
        assert_replicated(&src, &sb, &dst, &db).await;
        assert_replicated_by_boto3(&s.source, &sb, &s.dest, &db);
    });
}

#[test]
fn bad_input_gives_one_clear_line() {
    let s = servers();
    let sb = bucket("args-src");
    block_on(async {
        let src = Client::new(endpoint(&s.source), None);
        make_bucket(&src, &sb, true).await;
    });
    let src_url = format!("s3://{sb}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "sync",
                "bucket-without-scheme",
                "s3://x",
                "--source-endpoint",
                &s.source,
                "--destination-endpoint",
                &s.dest,
            ],
            "s3://BUCKET",
        ),
        (
            vec![
                "sync",
                &src_url,
                "s3://missing-bucket-here",
                "--source-endpoint",
                &s.source,
                "--destination-endpoint",
                &s.dest,
            ],
            "does not exist",
        ),
        (
            vec![
                "sync",
                &src_url,
                "s3://x",
                "--source-endpoint",
                "http://127.0.0.1:1",
                "--destination-endpoint",
                &s.dest,
            ],
            "cannot reach the source endpoint",
        ),
        (
            vec![
                "sync",
                &src_url,
                "s3://x",
                "--source-endpoint",
                &s.source,
                "--destination-endpoint",
                &s.dest,
                "--read-buffer",
                "1KiB",
            ],
            "--read-buffer must be between 8KiB and 16MiB",
        ),
        (
            vec![
                "sync",
                &src_url,
                "s3://x",
                "--source-endpoint",
                &s.source,
                "--destination-endpoint",
                &s.dest,
                "--window",
                "10KiB",
            ],
            "--window must be 0 (no bound) or at least 1MiB",
        ),
        (
            vec![
                "sync",
                &src_url,
                "s3://x",
                "--source-endpoint",
                "ftp://h",
                "--destination-endpoint",
                &s.dest,
            ],
            "must start with http:// or https://",
        ),
        (
            vec![
                "sync",
                &src_url,
                "s3://x",
                "--source-endpoint",
                &s.source,
                "--destination-endpoint",
                &s.dest,
                "--part-size",
                "1MiB",
            ],
            "at least 5MiB",
        ),
        (
            vec![
                "sync",
                &src_url,
                "s3://x",
                "--source-endpoint",
                &s.source,
                "--destination-endpoint",
                &s.dest,
                "--source-profile",
                "nope",
            ],
            "profile \"nope\" not found",
        ),
    ];
    for (args, expect) in cases {
        let (code, out, err) = backbeat(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err}"
        );
        assert!(!err.contains("SKTEST"), "no secret in errors");
    }
}

#[test]
fn unversioned_destination_with_profile_credentials_and_rejected_keys() {
    let s = servers();
    let (fs_url, fs_creds) = s3fs();
    let (sb, db) = (bucket("fs-src"), bucket("fs-dst"));
    block_on(async {
        let src = Client::new(endpoint(&s.source), None);
        make_bucket(&src, &sb, true).await;
        put(
            &src,
            &sb,
            "k1",
            &data(2000, 1),
            &ObjectMetadata {
                content_type: Some("a/b".into()),
                ..Default::default()
            },
            &[],
        )
        .await;
        put(
            &src,
            &sb,
            "k1",
            &data(3000, 2),
            &ObjectMetadata {
                content_type: Some("a/c".into()),
                ..Default::default()
            },
            &[],
        )
        .await;
        put_data(&src, &sb, "dir/k2", &data(7 * MIB, 3)).await;
        put_data(&src, &sb, "gone", b"deleted later").await;
        glommio::timer::sleep(Duration::from_millis(1100)).await;
        src.delete_object(&sb, "gone", None).await.unwrap();
        let fs = Client::new(
            backbeat::s3::Endpoint::new(backbeat::s3::EndpointConfig::new(
                &fs_url,
                "us-east-1",
                fs_creds.clone(),
            ))
            .unwrap(),
            None,
        );
        fs.create_bucket(&db).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let cred_file = dir.path().join("credentials");
    std::fs::write(
        &cred_file,
        format!("[fs]\naws_access_key_id = {}\naws_secret_access_key = {}\n[wrong]\naws_access_key_id = {}\naws_secret_access_key = not-the-secret\n", fs_creds.access_key_id, fs_creds.secret_access_key, fs_creds.access_key_id),
    )
    .unwrap();
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", cred_file.to_str().unwrap()),
        ("AWS_CONFIG_FILE", "/nonexistent"),
    ];
    let (sbu, dbu) = (format!("s3://{sb}"), format!("s3://{db}"));
    let base = [
        "sync",
        &sbu,
        &dbu,
        "--source-endpoint",
        &s.source,
        "--destination-endpoint",
        &fs_url,
        "--json",
        "--multipart-threshold",
        "5MiB",
    ];
    // rejected keys: one line naming the endpoint and what to fix, the secret never shown
    let mut args = base.to_vec();
    args.extend(["--destination-profile", "wrong"]);
    let (code, out, err) = backbeat_env(&args, &env);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("rejected the credentials") && err.contains(&fs_url),
        "{err}"
    );
    assert!(
        !err.contains("not-the-secret") && !err.contains(&fs_creds.secret_access_key),
        "{err}"
    );
    // the right profile: the latest state arrives (versions in order end with the last one)
    let mut args = base.to_vec();
    args.extend(["--destination-profile", "fs"]);
    let (code, out, err) = backbeat_env(&args, &env);
    assert_eq!(code, 0, "{out}{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(n(&summary, "failed"), 0);
    block_on(async {
        let src = Client::new(endpoint(&s.source), None);
        let fs = Client::new(
            backbeat::s3::Endpoint::new(backbeat::s3::EndpointConfig::new(
                &fs_url,
                "us-east-1",
                fs_creds.clone(),
            ))
            .unwrap(),
            None,
        );
        for k in ["k1", "dir/k2"] {
            assert!(
                read_all(&fs, &db, k, None).await == read_all(&src, &sb, k, None).await,
                "{k}"
            );
        }
        let h = fs
            .head_object(&db, "k1", HeadObjectRequest::default())
            .await
            .unwrap();
        assert_eq!(h.metadata.content_type.as_deref(), Some("a/c"));
        assert!(matches!(
            fs.head_object(&db, "gone", HeadObjectRequest::default())
                .await,
            Err(HeadObjectError::NotFound)
        ));
    });
    // a second run copies nothing
    let (code, out, err) = backbeat_env(&args, &env);
    assert_eq!(code, 0, "{out}{err}");
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        n(&again, "versions_copied") + n(&again, "delete_markers"),
        0,
        "{again}"
    );
}

#[test]
fn failed_multipart_copy_leaves_no_upload_behind() {
    let s = servers();
    let (sb, db) = (bucket("orphan-src"), bucket("orphan-dst"));
    let proxy = Proxy::start(&s.dest, false);
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &sb, &db).await;
        put_data(&src, &sb, "big", &data(12 * MIB, 4)).await;
    });
    // Part 2 is refused: permanent, the copy fails at once and must abort its upload.
    proxy
        .faults
        .add("PUT", Some("partNumber=2"), Kind::Forbidden, 100);
    let (code, summary, err) = sync(
        &s.source,
        &sb,
        &proxy.url,
        &db,
        &["--multipart-threshold", "5MiB", "--part-size", "5MiB"],
    );
    assert_eq!(code, 1, "{summary}\n{err}");
    assert_eq!(summary["failures"][0]["code"], "AccessDenied");
    assert!(
        proxy
            .faults
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|(l, _)| l.starts_with("DELETE ") && l.contains("uploadId=")),
        "the upload was aborted"
    );
    block_on(async {
        let dst = Client::new(endpoint(&s.dest), None);
        let open = dst.list_multipart_uploads(&db, None).await.unwrap();
        let seen = proxy.request_lines();
        assert!(
            open.is_empty(),
            "orphan uploads: {open:?}\nrequests: {seen:#?}\nsync said: {err}"
        );
        assert!(matches!(
            dst.head_object(&db, "big", HeadObjectRequest::default())
                .await,
            Err(HeadObjectError::NotFound)
        ));
    });
    // And the listing does see an upload left open on purpose, so the check above can fail.
    block_on(async {
        let dst = Client::new(endpoint(&s.dest), None);
        let id = dst
            .create_multipart_upload(&db, "left-open", &ObjectMetadata::default(), &[], false)
            .await
            .unwrap();
        let open = dst.list_multipart_uploads(&db, None).await.unwrap();
        let open: Vec<_> = open
            .iter()
            .map(|u| (u.key.as_str(), u.upload_id.as_str()))
            .collect();
        assert_eq!(open, vec![("left-open", id.as_str())]);
        dst.abort_multipart_upload(&db, "left-open", &id)
            .await
            .unwrap();
    });
}

/// The data path's tuning knobs at their smallest: 8 KiB frames, 64 KiB socket buffers, a
/// 1 MiB window (one large object at a time per shard) and 5 MiB parts still move every byte.
#[test]
fn small_frames_socket_buffers_and_window_move_the_same_bytes() {
    let s = servers();
    let (sb, db) = (bucket("knobs-src"), bucket("knobs-dst"));
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &sb, &db).await;
        put_data(&src, &sb, "large", &data(12 << 20, 1)).await;
        for i in 0..4 {
            put_data(
                &src,
                &sb,
                &format!("mid-{i}"),
                &data((1 << 20) + i * 7, i as u64),
            )
            .await;
        }
        put_data(&src, &sb, "small", &data(3000, 5)).await;
    });
    let (code, summary, err) = sync(
        &s.source,
        &sb,
        &s.dest,
        &db,
        &[
            "--read-buffer",
            "8KiB",
            "--socket-buffer",
            "64KiB",
            "--window",
            "1MiB",
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
        ],
    );
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(n(&summary, "versions_copied"), 6, "{summary}");
    block_on(async {
        let src = Client::new(endpoint(&s.source), None);
        let dst = Client::new(endpoint(&s.dest), None);
        assert_replicated(&src, &sb, &dst, &db).await;
        assert_replicated_by_boto3(&s.source, &sb, &s.dest, &db);
    });
}

/// A slow link towards the destination (the proxy forwards request bodies at 192 KiB/s) and
/// an idle timeout of 3 s: uploads that last several times the timeout succeed, because
/// bytes keep moving (written, then leaving the socket buffers while the answer is awaited).
#[test]
fn uploads_that_keep_moving_outlast_the_idle_timeout() {
    let s = servers();
    let (sb, db) = (bucket("slow-src"), bucket("slow-dst"));
    let dst_proxy = Proxy::start_throttled(&s.dest, 192 * 1024);
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &sb, &db).await;
        for (k, len) in [("big", 2 << 20), ("small", 1 << 20)] {
            put(&src, &sb, k, &data(len, 7), &ObjectMetadata::default(), &[]).await;
        }
    });
    let started = std::time::Instant::now();
    let flags = ["--io-idle-timeout", "3", "--attempts", "1"];
    let (code, summary, err) = sync(&s.source, &sb, &dst_proxy.url, &db, &flags);
    let took = started.elapsed();
    eprintln!("3 MiB over 192 KiB/s with a 3 s idle timeout: {took:?}");
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(n(&summary, "versions_copied"), 2, "{summary}");
    assert!(
        took > Duration::from_secs(8),
        "the link was slow enough to matter: {took:?}"
    );
    assert_replicated_by_boto3(&s.source, &sb, &s.dest, &db);
}

/// The same slow link with a whole-request deadline of 2 s (`--request-deadline 2`): the
/// upload keeps moving, so only the deadline ends it, and the failure says so.
#[test]
fn a_request_deadline_ends_an_upload_that_keeps_moving() {
    let s = servers();
    let (sb, db) = (bucket("deadline-src"), bucket("deadline-dst"));
    let dst_proxy = Proxy::start_throttled(&s.dest, 192 * 1024);
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &sb, &db).await;
        put(
            &src,
            &sb,
            "big",
            &data(2 << 20, 7),
            &ObjectMetadata::default(),
            &[],
        )
        .await;
    });
    let flags = [
        "--io-idle-timeout",
        "3",
        "--attempts",
        "1",
        "--request-deadline",
        "2",
    ];
    let (code, summary, err) = sync(&s.source, &sb, &dst_proxy.url, &db, &flags);
    assert_ne!(code, 0, "{summary}\n{err}");
    assert_eq!(n(&summary, "failed"), 1, "{summary}");
    assert!(
        format!("{summary}{err}").contains("longer than its deadline (2 s"),
        "the failure says why: {summary}\n{err}"
    );
}

/// A source that trickles its answer (a byte every 250 ms: the idle timeout never passes)
/// is given up on by the rate guard after 2 s of waiting, each attempt, and the failure
/// says why. At full timings: the byte every 59 s against the default 60 s idle
/// timeout, given up on after 60 s each attempt.
#[test]
fn a_trickling_server_fails_the_rate_guard_and_says_why() {
    let s = servers();
    let (sb, db) = (bucket("drip-src"), bucket("drip-dst"));
    let src_proxy = Proxy::start(&s.source, false);
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &sb, &db).await;
        put(
            &src,
            &sb,
            "k",
            &data(4000, 3),
            &ObjectMetadata::default(),
            &[],
        )
        .await;
    });
    src_proxy.faults.add("GET", Some("/k?"), Kind::Drip, 2);
    let (every_ms, idle) = timing((250, "2"), (59_000, "60"));
    src_proxy
        .faults
        .drip_every_ms
        .store(every_ms, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let flags = [
        "--io-idle-timeout",
        idle,
        "--min-rate",
        "1KiB",
        "--attempts",
        "2",
    ];
    let (code, summary, err) = sync(&src_proxy.url, &sb, &s.dest, &db, &flags);
    assert_eq!(code, 1, "{summary}\n{err}");
    let f = &summary["failures"][0];
    assert_eq!(f["code"], "Timeout", "{summary}");
    assert_eq!(f["attempts"], 2, "{summary}");
    let message = f["message"].as_str().unwrap_or("");
    assert!(message.contains("slower than min_rate"), "{message}");
    assert_eq!(src_proxy.faults.hits(Kind::Drip), 2);
    eprintln!(
        "a byte every {every_ms} ms, idle timeout {idle} s: given up on after {:?} (2 attempts)",
        started.elapsed()
    );
}

#[test]
fn sync_bandwidth_holds_the_copy_to_the_rate_and_a_bad_rate_is_named() {
    let s = servers();
    let (sb, db) = (bucket("bw-src"), bucket("bw-dst"));
    block_on(async {
        let (src, _) = versioned_pair(&s, &sb, &db).await;
        for i in 0..4 {
            put_data(&src, &sb, &format!("k{i}"), &data(1 << 20, i)).await;
        }
    });
    let (code, _, err) = backbeat(&["sync", "s3://a", "s3://b", "--bandwidth", "fast"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--bandwidth") && err.contains("\"fast\""),
        "{err}"
    );
    let t = std::time::Instant::now();
    let (code, out, err) = sync(&s.source, &sb, &s.dest, &db, &["--bandwidth", "1MiB/s"]);
    let took = t.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{err}");
    assert_eq!(n(&out, "versions_copied"), 4, "{out}");
    assert!(took >= 3.0, "4 MiB at 1 MiB/s took {took:.1} s");
}

/// The destination is listed alongside the source: a key it holds nothing of is written
/// with no HEAD first (GET and a conditional PUT), a key it holds is asked for as before.
/// Counted at a proxy in front of the destination; boto3 compares both sides.
#[test]
fn keys_absent_at_the_destination_cost_no_head() {
    let s = servers();
    let (sb, db) = (bucket("abs-src"), bucket("abs-dst"));
    block_on(async {
        let (src, _) = versioned_pair(&s, &sb, &db).await;
        for i in 0..20 {
            put_data(&src, &sb, &format!("k{i:02}"), &data(100, i)).await;
        }
        put_data(&src, &sb, "k15", &data(200, 99)).await;
    });
    // The first ten keys are at the destination already.
    let (code, first, err) = sync(&s.source, &format!("{sb}/k0"), &s.dest, &db, &[]);
    assert_eq!(code, 0, "{first}\n{err}");
    assert_eq!(n(&first, "versions_copied"), 10, "{first}");

    let proxy = Proxy::start(&s.dest, false);
    let (code, out, err) = sync(&s.source, &sb, &proxy.url, &db, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        n(&out, "versions_copied"),
        11,
        "k10..k19, two of k15: {out}"
    );
    assert_eq!(n(&out, "skipped"), 10, "{out}");
    let lines = proxy.request_lines();
    let of_keys = |method: &str| -> Vec<&String> {
        let at = format!("{method} /{db}/k");
        lines.iter().filter(|l| l.starts_with(&at)).collect()
    };
    let heads = of_keys("HEAD");
    assert_eq!(
        heads.len(),
        10,
        "a HEAD for each key already there only: {lines:#?}"
    );
    assert!(heads.iter().all(|l| l.contains("/k0")), "{heads:#?}");
    assert_eq!(of_keys("PUT").len(), 11, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("GET /") && l.contains("versions")),
        "the listing: {lines:#?}"
    );
    assert_replicated_by_boto3(&s.source, &sb, &s.dest, &db);
}
