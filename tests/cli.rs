//! Command-line behaviour that needs no server: configuration checks.

use std::process::Command;

fn backbeat(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_backbeat"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_prints_origins_and_names_bad_keys() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (code, out, err) = backbeat(&[
        "config",
        "check",
        &format!("{root}/docs/backbeat.example.toml"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replication.shards = 2") && out.contains("# profile"),
        "{out}"
    );
    assert!(
        out.contains("kafka.session_timeout_ms = 10000") && out.contains("# default"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[replication]\nconcurency = 4\n").unwrap();
    let (code, _, err) = backbeat(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml")
            && err.contains("replication.concurency")
            && err.contains("unknown key"),
        "{err}"
    );
}
