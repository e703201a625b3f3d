//! Shared test harness: the real S3 servers started by `tests/run.sh`, clients on a glommio
//! executor, bucket comparison, and a fault-injecting TCP proxy (flip a byte, answer 503
//! SlowDown, reset connections) with an optional TLS front end behind a self-signed CA.
#![allow(dead_code)]

pub mod kafka;
pub mod proxy;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use backbeat::s3::ops::get_object::GetObjectRequest;
use backbeat::s3::ops::head_object::HeadObjectRequest;
use backbeat::s3::ops::list_object_versions::{
    sort_newest_first, ListObjectVersionsRequest, ListedVersion,
};
use backbeat::s3::ops::ObjectMetadata;
use backbeat::s3::{Client, Credentials, Endpoint, EndpointConfig};

/// URLs of the two S3 servers (source site, destination site).
pub struct Servers {
    pub source: String,
    pub dest: String,
}

/// The servers `tests/run.sh` started. Missing servers fail the test: never a silent skip.
pub fn servers() -> Servers {
    let get = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: these tests need two real S3 servers; run them with `bash tests/run.sh`, which installs and starts moto")
        })
    };
    Servers {
        source: get("BACKBEAT_TEST_S3_SOURCE"),
        dest: get("BACKBEAT_TEST_S3_DEST"),
    }
}

/// `short` in CI; `full` with `BACKBEAT_TEST_FULL_TIMINGS=1`: the long fault rows run at the
/// timings their issue names (minutes each) when asked, and shortened otherwise.
pub fn timing<T>(short: T, full: T) -> T {
    if std::env::var("BACKBEAT_TEST_FULL_TIMINGS").is_ok_and(|v| v == "1") {
        full
    } else {
        short
    }
}

/// s3s-fs (unversioned, checks signatures): (URL, credentials).
pub fn s3fs() -> (String, Credentials) {
    let get = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with `bash tests/run.sh`, which installs and starts s3s-fs"))
    };
    (
        get("BACKBEAT_TEST_S3FS"),
        Credentials {
            access_key_id: get("BACKBEAT_TEST_S3FS_ACCESS_KEY"),
            secret_access_key: get("BACKBEAT_TEST_S3FS_SECRET_KEY"),
            session_token: None,
        },
    )
}

/// A client of s3s-fs.
pub fn s3fs_client(url: &str, creds: &Credentials) -> Client {
    let config = EndpointConfig::new(url, "us-east-1", creds.clone());
    Client::new(Endpoint::new(config).unwrap(), None)
}

/// The environment that makes `creds` the AWS profile `name` of a backbeat process (a
/// shared credentials file in `dir`).
pub fn profile_env(
    dir: &std::path::Path,
    name: &str,
    creds: &Credentials,
) -> Vec<(&'static str, String)> {
    let file = dir.join("credentials");
    let text = format!(
        "[{name}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        creds.access_key_id, creds.secret_access_key
    );
    std::fs::write(&file, text).unwrap();
    vec![
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            file.to_string_lossy().into_owned(),
        ),
        ("AWS_CONFIG_FILE", "/nonexistent".to_string()),
    ]
}

pub fn creds() -> Credentials {
    Credentials {
        access_key_id: "AKTEST".into(),
        secret_access_key: "SKTEST/secret".into(),
        session_token: None,
    }
}

pub fn endpoint(url: &str) -> std::sync::Arc<Endpoint> {
    Endpoint::new(EndpointConfig::new(url, "us-east-1", creds())).unwrap()
}

/// A bucket name unique to this process and call.
pub fn bucket(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs a future on a fresh glommio executor.
pub fn block_on<T, F: std::future::Future<Output = T>>(f: F) -> T {
    backbeat::shard::block_on(f).expect("glommio executor")
}

/// PUTs bytes with their CRC32C; returns the version id on a versioned bucket.
pub async fn put(
    c: &Client,
    b: &str,
    key: &str,
    body: &[u8],
    meta: &ObjectMetadata,
    tags: &[(String, String)],
) -> Option<String> {
    use backbeat::s3::http::ReqBody;
    use backbeat::s3::ops::put_object::{PutObjectRequest, UploadChecksum};
    c.put_object(
        b,
        key,
        PutObjectRequest {
            body: ReqBody::full(body.to_vec()),
            length: body.len() as u64,
            metadata: meta,
            tags,
            checksum: UploadChecksum::Header(backbeat::s3::checksum::crc32c(body)),
            if_none_match: false,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("PUT {key}: {e}"))
    .version_id
}

/// PUTs bytes without metadata or tags.
pub async fn put_data(c: &Client, b: &str, key: &str, body: &[u8]) -> Option<String> {
    put(c, b, key, body, &ObjectMetadata::default(), &[]).await
}

/// Clients of both servers, with a fresh versioned bucket on each.
pub async fn versioned_pair(s: &Servers, sb: &str, db: &str) -> (Client, Client) {
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    make_bucket(&src, sb, true).await;
    make_bucket(&dst, db, true).await;
    (src, dst)
}

pub async fn make_bucket(c: &Client, b: &str, versioned: bool) {
    c.create_bucket(b).await.unwrap();
    if versioned {
        c.put_bucket_versioning(b, true).await.unwrap();
    }
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Every entry of a bucket, per key, newest first.
pub async fn all_versions(c: &Client, b: &str) -> BTreeMap<String, Vec<ListedVersion>> {
    let mut out: BTreeMap<String, Vec<ListedVersion>> = BTreeMap::new();
    let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
    loop {
        let page = c
            .list_object_versions(
                b,
                ListObjectVersionsRequest {
                    prefix: None,
                    key_marker: km.as_deref(),
                    version_id_marker: vm.as_deref(),
                    max_keys: Some(1000),
                },
            )
            .await
            .unwrap();
        for v in page.versions {
            out.entry(v.key.clone()).or_default().push(v);
        }
        if !page.is_truncated {
            break;
        }
        km = page.next_key_marker;
        vm = page.next_version_id_marker;
    }
    for list in out.values_mut() {
        sort_newest_first(list);
    }
    out
}

pub async fn read_all(c: &Client, b: &str, key: &str, vid: Option<&str>) -> Vec<u8> {
    let mut g = c
        .get_object(
            b,
            key,
            GetObjectRequest {
                version_id: vid,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("GET {key} {vid:?}: {e}"));
    let mut out = Vec::new();
    while let Some(chunk) = g.body.data().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn comparable(m: &ObjectMetadata) -> ObjectMetadata {
    let mut m = m.clone();
    m.user.retain(|(k, _)| !k.starts_with("backbeat-"));
    m
}

/// Asserts that `dst` holds the same versions as `src`, key by key, in the same order,
/// with equal bytes, metadata and tags (and delete markers at the same places).
pub async fn assert_replicated(src: &Client, sb: &str, dst: &Client, db: &str) {
    let s = all_versions(src, sb).await;
    let d = all_versions(dst, db).await;
    assert_eq!(
        s.keys().collect::<Vec<_>>(),
        d.keys().collect::<Vec<_>>(),
        "same keys"
    );
    for (key, sv) in &s {
        let dv = &d[key];
        // moto lists versions and delete markers apart and stamps them to the second, so the
        // destination's interleaving (written within one second) cannot be read back: compare
        // the versions in order, the number of delete markers, and the latest entry.
        let real = |l: &Vec<ListedVersion>| {
            l.iter()
                .filter(|v| !v.delete_marker)
                .cloned()
                .collect::<Vec<_>>()
        };
        let markers = |l: &Vec<ListedVersion>| l.iter().filter(|v| v.delete_marker).count();
        let latest_is_marker =
            |l: &Vec<ListedVersion>| l.iter().find(|v| v.is_latest).map(|v| v.delete_marker);
        let (sr, dr) = (real(sv), real(dv));
        assert_eq!(
            sr.iter().map(|v| v.size).collect::<Vec<_>>(),
            dr.iter().map(|v| v.size).collect::<Vec<_>>(),
            "versions of {key:?}, newest first"
        );
        assert_eq!(markers(sv), markers(dv), "delete markers of {key:?}");
        assert_eq!(
            latest_is_marker(sv),
            latest_is_marker(dv),
            "latest entry of {key:?}"
        );
        for (a, b) in sr.iter().zip(&dr) {
            let sbytes = read_all(src, sb, key, Some(&a.version_id)).await;
            let dbytes = read_all(dst, db, key, Some(&b.version_id)).await;
            assert!(
                sbytes == dbytes,
                "bytes of {key:?} version {} differ",
                a.version_id
            );
            let sh = src
                .head_object(
                    sb,
                    key,
                    HeadObjectRequest {
                        version_id: Some(&a.version_id),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let dh = dst
                .head_object(
                    db,
                    key,
                    HeadObjectRequest {
                        version_id: Some(&b.version_id),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(
                comparable(&sh.metadata),
                comparable(&dh.metadata),
                "metadata of {key:?}"
            );
            assert_eq!(
                dh.user_meta("backbeat-source-version-id"),
                Some(a.version_id.as_str()),
                "source version id of {key:?}"
            );
            let st = src
                .get_object_tagging(sb, key, Some(&a.version_id))
                .await
                .unwrap();
            let dt = dst
                .get_object_tagging(db, key, Some(&b.version_id))
                .await
                .unwrap();
            assert_eq!(st, dt, "tags of {key:?}");
        }
    }
}

/// Runs the backbeat binary and returns (exit code, stdout, stderr).
pub fn backbeat(args: &[&str]) -> (i32, String, String) {
    backbeat_env(args, &[])
}

/// Runs the backbeat binary with extra environment variables.
pub fn backbeat_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_backbeat"));
    cmd.args(args)
        .envs(env.iter().copied())
        .env("AWS_ACCESS_KEY_ID", "AKTEST")
        .env("AWS_SECRET_ACCESS_KEY", "SKTEST/secret")
        .env_remove("AWS_PROFILE");
    output(&mut cmd)
}

/// Runs a command to its end: (exit code, stdout, stderr).
pub fn output(cmd: &mut std::process::Command) -> (i32, String, String) {
    let out = cmd.output().expect("run the command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `backbeat sync --json` between two endpoints; returns (exit code, summary JSON, stderr).
pub fn sync(
    src_url: &str,
    sb: &str,
    dst_url: &str,
    db: &str,
    extra: &[&str],
) -> (i32, serde_json::Value, String) {
    let s = format!("s3://{sb}");
    let d = format!("s3://{db}");
    let mut args = vec![
        "sync",
        &s,
        &d,
        "--source-endpoint",
        src_url,
        "--destination-endpoint",
        dst_url,
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = backbeat(&args);
    let json = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {out}\nstderr: {err}"));
    (code, json, err)
}

/// The Python that has boto3 (moto's virtualenv), for checks by an independent client.
pub fn python() -> String {
    std::env::var("BACKBEAT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("BACKBEAT_TEST_PYTHON is not set: it names the Python with boto3 (moto's virtualenv); run the tests with `bash tests/run.sh`")
    })
}

/// What a bucket holds, read with boto3 (`tests/common/snapshot.py`): an independent client,
/// so a bug in backbeat's own client or XML parser cannot cancel itself out.
pub fn boto3_snapshot(url: &str, bucket: &str) -> serde_json::Value {
    let python = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/snapshot.py");
    let out = std::process::Command::new(&python)
        .args([script, url, bucket])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "boto3 snapshot of {bucket} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("snapshot JSON")
}

/// Asserts with boto3 that bucket `db` at `dst_url` replicates `sb` at `src_url`: the same
/// keys; per key the same versions newest first (bytes by SHA-256, size, metadata, tags),
/// each replica naming its source version; the same number of delete markers and whether the
/// latest entry is one. (moto lists versions and delete markers apart and stamps them to the
/// second, so their interleaving cannot be read back.)
pub fn assert_replicated_by_boto3(src_url: &str, sb: &str, dst_url: &str, db: &str) {
    let (s, d) = (boto3_snapshot(src_url, sb), boto3_snapshot(dst_url, db));
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&s), keys(&d), "same keys (boto3)");
    assert!(!keys(&s).is_empty(), "the source bucket {sb} is empty");
    for (key, sv) in s.as_object().unwrap() {
        let dv = &d[key];
        for field in ["delete_markers", "latest_is_marker"] {
            assert_eq!(sv[field], dv[field], "{field} of {key:?} (boto3)");
        }
        let (sr, dr) = (
            sv["versions"].as_array().unwrap(),
            dv["versions"].as_array().unwrap(),
        );
        assert_eq!(sr.len(), dr.len(), "versions of {key:?} (boto3)");
        for (a, b) in sr.iter().zip(dr) {
            for field in ["size", "sha256", "metadata", "tags"] {
                assert_eq!(
                    a[field], b[field],
                    "{field} of {key:?} {} (boto3)",
                    a["version_id"]
                );
            }
            assert_eq!(
                b["source_version"], a["version_id"],
                "source version of {key:?} (boto3)"
            );
        }
    }
}

/// Runs `tests/common/fidelity.py` (boto3) against `url`.
pub fn fid(url: &str, command: &str, args: serde_json::Value) -> serde_json::Value {
    let python = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/fidelity.py");
    let out = std::process::Command::new(&python)
        .args([script, url, command, &args.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "fidelity.py {command} {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fidelity.py prints JSON")
}
