//! What a site's replicas carry beyond bytes and metadata: storage class, server-side
//! encryption, a canned or copied ACL, and the source version's Object Lock. A site's
//! configuration chooses each; [`ReplicaPolicy::attributes`] turns it and the source's HEAD
//! into the headers of the write.
//!
//! Owns: the per-site choices and their defaults. May call: `s3::ops` (the attributes type),
//! `time` (a retention's date read).

use crate::s3::ops::{ObjectHead, ObjectLock, WriteAttributes};

/// Server-side encryption of a site's replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sse {
    /// As the source version is: `AES256` carried as is, `aws:kms` with the site's default
    /// KMS key (a source key id names a key of the source's account and region), a version
    /// under a customer key (SSE-C) written with `AES256` (a replica is never less protected
    /// than SSE-S3).
    #[default]
    Source,
    /// SSE-S3.
    Aes256,
    /// SSE-KMS with this key (absent: the destination's default KMS key).
    Kms(Option<String>),
    /// SSE-C with the site's customer key (sent by its client on every request that reads
    /// or writes bytes, see `s3::customer_key`).
    Customer,
}

/// The ACL of a site's replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Acl {
    /// The destination bucket's default (what a plain PUT gets); ACL changes at the source
    /// are not carried.
    #[default]
    Default,
    /// The source version's ACL document, written after each copy and on each ACL change.
    Copy,
    /// A canned ACL on every replica (for example `bucket-owner-full-control`).
    Canned(String),
}

/// The canned ACLs S3 defines.
pub const CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

/// What a site's replicas carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaPolicy {
    /// A storage class for every replica; absent: the source version's.
    pub storage_class: Option<String>,
    pub sse: Sse,
    pub acl: Acl,
}

/// The lock a replica is written with: the legal hold, and the retention while its date is
/// ahead (S3 refuses a retain-until date in the past, and reports expired ones).
fn in_force(lock: &ObjectLock, now: std::time::SystemTime) -> ObjectLock {
    let ahead = lock
        .retain_until
        .as_deref()
        .and_then(crate::time::parse_rfc3339)
        .is_some_and(|t| t > now);
    match ahead {
        true => lock.clone(),
        false => ObjectLock {
            legal_hold: lock.legal_hold,
            ..Default::default()
        },
    }
}

impl ReplicaPolicy {
    /// The attributes a replica of the version `head` describes is written with. Object
    /// Lock is always carried: a destination without it refuses the write (see
    /// `ErrorKind::NoObjectLock`).
    pub fn attributes(&self, head: &ObjectHead) -> WriteAttributes {
        let storage_class = match &self.storage_class {
            Some(c) => Some(c.clone()),
            None => head
                .storage_class
                .clone()
                .filter(|c| c != "STANDARD" && !c.is_empty()),
        };
        let (sse, kms_key_id) = match &self.sse {
            Sse::Aes256 => (Some("AES256".to_string()), None),
            Sse::Kms(key) => (Some("aws:kms".to_string()), key.clone()),
            Sse::Customer => (None, None),
            Sse::Source => match head.sse.as_deref() {
                Some("aws:kms") | Some("aws:kms:dsse") => (Some("aws:kms".to_string()), None),
                Some(_) => (Some("AES256".to_string()), None),
                None if head.sse_customer_algorithm.is_some() => (Some("AES256".to_string()), None),
                None => (None, None),
            },
        };
        let acl = match &self.acl {
            Acl::Canned(a) => Some(a.clone()),
            Acl::Default | Acl::Copy => None,
        };
        WriteAttributes {
            storage_class,
            sse,
            kms_key_id,
            lock: in_force(&head.lock, std::time::SystemTime::now()),
            acl,
            customer_key: self.sse == Sse::Customer,
        }
    }

    /// The keys as `config show` prints them.
    pub fn shown(&self) -> Vec<(&'static str, String)> {
        let class = self.storage_class.as_deref().unwrap_or("source");
        let mut v = vec![("storage_class", format!("{class:?}"))];
        match &self.sse {
            Sse::Source => v.push(("sse", "\"source\"".into())),
            Sse::Aes256 => v.push(("sse", "\"AES256\"".into())),
            Sse::Customer => v.push(("sse", "\"customer\"".into())),
            Sse::Kms(key) => {
                v.push(("sse", "\"aws:kms\"".into()));
                let key = key.as_deref().unwrap_or("(the destination's default key)");
                v.push(("kms_key_id", format!("{key:?}")));
            }
        }
        let acl = match &self.acl {
            Acl::Default => "default",
            Acl::Copy => "copy",
            Acl::Canned(a) => a,
        };
        v.push(("acl", format!("{acl:?}")));
        v
    }

    /// Parses a site's `sse` and `kms_key_id` keys (`Err` says what is wrong).
    pub fn parse_sse(sse: Option<&str>, kms_key_id: Option<String>) -> Result<Sse, String> {
        match (sse, kms_key_id) {
            (None | Some("source"), None) => Ok(Sse::Source),
            (Some("AES256"), None) => Ok(Sse::Aes256),
            (Some("aws:kms"), key) => Ok(Sse::Kms(key)),
            (Some("customer"), None) => Ok(Sse::Customer),
            (None | Some("source") | Some("AES256") | Some("customer"), Some(_)) => {
                Err("kms_key_id needs sse = \"aws:kms\"".into())
            }
            (Some(other), _) => Err(format!(
                "sse = {other:?}: expected \"source\", \"AES256\", \"aws:kms\" or \"customer\""
            )),
        }
    }

    /// Parses a site's `acl` key.
    pub fn parse_acl(acl: Option<&str>) -> Result<Acl, String> {
        match acl {
            None | Some("default") => Ok(Acl::Default),
            Some("copy") => Ok(Acl::Copy),
            Some(a) if CANNED_ACLS.contains(&a) => Ok(Acl::Canned(a.to_string())),
            Some(a) => Err(format!(
                "acl = {a:?}: expected \"default\", \"copy\" or a canned ACL ({})",
                CANNED_ACLS.join(", ")
            )),
        }
    }

    /// Parses a site's `storage_class` key (`source`: the source version's).
    pub fn parse_storage_class(class: Option<&str>) -> Result<Option<String>, String> {
        match class {
            None | Some("source") => Ok(None),
            Some(c)
                if !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
            {
                Ok(Some(c.to_string()))
            }
            Some(c) => Err(format!(
                "storage_class = {c:?}: expected \"source\" or a class name such as \"STANDARD_IA\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(sse: Option<&str>, class: Option<&str>) -> ObjectHead {
        ObjectHead {
            sse: sse.map(str::to_string),
            sse_kms_key_id: Some("arn:source-key".into()),
            storage_class: class.map(str::to_string),
            lock: ObjectLock {
                mode: Some("GOVERNANCE".into()),
                retain_until: Some("2030-01-01T00:00:00Z".into()),
                legal_hold: true,
            },
            ..Default::default()
        }
    }

    #[test]
    fn same_as_source_carries_what_the_source_has() {
        let p = ReplicaPolicy::default();
        let a = p.attributes(&head(Some("aws:kms"), Some("STANDARD_IA")));
        assert_eq!(a.sse.as_deref(), Some("aws:kms"));
        assert_eq!(a.kms_key_id, None, "a source key id is not carried");
        assert_eq!(a.storage_class.as_deref(), Some("STANDARD_IA"));
        assert!(a.lock.legal_hold);
        assert_eq!(a.lock.mode.as_deref(), Some("GOVERNANCE"));
        let mut expired = head(None, None);
        expired.lock.retain_until = Some("2020-01-01T00:00:00Z".into());
        let e = p.attributes(&expired).lock;
        assert_eq!(
            (e.mode, e.retain_until, e.legal_hold),
            (None, None, true),
            "a past date is not sent"
        );
        let plain = p.attributes(&head(None, Some("STANDARD")));
        assert_eq!((plain.sse, plain.storage_class), (None, None));
        let customer = ObjectHead {
            sse_customer_algorithm: Some("AES256".into()),
            ..Default::default()
        };
        assert_eq!(p.attributes(&customer).sse.as_deref(), Some("AES256"));
    }

    #[test]
    fn a_site_choice_overrides_the_source() {
        let p = ReplicaPolicy {
            storage_class: Some("GLACIER_IR".into()),
            sse: Sse::Kms(Some("alias/dr".into())),
            acl: Acl::Canned("bucket-owner-full-control".into()),
        };
        let a = p.attributes(&head(Some("AES256"), Some("STANDARD_IA")));
        assert_eq!(a.storage_class.as_deref(), Some("GLACIER_IR"));
        assert_eq!(
            (a.sse.as_deref(), a.kms_key_id.as_deref()),
            (Some("aws:kms"), Some("alias/dr"))
        );
        assert_eq!(a.acl.as_deref(), Some("bucket-owner-full-control"));
        assert!(!a.etag_is_md5());
        let customer = ReplicaPolicy {
            sse: Sse::Customer,
            ..Default::default()
        };
        let c = customer.attributes(&head(Some("AES256"), None));
        assert_eq!(
            (c.sse.as_deref(), c.customer_key),
            (None, true),
            "the client sends the key"
        );
        assert!(!c.etag_is_md5());
    }

    #[test]
    fn bad_values_are_named() {
        assert!(ReplicaPolicy::parse_sse(Some("aes"), None)
            .unwrap_err()
            .contains("\"aes\""));
        assert!(ReplicaPolicy::parse_sse(Some("AES256"), Some("k".into())).is_err());
        assert_eq!(
            ReplicaPolicy::parse_sse(Some("aws:kms"), None),
            Ok(Sse::Kms(None))
        );
        assert!(ReplicaPolicy::parse_acl(Some("everyone"))
            .unwrap_err()
            .contains("bucket-owner-full-control"));
        assert_eq!(ReplicaPolicy::parse_acl(Some("copy")), Ok(Acl::Copy));
        assert!(ReplicaPolicy::parse_storage_class(Some("standard ia")).is_err());
        assert_eq!(ReplicaPolicy::parse_storage_class(Some("source")), Ok(None));
    }
}
