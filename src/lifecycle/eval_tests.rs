use super::*;

fn t(s: &str) -> SystemTime {
    crate::time::parse_rfc3339(s).unwrap()
}

fn rules(body: &str) -> LifecycleRules {
    LifecycleRules::parse(&format!(
        "<LifecycleConfiguration>{body}</LifecycleConfiguration>"
    ))
    .unwrap()
}

fn entry(id: &str, at: &str, dm: bool) -> Entry {
    Entry {
        version_id: id.into(),
        delete_marker: dm,
        last_modified: at.into(),
        modified: Some(t(at)),
        size: if dm { 0 } else { 100 },
        etag: format!("\"{id}\""),
        storage_class: "STANDARD".into(),
        tags: vec![],
    }
}

fn kinds(actions: &[Action]) -> Vec<(String, Kind)> {
    actions
        .iter()
        .map(|a| (a.version_id.clone(), a.kind.clone()))
        .collect()
}

#[test]
fn days_end_at_the_next_midnight_utc_or_scaled_without_rounding() {
    let c = Clock::new(t("2026-01-01T00:00:00Z"), 1);
    assert_eq!(
        c.after(t("2026-01-15T10:30:00Z"), 3),
        t("2026-01-19T00:00:00Z")
    );
    assert_eq!(
        c.after(t("2026-01-15T00:00:00Z"), 3),
        t("2026-01-18T00:00:00Z")
    );
    let fast = Clock::new(t("2026-01-01T00:00:00Z"), 86_400);
    assert_eq!(
        fast.after(t("2026-01-15T10:30:00Z"), 3),
        t("2026-01-15T10:30:03Z")
    );
}

#[test]
fn noncurrent_versions_beyond_the_newest_kept_expire_once_due() {
    let r = rules("<Rule><ID>logs</ID><Status>Enabled</Status><Filter><Prefix>logs/</Prefix></Filter><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays><NewerNoncurrentVersions>1</NewerNoncurrentVersions></NoncurrentVersionExpiration></Rule>");
    let entries = [
        entry("v4", "2026-03-10T12:00:00Z", false),
        entry("v3", "2026-03-05T12:00:00Z", false),
        entry("v2", "2026-03-04T12:00:00Z", false),
        entry("v1", "2026-03-01T12:00:00Z", false),
    ];
    // v2 became noncurrent on 03-05 12:00, due 03-07 00:00; v1 on 03-04 12:00, due 03-06.
    let at = |now| decide_key(&r, &Clock::new(t(now), 1), "b", "logs/a", &entries);
    assert_eq!(kinds(&at("2026-03-05T23:59:59Z")), vec![]);
    assert_eq!(
        kinds(&at("2026-03-06T00:00:00Z")),
        vec![("v1".to_string(), Kind::DeleteVersion)]
    );
    let later = at("2026-04-01T00:00:00Z");
    assert_eq!(
        kinds(&later),
        vec![
            ("v1".to_string(), Kind::DeleteVersion),
            ("v2".to_string(), Kind::DeleteVersion)
        ],
        "v3, the newest noncurrent version, is kept"
    );
    assert_eq!(later[0].rule, "logs");
    assert!(
        decide_key(
            &r,
            &Clock::new(t("2027-01-01T00:00:00Z"), 1),
            "b",
            "other/a",
            &entries
        )
        .is_empty(),
        "the prefix does not match"
    );
}

#[test]
fn current_versions_expire_and_lone_delete_markers_are_removed() {
    let r = rules("<Rule><ID>tmp</ID><Status>Enabled</Status><Filter><Prefix>tmp/</Prefix></Filter><Expiration><Days>1</Days></Expiration></Rule><Rule><ID>dm</ID><Status>Enabled</Status><Filter></Filter><Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule>");
    let c = Clock::new(t("2026-03-10T00:00:00Z"), 1);
    let old = entry("v1", "2026-03-01T00:00:00Z", false);
    assert_eq!(
        kinds(&decide_key(
            &r,
            &c,
            "b",
            "tmp/x",
            std::slice::from_ref(&old)
        )),
        vec![("v1".to_string(), Kind::ExpireCurrent)]
    );
    let fresh = entry("v2", "2026-03-09T12:00:00Z", false);
    assert!(decide_key(&r, &c, "b", "tmp/x", &[fresh]).is_empty());
    let lone = entry("m1", "2026-03-01T00:00:00Z", true);
    assert_eq!(
        kinds(&decide_key(&r, &c, "b", "k", std::slice::from_ref(&lone))),
        vec![("m1".to_string(), Kind::RemoveDeleteMarker)]
    );
    assert!(
        decide_key(&r, &c, "b", "k", &[lone, old]).is_empty(),
        "a marker with a version under it stays"
    );
}

#[test]
fn tag_and_size_filters_select_versions_never_markers() {
    let r = rules("<Rule><ID>big-red</ID><Status>Enabled</Status><Filter><And><Prefix></Prefix><Tag><Key>color</Key><Value>red</Value></Tag><ObjectSizeGreaterThan>1000</ObjectSizeGreaterThan></And></Filter><Expiration><Days>1</Days></Expiration><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration></Rule>");
    let c = Clock::new(t("2026-03-10T00:00:00Z"), 1);
    let mut big_red = entry("v1", "2026-03-01T00:00:00Z", false);
    big_red.size = 2000;
    big_red.tags = vec![("color".into(), "red".into())];
    let mut small_red = big_red.clone();
    small_red.size = 10;
    let mut big_blue = big_red.clone();
    big_blue.tags = vec![("color".into(), "blue".into())];
    let one = |e: &Entry| decide_key(&r, &c, "b", "k", std::slice::from_ref(e)).len();
    assert_eq!((one(&big_red), one(&small_red), one(&big_blue)), (1, 0, 0));
    let marker = entry("m", "2026-03-02T00:00:00Z", true);
    let both = decide_key(
        &r,
        &c,
        "b",
        "k",
        &[entry("v9", "2026-03-03T00:00:00Z", false), marker],
    );
    assert!(both.is_empty(), "a marker has no tags: {both:?}");
}

#[test]
fn transitions_take_the_latest_due_class_and_expiration_wins() {
    let r = rules("<Rule><ID>t</ID><Status>Enabled</Status><Filter></Filter><Transition><Days>1</Days><StorageClass>STANDARD_IA</StorageClass></Transition><Transition><Days>5</Days><StorageClass>GLACIER</StorageClass></Transition><NoncurrentVersionTransition><NoncurrentDays>1</NoncurrentDays><StorageClass>GLACIER</StorageClass></NoncurrentVersionTransition></Rule>");
    let e = entry("v1", "2026-03-01T00:00:00Z", false);
    let at = |now| {
        kinds(&decide_key(
            &r,
            &Clock::new(t(now), 1),
            "b",
            "k",
            std::slice::from_ref(&e),
        ))
    };
    let ia = Kind::Transition {
        storage_class: "STANDARD_IA".into(),
        noncurrent: false,
    };
    let glacier = Kind::Transition {
        storage_class: "GLACIER".into(),
        noncurrent: false,
    };
    let glacier_nc = Kind::Transition {
        storage_class: "GLACIER".into(),
        noncurrent: true,
    };
    assert_eq!(at("2026-03-01T12:00:00Z"), vec![]);
    assert_eq!(at("2026-03-03T00:00:00Z"), vec![("v1".to_string(), ia)]);
    assert_eq!(
        at("2026-03-07T00:00:00Z"),
        vec![("v1".to_string(), glacier.clone())]
    );
    let mut there = e.clone();
    there.storage_class = "GLACIER".into();
    let c = Clock::new(t("2026-03-07T00:00:00Z"), 1);
    assert!(
        decide_key(&r, &c, "b", "k", &[there]).is_empty(),
        "already in GLACIER"
    );
    let entries = [entry("v2", "2026-03-02T00:00:00Z", false), e.clone()];
    assert_eq!(
        kinds(&decide_key(&r, &c, "b", "k", &entries)),
        vec![
            ("v1".to_string(), glacier_nc),
            ("v2".to_string(), glacier.clone())
        ]
    );
    let exp = rules("<Rule><ID>t</ID><Status>Enabled</Status><Filter></Filter><Expiration><Days>2</Days></Expiration><Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition></Rule>");
    let c = Clock::new(t("2026-03-09T00:00:00Z"), 1);
    assert_eq!(
        kinds(&decide_key(&exp, &c, "b", "k", std::slice::from_ref(&e))),
        vec![("v1".to_string(), Kind::ExpireCurrent)]
    );
}

#[test]
fn uploads_are_aborted_after_their_days_and_disabled_rules_do_nothing() {
    let r = rules("<Rule><ID>mpu</ID><Status>Enabled</Status><Filter><Prefix>up/</Prefix></Filter><AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule><Rule><ID>off</ID><Status>Disabled</Status><Filter></Filter><Expiration><Days>1</Days></Expiration></Rule>");
    let c = Clock::new(t("2026-03-10T00:00:00Z"), 1);
    let begun = t("2026-03-07T00:00:00Z");
    assert_eq!(
        abort_upload(&r, &c, "up/x", begun).map(|r| r.id.as_str()),
        Some("mpu")
    );
    assert!(abort_upload(&r, &c, "down/x", begun).is_none());
    assert!(abort_upload(&r, &c, "up/x", t("2026-03-09T00:00:00Z")).is_none());
    let old = entry("v1", "2020-01-01T00:00:00Z", false);
    assert!(decide_key(&r, &c, "b", "k", &[old]).is_empty());
}

#[test]
fn a_noncurrent_version_due_for_both_is_transitioned_before_it_is_deleted() {
    let r = rules("<Rule><ID>arch</ID><Status>Enabled</Status><Filter></Filter><NoncurrentVersionTransition><NoncurrentDays>1</NoncurrentDays><StorageClass>cold</StorageClass></NoncurrentVersionTransition><NoncurrentVersionExpiration><NoncurrentDays>2</NoncurrentDays></NoncurrentVersionExpiration></Rule>");
    let entries = [
        entry("v2", "2026-03-02T00:00:00Z", false),
        entry("v1", "2026-03-01T00:00:00Z", false),
    ];
    let at = |now| kinds(&decide_key(&r, &Clock::new(t(now), 1), "b", "k", &entries));
    let cold = Kind::Transition {
        storage_class: "cold".into(),
        noncurrent: true,
    };
    assert_eq!(
        at("2026-03-03T00:00:00Z"),
        vec![("v1".to_string(), cold.clone())]
    );
    assert_eq!(
        at("2026-03-04T00:00:00Z"),
        vec![
            ("v1".to_string(), cold),
            ("v1".to_string(), Kind::DeleteVersion)
        ]
    );
    let (e, since) = (&entries[1], Some(t("2026-03-02T00:00:00Z")));
    let c = |now| Clock::new(t(now), 1);
    assert_eq!(
        transitions_due(&r, &c("2026-03-04T00:00:00Z"), "k", e, since),
        vec!["cold"]
    );
    assert!(
        transitions_due(&r, &c("2026-03-02T12:00:00Z"), "k", e, since).is_empty(),
        "not due yet: a deletion would not wait for it"
    );
}
