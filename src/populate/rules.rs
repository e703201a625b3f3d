//! The bucket's replication rules: the standard `ReplicationConfiguration` XML (as
//! GetBucketReplication returns it, or from a file), and which sites a version must reach.
//!
//! As in Zenko Backbeat, a rule's destination `StorageClass` names the site (several sites
//! may be listed, separated by commas); the site maps to an endpoint and bucket in the
//! configuration file.

use quick_xml::events::Event;
use quick_xml::Reader;

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

#[derive(Default)]
struct RuleBuilder {
    id: String,
    status: String,
    priority: Option<i64>,
    filter: Filter,
    legacy_prefix: Option<String>,
    dmr: Option<String>,
    bucket: String,
    storage_class: String,
    tag: (String, String),
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

impl ReplicationConfig {
    /// Parses the XML document.
    pub fn parse(xml: &str) -> Result<Self, RulesError> {
        let mut reader = Reader::from_str(xml);
        let mut path: Vec<String> = Vec::new();
        let mut cfg = ReplicationConfig::default();
        let mut cur: Option<RuleBuilder> = None;
        let mut text = String::new();
        let mut saw_root = false;
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) => {
                    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                    if path.is_empty() {
                        check_root(&name)?;
                        saw_root = true;
                    }
                    if path.len() == 1 && name == "Rule" {
                        cur = Some(RuleBuilder::default());
                    }
                    path.push(name);
                    text.clear();
                }
                Ok(Event::Empty(e)) => {
                    // e.g. <Prefix/>: an empty value
                    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                    if path.is_empty() {
                        check_root(&name)?;
                        saw_root = true;
                        continue;
                    }
                    path.push(name);
                    text.clear();
                    Self::end(&path, "", &mut cur, &mut cfg)?;
                    path.pop();
                }
                Ok(Event::Text(t)) => {
                    text.push_str(&t.unescape().map_err(|e| RulesError(e.to_string()))?);
                }
                Ok(Event::End(_)) => {
                    let t = std::mem::take(&mut text);
                    Self::end(&path, t.trim(), &mut cur, &mut cfg)?;
                    path.pop();
                }
                Ok(Event::Eof) => break,
                Err(e) => return Err(RulesError(format!("not well-formed XML: {e}"))),
                _ => {}
            }
        }
        if !saw_root {
            return Err(RulesError("empty document".into()));
        }
        if cfg.rules.is_empty() {
            return Err(RulesError("no <Rule>".into()));
        }
        Ok(cfg)
    }

    fn end(
        path: &[String],
        t: &str,
        cur: &mut Option<RuleBuilder>,
        cfg: &mut ReplicationConfig,
    ) -> Result<(), RulesError> {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["ReplicationConfiguration", "Role"] => cfg.role = t.to_string(),
            ["ReplicationConfiguration", "Rule"] => {
                let b = cur
                    .take()
                    .ok_or_else(|| RulesError("unbalanced <Rule>".into()))?;
                cfg.rules.push(Self::finish_rule(b, cfg.rules.len())?);
            }
            ["ReplicationConfiguration", "Rule", rest @ ..] => {
                let b = cur
                    .as_mut()
                    .ok_or_else(|| RulesError("unbalanced <Rule>".into()))?;
                match rest {
                    ["ID"] => b.id = t.to_string(),
                    ["Status"] => b.status = t.to_string(),
                    ["Priority"] => {
                        b.priority =
                            Some(t.parse().map_err(|_| {
                                RulesError(format!("Priority {t:?} is not a number"))
                            })?)
                    }
                    ["Prefix"] => b.legacy_prefix = Some(t.to_string()),
                    ["Filter", "Prefix"] | ["Filter", "And", "Prefix"] => {
                        b.filter.prefix = t.to_string()
                    }
                    ["Filter", "Tag", "Key"] | ["Filter", "And", "Tag", "Key"] => {
                        b.tag.0 = t.to_string()
                    }
                    ["Filter", "Tag", "Value"] | ["Filter", "And", "Tag", "Value"] => {
                        b.tag.1 = t.to_string()
                    }
                    ["Filter", "Tag"] | ["Filter", "And", "Tag"] => {
                        let tag = std::mem::take(&mut b.tag);
                        b.filter.tags.push(tag);
                    }
                    ["DeleteMarkerReplication", "Status"] => b.dmr = Some(t.to_string()),
                    ["Destination", "Bucket"] => b.bucket = t.to_string(),
                    ["Destination", "StorageClass"] => b.storage_class = t.to_string(),
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish_rule(b: RuleBuilder, index: usize) -> Result<Rule, RulesError> {
        let id = if b.id.is_empty() {
            format!("rule-{}", index + 1)
        } else {
            b.id
        };
        let enabled = match b.status.as_str() {
            "Enabled" => true,
            "Disabled" => false,
            other => {
                return Err(RulesError(format!(
                    "rule {id:?}: Status must be Enabled or Disabled, not {other:?}"
                )))
            }
        };
        if b.bucket.is_empty() {
            return Err(RulesError(format!("rule {id:?}: no Destination/Bucket")));
        }
        let sites: Vec<String> = b
            .storage_class
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if sites.is_empty() {
            return Err(RulesError(format!(
                "rule {id:?}: Destination/StorageClass must name the destination site"
            )));
        }
        let mut filter = b.filter;
        if let Some(p) = b.legacy_prefix {
            if filter.prefix.is_empty() {
                filter.prefix = p;
            }
        }
        Ok(Rule {
            id,
            enabled,
            priority: b.priority.unwrap_or(0),
            filter,
            delete_marker_replication: b.dmr.as_deref() == Some("Enabled"),
            destination_bucket: b.bucket,
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
    fn errors_say_what_is_wrong() {
        for (xml, want) in [
            ("<Other/>", "root element"),
            ("<ReplicationConfiguration></ReplicationConfiguration>", "no <Rule>"),
            ("<ReplicationConfiguration><Rule><ID>a</ID><Status>On</Status></Rule></ReplicationConfiguration>", "Status must be"),
            ("<ReplicationConfiguration><Rule><ID>a</ID><Status>Enabled</Status><Destination><Bucket>b</Bucket></Destination></Rule></ReplicationConfiguration>", "StorageClass"),
            ("<ReplicationConfiguration><Rule><ID>a</ID><Status>Enabled</Status><Priority>x</Priority></Rule></ReplicationConfiguration>", "Priority"),
            ("<ReplicationConfiguration><Rule>", "no <Rule>"),
        ] {
            let e = ReplicationConfig::parse(xml).unwrap_err();
            assert!(e.to_string().contains(want), "{xml}: {e}");
        }
    }
}
