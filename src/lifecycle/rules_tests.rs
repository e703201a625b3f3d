use super::*;

fn doc(rules: &str) -> String {
    format!(
        "<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{rules}</LifecycleConfiguration>"
    )
}

fn err(rules: &str) -> String {
    LifecycleRules::parse(&doc(rules)).unwrap_err().0
}

#[test]
fn every_action_and_filter_is_read() {
    let xml = doc(r#"
      <Rule><ID>logs</ID><Status>Enabled</Status>
        <Filter><And><Prefix>logs/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag>
          <ObjectSizeGreaterThan>10</ObjectSizeGreaterThan><ObjectSizeLessThan>2000</ObjectSizeLessThan></And></Filter>
        <Expiration><Days>30</Days></Expiration>
        <Transition><Days>5</Days><StorageClass>STANDARD_IA</StorageClass></Transition>
        <Transition><Days>10</Days><StorageClass>cold</StorageClass></Transition>
        <NoncurrentVersionExpiration><NoncurrentDays>2</NoncurrentDays><NewerNoncurrentVersions>1</NewerNoncurrentVersions></NoncurrentVersionExpiration>
        <NoncurrentVersionTransition><NoncurrentDays>1</NoncurrentDays><StorageClass>GLACIER</StorageClass></NoncurrentVersionTransition>
      </Rule>
      <Rule><ID>markers</ID><Status>Disabled</Status><Filter><Prefix></Prefix></Filter>
        <Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>
        <AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload>
      </Rule>
      <Rule><ID>dated</ID><Status>Enabled</Status><Prefix>tmp/</Prefix>
        <Expiration><Date>2027-01-01T00:00:00.000Z</Date></Expiration></Rule>"#);
    let r = LifecycleRules::parse(&xml).unwrap();
    assert_eq!(r.rules.len(), 3);
    let logs = &r.rules[0];
    assert!(logs.enabled);
    assert_eq!(
        logs.filter,
        Filter {
            prefix: "logs/".into(),
            tags: vec![("k".into(), "v".into())],
            size_greater_than: Some(10),
            size_less_than: Some(2000),
        }
    );
    assert_eq!(logs.expiration, Some(When::Days(30)));
    assert_eq!(
        logs.transitions,
        vec![
            (When::Days(5), "STANDARD_IA".to_string()),
            (When::Days(10), "cold".to_string())
        ]
    );
    assert_eq!(
        logs.noncurrent_expiration,
        Some(Noncurrent {
            days: 2,
            newer_noncurrent_versions: 1
        })
    );
    assert_eq!(logs.noncurrent_transitions.len(), 1);
    let markers = &r.rules[1];
    assert!(!markers.enabled && markers.expired_object_delete_marker);
    assert_eq!(markers.abort_incomplete_days, Some(7));
    let dated = &r.rules[2];
    assert_eq!(dated.filter.prefix, "tmp/", "the legacy top-level Prefix");
    let jan = crate::time::parse_rfc3339("2027-01-01T00:00:00Z").unwrap();
    assert_eq!(dated.expiration, Some(When::Date(jan)));
    assert!(r.wants_tags("logs/a") && !r.wants_tags("tmp/a"));
    assert!(!r.aborts_uploads(), "the aborting rule is disabled");
}

#[test]
fn invalid_documents_name_the_rule_and_the_field() {
    let e =
        err("<Rule><ID>a</ID><Status>On</Status><Expiration><Days>1</Days></Expiration></Rule>");
    assert!(e.contains("\"a\"") && e.contains("Status"), "{e}");
    let e = err(
        "<Rule><ID>b</ID><Status>Enabled</Status><Expiration><Days>0</Days></Expiration></Rule>",
    );
    assert!(e.contains("\"b\"") && e.contains("Days"), "{e}");
    let e = err("<Rule><Status>Enabled</Status><Filter/></Rule>");
    assert!(e.contains("rule-1") && e.contains("no action"), "{e}");
    let e = err("<Rule><ID>c</ID><Status>Enabled</Status><Expiration><Date>2027-01-01T10:00:00Z</Date></Expiration></Rule>");
    assert!(e.contains("midnight"), "{e}");
    let e = err("<Rule><ID>d</ID><Status>Enabled</Status><Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter><AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>");
    assert!(
        e.contains("\"d\"") && e.contains("AbortIncompleteMultipartUpload"),
        "{e}"
    );
    let e = err("<Rule><ID>e</ID><Status>Enabled</Status><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays><NewerNoncurrentVersions>101</NewerNoncurrentVersions></NoncurrentVersionExpiration></Rule>");
    assert!(e.contains("NewerNoncurrentVersions"), "{e}");
    let e = err("<Rule><ID>f</ID><Status>Enabled</Status><Filter><And><ObjectSizeGreaterThan>9</ObjectSizeGreaterThan><ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter><Expiration><Days>1</Days></Expiration></Rule>");
    assert!(e.contains("ObjectSizeGreaterThan (9)"), "{e}");
    let e = err("<Rule><ID>g</ID><Status>Enabled</Status><Expiration><Days>3</Days></Expiration><Transition><Days>3</Days><StorageClass>X</StorageClass></Transition></Rule>");
    assert!(e.contains("greater than every Transition"), "{e}");
    let e = err(
        "<Rule><ID>h</ID><Status>Enabled</Status><Transition><Days>3</Days></Transition></Rule>",
    );
    assert!(e.contains("StorageClass"), "{e}");
    let e = err("<Rule><ID>i</ID><Status>Enabled</Status><Expiration><Days>3</Days><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule>");
    assert!(e.contains("not several"), "{e}");
    let two =
        "<Rule><ID>j</ID><Status>Enabled</Status><Expiration><Days>3</Days></Expiration></Rule>";
    let e = err(&format!("{two}{two}"));
    assert!(e.contains("two rules have the ID \"j\""), "{e}");
    let e = LifecycleRules::parse("<ReplicationConfiguration/>")
        .unwrap_err()
        .0;
    assert!(e.contains("not <LifecycleConfiguration>"), "{e}");
    let e = LifecycleRules::parse(&doc("")).unwrap_err().0;
    assert!(e.contains("no <Rule>"), "{e}");
}
