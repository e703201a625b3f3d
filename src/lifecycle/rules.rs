//! A bucket's lifecycle rules: the standard `LifecycleConfiguration` XML (as
//! GetBucketLifecycleConfiguration returns it, or from a rules file, since some servers drop
//! fields such as `NewerNoncurrentVersions`), read into validated [`Rule`]s. An invalid
//! document is refused with an error naming the rule and the field.

use std::time::SystemTime;

use serde::Deserialize;

/// Which objects a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub prefix: String,
    /// Every tag must be present with this value.
    pub tags: Vec<(String, String)>,
    /// Strictly greater than (bytes).
    pub size_greater_than: Option<u64>,
    /// Strictly less than (bytes).
    pub size_less_than: Option<u64>,
}

/// When an action on a current version becomes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Days after the version was written (counted as S3 does: see `eval::Clock`).
    Days(u32),
    /// From this time on (a midnight UTC).
    Date(SystemTime),
}

/// An action on noncurrent versions: due `days` after a version became noncurrent, for
/// every version beyond the `newer_noncurrent_versions` newest noncurrent ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noncurrent {
    pub days: u32,
    pub newer_noncurrent_versions: u32,
}

/// One lifecycle rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    pub filter: Filter,
    /// The current version expires (a delete marker is added on a versioned bucket).
    pub expiration: Option<When>,
    /// A delete marker that is the only entry left of its key is removed.
    pub expired_object_delete_marker: bool,
    pub noncurrent_expiration: Option<Noncurrent>,
    /// Incomplete multipart uploads are aborted this many days after they began.
    pub abort_incomplete_days: Option<u32>,
    /// The current version moves to another storage class (or a site).
    pub transitions: Vec<(When, String)>,
    pub noncurrent_transitions: Vec<(Noncurrent, String)>,
}

/// A parsed LifecycleConfiguration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LifecycleRules {
    pub rules: Vec<Rule>,
}

/// Why a lifecycle document is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LifecycleConfiguration: {0}")]
pub struct LifecycleError(pub String);

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "$value", default)]
    children: Vec<Child>,
}

#[derive(Deserialize)]
enum Child {
    Rule(RuleDoc),
    #[serde(other)]
    Other,
}

/// A `<Rule>` as written, its children in document order (transitions repeat).
#[derive(Deserialize, Default)]
struct RuleDoc {
    #[serde(rename = "$value", default)]
    parts: Vec<RulePart>,
}

#[derive(Deserialize)]
enum RulePart {
    #[serde(rename = "ID")]
    Id(String),
    Status(String),
    Prefix(String),
    Filter(FilterDoc),
    Expiration(ActionDoc),
    NoncurrentVersionExpiration(ActionDoc),
    AbortIncompleteMultipartUpload(ActionDoc),
    Transition(ActionDoc),
    NoncurrentVersionTransition(ActionDoc),
    #[serde(other)]
    Other,
}

/// `<Filter>` and `<And>`: prefix, tags and sizes in any order.
#[derive(Deserialize, Default)]
struct FilterDoc {
    #[serde(rename = "$value", default)]
    parts: Vec<FilterPart>,
}

#[derive(Deserialize)]
enum FilterPart {
    Prefix(String),
    Tag(TagDoc),
    ObjectSizeGreaterThan(String),
    ObjectSizeLessThan(String),
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

/// The fields of every action element (each uses some of them).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ActionDoc {
    days: Option<String>,
    date: Option<String>,
    expired_object_delete_marker: Option<String>,
    noncurrent_days: Option<String>,
    newer_noncurrent_versions: Option<String>,
    days_after_initiation: Option<String>,
    storage_class: Option<String>,
}

/// Errors of one rule, named by its ID and position.
struct Named<'a> {
    id: &'a str,
    index: usize,
}

impl Named<'_> {
    fn err(&self, message: impl std::fmt::Display) -> LifecycleError {
        LifecycleError(format!(
            "rule {:?} (rule {} of the document): {message}",
            self.id,
            self.index + 1
        ))
    }

    /// A whole number in `min..=max`.
    fn number(&self, field: &str, v: &str, min: u64, max: u64) -> Result<u64, LifecycleError> {
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(format!(
                "{field} must be a whole number from {min} to {max}, not {v:?}"
            ))),
        }
    }

    fn days(&self, field: &str, v: &str, min: u64) -> Result<u32, LifecycleError> {
        self.number(field, v, min, 1_000_000).map(|n| n as u32)
    }

    /// An ISO 8601 date at midnight UTC (`2027-01-01` or `2027-01-01T00:00:00Z`).
    fn date(&self, v: &str) -> Result<SystemTime, LifecycleError> {
        let v = v.trim();
        let full = if v.len() == 10 {
            format!("{v}T00:00:00Z")
        } else {
            v.to_string()
        };
        let bad = || {
            self.err(format!(
                "Date must be a midnight UTC in ISO 8601, not {v:?}"
            ))
        };
        let t = crate::time::parse_rfc3339(&full).ok_or_else(bad)?;
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| bad())?
            .as_secs();
        if secs % 86_400 != 0 {
            return Err(bad());
        }
        Ok(t)
    }

    fn flag(&self, field: &str, v: &str) -> Result<bool, LifecycleError> {
        match v.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(self.err(format!("{field} must be true or false, not {other:?}"))),
        }
    }

    fn storage_class(&self, a: &ActionDoc, what: &str) -> Result<String, LifecycleError> {
        match a.storage_class.as_deref().map(str::trim) {
            Some(c) if !c.is_empty() => Ok(c.to_string()),
            _ => Err(self.err(format!("{what} needs a StorageClass"))),
        }
    }
}

impl FilterDoc {
    fn collect(self, into: &mut Filter, n: &Named<'_>) -> Result<(), LifecycleError> {
        for part in self.parts {
            match part {
                FilterPart::Prefix(p) => into.prefix = p,
                FilterPart::Tag(t) => into.tags.push((t.key, t.value)),
                FilterPart::ObjectSizeGreaterThan(v) => {
                    into.size_greater_than =
                        Some(n.number("ObjectSizeGreaterThan", &v, 0, u64::MAX)?)
                }
                FilterPart::ObjectSizeLessThan(v) => {
                    into.size_less_than = Some(n.number("ObjectSizeLessThan", &v, 1, u64::MAX)?)
                }
                FilterPart::And(and) => and.collect(into, n)?,
                FilterPart::Other => {}
            }
        }
        Ok(())
    }
}

/// The name of the document's root element.
fn root_name(xml: &str) -> Result<String, LifecycleError> {
    crate::s3::ops::xml::root_element(xml).map_err(LifecycleError)
}

impl LifecycleRules {
    /// Parses and validates the XML document (at most 1000 rules, IDs unique).
    pub fn parse(xml: &str) -> Result<Self, LifecycleError> {
        let root = root_name(xml)?;
        if root != "LifecycleConfiguration" && root != "BucketLifecycleConfiguration" {
            return Err(LifecycleError(format!(
                "root element is <{root}>, not <LifecycleConfiguration>"
            )));
        }
        let doc: Document = quick_xml::de::from_str(xml).map_err(|e| match e {
            quick_xml::DeError::InvalidXml(e) => {
                LifecycleError(format!("not well-formed XML: {e}"))
            }
            e => LifecycleError(format!("unexpected content: {e}")),
        })?;
        let mut rules = LifecycleRules::default();
        for child in doc.children {
            if let Child::Rule(r) = child {
                let rule = finish_rule(r, rules.rules.len())?;
                if rules.rules.iter().any(|o| o.id == rule.id) {
                    return Err(LifecycleError(format!(
                        "two rules have the ID {:?}",
                        rule.id
                    )));
                }
                rules.rules.push(rule);
            }
        }
        match rules.rules.len() {
            0 => Err(LifecycleError("no <Rule>".into())),
            n if n > 1000 => Err(LifecycleError(format!("{n} rules: at most 1000"))),
            _ => Ok(rules),
        }
    }

    /// Whether a rule that could apply to `key` filters on tags (the caller then reads the
    /// versions' tags).
    pub fn wants_tags(&self, key: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.enabled && !r.filter.tags.is_empty() && key.starts_with(&r.filter.prefix))
    }

    /// Whether any enabled rule aborts incomplete multipart uploads.
    pub fn aborts_uploads(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.enabled && r.abort_incomplete_days.is_some())
    }
}

/// The rule's ID, status, filter and actions, checked one by one.
fn finish_rule(doc: RuleDoc, index: usize) -> Result<Rule, LifecycleError> {
    let id = doc
        .parts
        .iter()
        .find_map(|p| match p {
            RulePart::Id(id) if !id.trim().is_empty() => Some(id.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("rule-{}", index + 1));
    let n = Named { id: &id, index };
    if id.len() > 255 {
        return Err(n.err("ID is longer than 255 characters"));
    }
    let mut rule = Rule {
        id: id.clone(),
        enabled: false,
        filter: Filter::default(),
        expiration: None,
        expired_object_delete_marker: false,
        noncurrent_expiration: None,
        abort_incomplete_days: None,
        transitions: Vec::new(),
        noncurrent_transitions: Vec::new(),
    };
    let mut status = None;
    for part in doc.parts {
        apply_part(&mut rule, &mut status, part, &n)?;
    }
    rule.enabled = match status.as_deref() {
        Some("Enabled") => true,
        Some("Disabled") => false,
        other => {
            return Err(n.err(format!(
                "Status must be Enabled or Disabled, not {:?}",
                other.unwrap_or("")
            )))
        }
    };
    check_rule(&rule, &n)?;
    Ok(rule)
}

fn apply_part(
    rule: &mut Rule,
    status: &mut Option<String>,
    part: RulePart,
    n: &Named<'_>,
) -> Result<(), LifecycleError> {
    match part {
        RulePart::Id(_) | RulePart::Other => {}
        RulePart::Status(s) => *status = Some(s.trim().to_string()),
        RulePart::Prefix(p) => {
            if rule.filter.prefix.is_empty() {
                rule.filter.prefix = p;
            }
        }
        RulePart::Filter(f) => f.collect(&mut rule.filter, n)?,
        RulePart::Expiration(a) => expiration(rule, &a, n)?,
        RulePart::NoncurrentVersionExpiration(a) => {
            rule.noncurrent_expiration = Some(noncurrent(&a, n)?)
        }
        RulePart::AbortIncompleteMultipartUpload(a) => {
            let days = a.days_after_initiation.as_deref().unwrap_or("");
            rule.abort_incomplete_days = Some(n.days("DaysAfterInitiation", days, 1)?);
        }
        RulePart::Transition(a) => {
            let when = when(&a, n, "Transition", 0)?;
            rule.transitions
                .push((when, n.storage_class(&a, "Transition")?));
        }
        RulePart::NoncurrentVersionTransition(a) => {
            let nc = noncurrent(&a, n)?;
            let class = n.storage_class(&a, "NoncurrentVersionTransition")?;
            rule.noncurrent_transitions.push((nc, class));
        }
    }
    Ok(())
}

/// `Days` or `Date` (exactly one).
fn when(a: &ActionDoc, n: &Named<'_>, what: &str, min_days: u64) -> Result<When, LifecycleError> {
    match (&a.days, &a.date) {
        (Some(d), None) => Ok(When::Days(n.days("Days", d, min_days)?)),
        (None, Some(d)) => Ok(When::Date(n.date(d)?)),
        _ => Err(n.err(format!("{what} needs exactly one of Days and Date"))),
    }
}

fn expiration(rule: &mut Rule, a: &ActionDoc, n: &Named<'_>) -> Result<(), LifecycleError> {
    match &a.expired_object_delete_marker {
        Some(v) if a.days.is_none() && a.date.is_none() => {
            rule.expired_object_delete_marker = n.flag("ExpiredObjectDeleteMarker", v)?;
            Ok(())
        }
        Some(_) => Err(
            n.err("Expiration takes either Days, Date or ExpiredObjectDeleteMarker, not several")
        ),
        None => {
            rule.expiration = Some(when(a, n, "Expiration", 1)?);
            Ok(())
        }
    }
}

fn noncurrent(a: &ActionDoc, n: &Named<'_>) -> Result<Noncurrent, LifecycleError> {
    let days = a.noncurrent_days.as_deref().unwrap_or("");
    let newer = match &a.newer_noncurrent_versions {
        Some(v) => n.number("NewerNoncurrentVersions", v, 1, 100)? as u32,
        None => 0,
    };
    Ok(Noncurrent {
        days: n.days("NoncurrentDays", days, 1)?,
        newer_noncurrent_versions: newer,
    })
}

/// The checks between fields, as S3 makes them.
fn check_rule(r: &Rule, n: &Named<'_>) -> Result<(), LifecycleError> {
    let has_action = r.expiration.is_some()
        || r.expired_object_delete_marker
        || r.noncurrent_expiration.is_some()
        || r.abort_incomplete_days.is_some()
        || !r.transitions.is_empty()
        || !r.noncurrent_transitions.is_empty();
    if !has_action {
        return Err(n.err("no action (Expiration, NoncurrentVersionExpiration, Transition, NoncurrentVersionTransition or AbortIncompleteMultipartUpload)"));
    }
    let f = &r.filter;
    if let (Some(gt), Some(lt)) = (f.size_greater_than, f.size_less_than) {
        if gt >= lt {
            return Err(n.err(format!(
                "ObjectSizeGreaterThan ({gt}) must be less than ObjectSizeLessThan ({lt})"
            )));
        }
    }
    let narrowed =
        !f.tags.is_empty() || f.size_greater_than.is_some() || f.size_less_than.is_some();
    if narrowed && r.abort_incomplete_days.is_some() {
        return Err(n.err(
            "AbortIncompleteMultipartUpload cannot be used with a Tag or object size filter",
        ));
    }
    if !f.tags.is_empty() && r.expired_object_delete_marker {
        return Err(n.err("ExpiredObjectDeleteMarker cannot be used with a Tag filter"));
    }
    let mut keys: Vec<&str> = f.tags.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(n.err("a tag key appears twice in the filter"));
    }
    if let Some(When::Days(e)) = r.expiration {
        if let Some((When::Days(t), _)) = r
            .transitions
            .iter()
            .find(|(w, _)| matches!(w, When::Days(t) if *t >= e))
        {
            return Err(n.err(format!(
                "Expiration Days ({e}) must be greater than every Transition's Days ({t})"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
