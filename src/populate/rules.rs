//! The bucket's replication rules: the standard `ReplicationConfiguration` XML (as
//! GetBucketReplication returns it, or from a file), and which sites a version must reach.
//!
//! As in Zenko Backbeat, a rule's destination `StorageClass` names the site (several sites
//! may be listed, separated by commas); the site maps to an endpoint and bucket in the
//! configuration file.

use serde::Deserialize;

/// A rule's filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub prefix: String,
    /// Every tag must be present with this value.
    pub tags: Vec<(String, String)>,
}

/// One replication rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    pub priority: i64,
    pub filter: Filter,
    pub delete_marker_replication: bool,
    /// Destination bucket ARN (`arn:aws:s3:::bucket`).
    pub destination_bucket: String,
    pub sites: Vec<String>,
}

/// A parsed ReplicationConfiguration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicationConfig {
    pub role: String,
    pub rules: Vec<Rule>,
}

/// Why a configuration document is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ReplicationConfiguration: {0}")]
pub struct RulesError(pub String);

/// What the rules decide for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub sites: Vec<String>,
    /// The highest-priority rule that matched.
    pub rule_id: String,
}

/// The document as read: its children in document order (Role, Rule, and whatever else).
#[derive(Deserialize)]
struct Document {
    #[serde(rename = "$value", default)]
    children: Vec<Child>,
}

#[derive(Deserialize)]
enum Child {
    Role(String),
    Rule(RuleDoc),
    #[serde(other)]
    Other,
}

/// A `<Rule>` as written; [`ReplicationConfig::finish_rule`] validates it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RuleDoc {
    #[serde(rename = "ID")]
    id: String,
    status: String,
    priority: Option<String>,
    /// The legacy top-level prefix (before `<Filter>`).
    prefix: Option<String>,
    filter: FilterDoc,
    delete_marker_replication: Option<StatusDoc>,
    destination: DestinationDoc,
}

/// `<Filter>` and `<And>`: prefixes and tags in any order.
#[derive(Deserialize, Default)]
struct FilterDoc {
    #[serde(rename = "$value", default)]
    parts: Vec<FilterPart>,
}

#[derive(Deserialize)]
enum FilterPart {
    Prefix(String),
    Tag(TagDoc),
    And(FilterDoc),
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TagDoc {
    key: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StatusDoc {
    status: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DestinationDoc {
    bucket: String,
    storage_class: String,
}

impl FilterDoc {
    /// Adds this filter's prefix and tags to `into` (an `<And>` adds its own).
    fn collect(self, into: &mut Filter) {
        for part in self.parts {
            match part {
                FilterPart::Prefix(p) => into.prefix = p,
                FilterPart::Tag(t) => into.tags.push((t.key, t.value)),
                FilterPart::And(and) => and.collect(into),
                FilterPart::Other => {}
            }
        }
    }
}

/// The name of the document's root element.
fn root_name(xml: &str) -> Result<String, RulesError> {
    crate::s3::ops::xml::root_element(xml).map_err(RulesError)
}

/// The document's root must be a ReplicationConfiguration.
fn check_root(name: &str) -> Result<(), RulesError> {
    if name == "ReplicationConfiguration" {
        Ok(())
    } else {
        Err(RulesError(format!(
            "root element is <{name}>, not <ReplicationConfiguration>"
        )))
    }
}

/// The sites a rule's `StorageClass` names, separated by commas.
fn sites(storage_class: &str) -> Vec<String> {
    storage_class
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl ReplicationConfig {
    /// Parses the XML document.
    pub fn parse(xml: &str) -> Result<Self, RulesError> {
        check_root(&root_name(xml)?)?;
        let doc: Document = quick_xml::de::from_str(xml).map_err(|e| match e {
            quick_xml::DeError::InvalidXml(e) => RulesError(format!("not well-formed XML: {e}")),
            e => RulesError(format!("unexpected content: {e}")),
        })?;
        let mut cfg = ReplicationConfig::default();
        for child in doc.children {
            match child {
                Child::Role(role) => cfg.role = role,
                Child::Rule(rule) => cfg.rules.push(Self::finish_rule(rule, cfg.rules.len())?),
                Child::Other => {}
            }
        }
        if cfg.rules.is_empty() {
            return Err(RulesError("no <Rule>".into()));
        }
        Ok(cfg)
    }

    fn finish_rule(r: RuleDoc, index: usize) -> Result<Rule, RulesError> {
        let id = if r.id.is_empty() {
            format!("rule-{}", index + 1)
        } else {
            r.id
        };
        let priority = match r.priority {
            None => 0,
            Some(p) => p
                .parse()
                .map_err(|_| RulesError(format!("rule {id:?}: Priority {p:?} is not a number")))?,
        };
        let enabled = match r.status.as_str() {
            "Enabled" => true,
            "Disabled" => false,
            other => {
                return Err(RulesError(format!(
                    "rule {id:?}: Status must be Enabled or Disabled, not {other:?}"
                )))
            }
        };
        if r.destination.bucket.is_empty() {
            return Err(RulesError(format!("rule {id:?}: no Destination/Bucket")));
        }
        let sites = sites(&r.destination.storage_class);
        if sites.is_empty() {
            return Err(RulesError(format!(
                "rule {id:?}: Destination/StorageClass must name the destination site"
            )));
        }
        let mut filter = Filter::default();
        r.filter.collect(&mut filter);
        if let Some(p) = r.prefix {
            if filter.prefix.is_empty() {
                filter.prefix = p;
            }
        }
        Ok(Rule {
            id,
            enabled,
            priority,
            filter,
            delete_marker_replication: r
                .delete_marker_replication
                .is_some_and(|d| d.status == "Enabled"),
            destination_bucket: r.destination.bucket,
            sites,
        })
    }

    /// The sites a version (or delete marker) must reach. Per site, the highest-priority
    /// enabled rule that matches wins. Delete markers follow the winning rule's
    /// DeleteMarkerReplication; rules that filter on tags never replicate delete markers
    /// (as in S3).
    pub fn decide(
        &self,
        key: &str,
        tags: &[(String, String)],
        delete_marker: bool,
    ) -> Option<Decision> {
        let mut matching: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.enabled && key.starts_with(&r.filter.prefix))
            .filter(|r| {
                if delete_marker {
                    r.filter.tags.is_empty()
                } else {
                    r.filter.tags.iter().all(|t| tags.contains(t))
                }
            })
            .collect();
        matching.sort_by_key(|r| std::cmp::Reverse(r.priority));
        let mut sites: Vec<String> = Vec::new();
        let mut decided: Vec<String> = Vec::new();
        let mut rule_id = None;
        for r in &matching {
            for s in &r.sites {
                if decided.contains(s) {
                    continue;
                }
                decided.push(s.clone());
                if !delete_marker || r.delete_marker_replication {
                    sites.push(s.clone());
                    rule_id.get_or_insert_with(|| r.id.clone());
                }
            }
        }
        rule_id.map(|rule_id| Decision { sites, rule_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Role>arn:aws:iam::123456789012:role/replication</Role>
  <Rule>
    <ID>logs</ID><Status>Enabled</Status><Priority>2</Priority>
    <Filter><Prefix>logs/</Prefix></Filter>
    <DeleteMarkerReplication><Status>Enabled</Status></DeleteMarkerReplication>
    <Destination><Bucket>arn:aws:s3:::dst</Bucket><StorageClass>site-a</StorageClass></Destination>
  </Rule>
  <Rule>
    <ID>gold</ID><Status>Enabled</Status><Priority>5</Priority>
    <Filter><And><Prefix>logs/</Prefix><Tag><Key>class</Key><Value>gold</Value></Tag><Tag><Key>x</Key><Value>1</Value></Tag></And></Filter>
    <DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication>
    <Destination><Bucket>arn:aws:s3:::dst2</Bucket><StorageClass>site-a,site-b</StorageClass></Destination>
  </Rule>
  <Rule>
    <ID>tagged</ID><Status>Enabled</Status><Priority>1</Priority>
    <Filter><Tag><Key>replicate</Key><Value>yes</Value></Tag></Filter>
    <DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication>
    <Destination><Bucket>arn:aws:s3:::dst</Bucket><StorageClass>site-c</StorageClass></Destination>
  </Rule>
  <Rule>
    <ID>off</ID><Status>Disabled</Status><Priority>9</Priority>
    <Filter><Prefix></Prefix></Filter>
    <Destination><Bucket>arn:aws:s3:::dst</Bucket><StorageClass>site-z</StorageClass></Destination>
  </Rule>
  <Rule>
    <ID>legacy</ID><Status>Enabled</Status><Prefix>old/</Prefix>
    <Destination><Bucket>arn:aws:s3:::dst</Bucket><StorageClass>site-a</StorageClass></Destination>
  </Rule>
</ReplicationConfiguration>"#;

    fn tags(t: &[(&str, &str)]) -> Vec<(String, String)> {
        t.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_field() {
        let c = ReplicationConfig::parse(XML).unwrap();
        assert_eq!(c.rules.len(), 5);
        let gold = &c.rules[1];
        assert_eq!(gold.priority, 5);
        assert_eq!(
            gold.filter,
            Filter {
                prefix: "logs/".into(),
                tags: tags(&[("class", "gold"), ("x", "1")])
            }
        );
        assert_eq!(gold.sites, ["site-a", "site-b"]);
        assert!(!gold.delete_marker_replication && c.rules[0].delete_marker_replication);
        assert!(!c.rules[3].enabled);
        assert_eq!(c.rules[4].filter.prefix, "old/");
    }

    #[test]
    fn decisions() {
        let c = ReplicationConfig::parse(XML).unwrap();
        // prefix rule only
        let d = c.decide("logs/a", &[], false).unwrap();
        assert_eq!(
            (d.sites.as_slice(), d.rule_id.as_str()),
            (&["site-a".to_string()][..], "logs")
        );
        // And filter with both tags: higher priority rule wins for site-a, adds site-b
        let d = c
            .decide("logs/a", &tags(&[("class", "gold"), ("x", "1")]), false)
            .unwrap();
        assert_eq!(d.rule_id, "gold");
        assert_eq!(d.sites, ["site-a", "site-b"]);
        // one tag missing: And does not match
        assert_eq!(
            c.decide("logs/a", &tags(&[("class", "gold")]), false)
                .unwrap()
                .sites,
            ["site-a"]
        );
        // tag rule anywhere
        assert_eq!(
            c.decide("x/y", &tags(&[("replicate", "yes")]), false)
                .unwrap()
                .sites,
            ["site-c"]
        );
        // disabled rule never applies; nothing matches
        assert_eq!(c.decide("other", &[], false), None);
        // delete markers: per the winning rule's DeleteMarkerReplication, never via tag rules
        assert_eq!(c.decide("logs/a", &[], true).unwrap().sites, ["site-a"]);
        assert_eq!(c.decide("x/y", &[], true), None);
        assert_eq!(
            c.decide("old/a", &[], true),
            None,
            "legacy rule without DeleteMarkerReplication"
        );
        assert_eq!(c.decide("old/a", &[], false).unwrap().rule_id, "legacy");
    }

    #[test]
    fn parses_moto_and_aws_documents() {
        // moto: Role after the rules, values on their own lines, an empty prefix.
        let moto = r#"<?xml version="1.0" encoding="UTF-8"?>
<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
    <Rule>
        <ID>r1</ID>
        <Priority>1</Priority>
        <Status>Enabled</Status>
        <DeleteMarkerReplication>
            <Status>Enabled</Status>
        </DeleteMarkerReplication>
        <Filter>
            <Prefix></Prefix>
        </Filter>
        <Destination>
            <Bucket>
                arn:aws:s3:::dst
            </Bucket>
            <StorageClass>site-a, site-b</StorageClass>
        </Destination>
    </Rule>
    <Role>arn:aws:iam::123456789012:role/r</Role>
</ReplicationConfiguration>"#;
        let c = ReplicationConfig::parse(moto).unwrap();
        assert_eq!(c.role, "arn:aws:iam::123456789012:role/r");
        let r = &c.rules[0];
        assert_eq!((r.id.as_str(), r.priority, r.enabled), ("r1", 1, true));
        assert_eq!(r.destination_bucket, "arn:aws:s3:::dst");
        assert_eq!(r.sites, ["site-a", "site-b"]);
        assert!(r.delete_marker_replication && r.filter == Filter::default());
        // AWS: elements backbeat does not use, a tag before the prefix in <And>, an empty
        // <Prefix/>, no ID (named by position).
        let aws = r#"<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Role>arn:aws:iam::1:role/r</Role>
  <Rule><Status>Enabled</Status><Priority>3</Priority>
    <Filter><And><Tag><Key>k</Key><Value>v</Value></Tag><Prefix>p/</Prefix><Tag><Key>k2</Key><Value></Value></Tag></And></Filter>
    <SourceSelectionCriteria><SseKmsEncryptedObjects><Status>Enabled</Status></SseKmsEncryptedObjects></SourceSelectionCriteria>
    <ExistingObjectReplication><Status>Enabled</Status></ExistingObjectReplication>
    <Destination><Bucket>arn:aws:s3:::d</Bucket><Account>1</Account><StorageClass>site-a</StorageClass>
      <ReplicationTime><Status>Enabled</Status><Time><Minutes>15</Minutes></Time></ReplicationTime></Destination>
    <DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication>
  </Rule>
  <Rule><ID>l</ID><Status>Enabled</Status><Prefix>old/</Prefix><Filter><Prefix/></Filter>
    <Destination><Bucket>arn:aws:s3:::d</Bucket><StorageClass>site-b</StorageClass></Destination></Rule>
</ReplicationConfiguration>"#;
        let c = ReplicationConfig::parse(aws).unwrap();
        let r = &c.rules[0];
        assert_eq!((r.id.as_str(), r.priority), ("rule-1", 3));
        assert_eq!(
            r.filter,
            Filter {
                prefix: "p/".into(),
                tags: tags(&[("k", "v"), ("k2", "")])
            }
        );
        assert!(!r.delete_marker_replication);
        assert_eq!(c.rules[1].filter.prefix, "old/");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (xml, want) in [
            ("<Other/>", "root element"),
            ("<ReplicationConfiguration></ReplicationConfiguration>", "no <Rule>"),
            ("<ReplicationConfiguration><Rule><ID>a</ID><Status>On</Status></Rule></ReplicationConfiguration>", "Status must be"),
            ("<ReplicationConfiguration><Rule><ID>a</ID><Status>Enabled</Status><Destination><Bucket>b</Bucket></Destination></Rule></ReplicationConfiguration>", "StorageClass"),
            ("<ReplicationConfiguration><Rule><ID>a</ID><Status>Enabled</Status><Priority>x</Priority></Rule></ReplicationConfiguration>", "Priority"),
            ("<ReplicationConfiguration><Rule>", "not well-formed"),
            ("<ReplicationConfiguration><Rule><ID>a</ID><Status>Enabled</Status><Destination><Bucket>b</Bucket><StorageClass>s</StorageClass></Destination></Rule>", "not well-formed"),
            ("<ReplicationConfiguration><Rule><ID>a</ID></Rule></Other>", "not well-formed"),
            ("<ReplicationConfiguration><Rule><ID>a</ID><Status><X/></Status></Rule></ReplicationConfiguration>", "unexpected content"),
            ("", "empty document"),
        ] {
            let e = ReplicationConfig::parse(xml).unwrap_err();
            assert!(e.to_string().contains(want), "{xml}: {e}");
        }
    }
}
