//! Which source buckets are replicated, and what each is called at a site.
//!
//! Owns: bucket name patterns (`*` and `?`) with exclusions (`Selection`), a site's names for
//! source buckets (`NameMap`: named one by one, else a template such as `"{bucket}-dr"`, else
//! the source's name), and the set of selected buckets known to exist (`Known`, filled at
//! start and by discovery).
//! May call: nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

/// The source buckets to replicate: those matching a pattern of `include` and none of
/// `exclude`. A pattern is a bucket name where `*` stands for any run of characters and `?`
/// for one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    include: Vec<String>,
    exclude: Vec<String>,
}

/// Characters a bucket name may hold (S3's rules, plus `_` that older servers allow).
fn name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

/// Why a pattern cannot select buckets, if it cannot.
pub fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("an empty bucket pattern selects nothing".into());
    }
    if let Some(c) = p
        .chars()
        .find(|c| !name_char(*c) && !matches!(c, '*' | '?'))
    {
        return Err(format!(
            "{p:?}: {c:?} is not in bucket names (lowercase letters, digits, '.', '-'), nor a wildcard ('*', '?')"
        ));
    }
    Ok(())
}

/// Whether `name` matches the glob `pattern` (`*`: any run, `?`: one character).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            // The last star takes one more character.
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

fn wild(p: &str) -> bool {
    p.contains(['*', '?'])
}

impl Selection {
    /// A selection from patterns already checked with [`check_pattern`].
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> Self {
        Self { include, exclude }
    }

    /// Whether `bucket` is replicated.
    pub fn matches(&self, bucket: &str) -> bool {
        self.include.iter().any(|p| glob(p, bucket))
            && !self.exclude.iter().any(|p| glob(p, bucket))
    }

    /// The buckets named, when no pattern has a wildcard (nothing to discover).
    pub fn fixed(&self) -> Option<Vec<String>> {
        if self.include.iter().any(|p| wild(p)) {
            return None;
        }
        Some(
            self.include
                .iter()
                .filter(|b| self.matches(b))
                .cloned()
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty()
    }

    pub fn include(&self) -> &[String] {
        &self.include
    }

    pub fn exclude(&self) -> &[String] {
        &self.exclude
    }

    /// The selection as `config show` and errors print it.
    pub fn text(&self) -> String {
        if self.exclude.is_empty() {
            return format!("{:?}", self.include);
        }
        format!("{:?} except {:?}", self.include, self.exclude)
    }
}

/// What a site calls each source bucket: a name given for that bucket, else the template
/// with `{bucket}` replaced, else the source bucket's own name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameMap {
    pub named: BTreeMap<String, String>,
    pub template: Option<String>,
}

impl NameMap {
    pub fn new(named: BTreeMap<String, String>, template: Option<String>) -> Self {
        Self { named, template }
    }

    /// The site's bucket for source bucket `bucket`.
    pub fn dest(&self, bucket: &str) -> String {
        if let Some(n) = self.named.get(bucket) {
            return n.clone();
        }
        match &self.template {
            Some(t) => t.replace("{bucket}", bucket),
            None => bucket.to_string(),
        }
    }
}

/// Why a template cannot name buckets, if it cannot.
pub fn check_template(t: &str) -> Result<(), String> {
    if !t.contains("{bucket}") {
        return Err(format!(
            "{t:?} has no {{bucket}}: every source bucket would map to the same site bucket"
        ));
    }
    let rest = t.replace("{bucket}", "");
    if let Some(c) = rest.chars().find(|c| !name_char(*c)) {
        return Err(format!("{t:?}: {c:?} is not allowed in bucket names"));
    }
    Ok(())
}

/// Why `name` is not a bucket name S3 accepts, if it is not (3 to 63 characters, lowercase
/// letters, digits, '.', '-', starting and ending with a letter or digit).
pub fn check_name(name: &str) -> Result<(), String> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = (3..=63).contains(&name.len())
        && name.chars().all(name_char)
        && edge(name.chars().next())
        && edge(name.chars().last());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid bucket name (3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
        ))
    }
}

/// The selected source buckets known to exist: the named ones, or those found by
/// discovery. Shared by the node's roles (read often, written when a bucket is found).
#[derive(Debug, Default)]
pub struct Known {
    set: RwLock<BTreeSet<String>>,
}

impl Known {
    pub fn new(buckets: impl IntoIterator<Item = String>) -> Self {
        Self {
            set: RwLock::new(buckets.into_iter().collect()),
        }
    }

    /// Adds a bucket; true when it was not known.
    pub fn add(&self, bucket: &str) -> bool {
        let mut s = self.set.write().unwrap_or_else(|e| e.into_inner());
        s.insert(bucket.to_string())
    }

    /// Forgets a bucket (deleted at the source); true when it was known.
    pub fn remove(&self, bucket: &str) -> bool {
        let mut s = self.set.write().unwrap_or_else(|e| e.into_inner());
        s.remove(bucket)
    }

    pub fn contains(&self, bucket: &str) -> bool {
        let s = self.set.read().unwrap_or_else(|e| e.into_inner());
        s.contains(bucket)
    }

    /// The known buckets, sorted.
    pub fn list(&self) -> Vec<String> {
        let s = self.set.read().unwrap_or_else(|e| e.into_inner());
        s.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        let s = self.set.read().unwrap_or_else(|e| e.into_inner());
        s.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("*", "anything", true),
            ("logs-*", "logs-2026", true),
            ("logs-*", "logs", false),
            ("logs-*", "xlogs-1", false),
            ("*-dr", "photos-dr", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("photos", "photos", true),
            ("photos", "photos2", false),
            ("*a*", "bab", true),
            ("**", "", true),
        ] {
            assert_eq!(glob(p, n), want, "{p} ~ {n}");
        }
    }

    #[test]
    fn selection_with_exclusions() {
        let s = Selection::new(vec!["*".into()], vec!["tmp-*".into(), "*-dr".into()]);
        assert!(s.matches("photos"));
        assert!(!s.matches("tmp-1"));
        assert!(!s.matches("photos-dr"));
        assert_eq!(s.fixed(), None);
        let f = Selection::new(vec!["a".into(), "b".into()], vec!["b".into()]);
        assert_eq!(f.fixed(), Some(vec!["a".to_string()]));
    }

    #[test]
    fn patterns_and_templates_checked() {
        assert!(check_pattern("logs-*").is_ok());
        assert!(check_pattern("Logs").unwrap_err().contains("'L'"));
        assert!(check_pattern("").is_err());
        assert!(check_template("{bucket}-dr").is_ok());
        assert!(check_template("dr").unwrap_err().contains("{bucket}"));
        assert!(check_template("{bucket}/x").is_err());
        assert!(check_name("photos-dr").is_ok());
        assert!(check_name("-x").is_err());
        assert!(check_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn names_at_a_site() {
        let m = NameMap::new(
            [("a".to_string(), "alpha".to_string())].into(),
            Some("{bucket}-dr".into()),
        );
        assert_eq!(m.dest("a"), "alpha");
        assert_eq!(m.dest("b"), "b-dr");
        assert_eq!(NameMap::default().dest("b"), "b");
    }

    #[test]
    fn known_buckets() {
        let k = Known::new(["b".to_string()]);
        assert!(k.add("a"));
        assert!(!k.add("a"));
        assert_eq!(k.list(), ["a", "b"]);
        assert!(k.remove("b"));
        assert!(!k.contains("b"));
    }
}
