//! GetObjectAcl and PutObjectAcl: a version's grants, read from the source's
//! `AccessControlPolicy` document and written to a replica as `x-amz-grant-*` headers (the
//! form every S3 server takes; the owner element of a document differs across accounts), or
//! a canned ACL.

use http::Method;
use serde::Deserialize;

use super::tagging::TaggingError;
use super::xml::from_xml;
use crate::s3::client::{Client, Req};

/// One grant: a permission (`READ`, `WRITE`, `READ_ACP`, `WRITE_ACP`, `FULL_CONTROL`) and
/// its grantee as a header names it (`id="..."`, `uri="..."`, `emailAddress="..."`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub permission: String,
    pub grantee: String,
}

/// A version's ACL to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectAcl {
    Grants(Vec<Grant>),
    /// A canned ACL (`x-amz-acl`).
    Canned(String),
}

#[derive(Deserialize)]
struct AccessControlPolicy {
    #[serde(rename = "AccessControlList", default)]
    list: AccessControlList,
}

#[derive(Deserialize, Default)]
struct AccessControlList {
    #[serde(rename = "Grant", default)]
    grants: Vec<GrantXml>,
}

#[derive(Deserialize)]
struct GrantXml {
    #[serde(rename = "Grantee")]
    grantee: Grantee,
    #[serde(rename = "Permission")]
    permission: String,
}

#[derive(Deserialize)]
struct Grantee {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "URI")]
    uri: Option<String>,
    #[serde(rename = "EmailAddress")]
    email: Option<String>,
}

/// The grants of an `AccessControlPolicy` document, sorted.
fn parse_grants(body: &[u8]) -> Result<Vec<Grant>, crate::s3::error::RequestError> {
    let doc: AccessControlPolicy = from_xml(body, "AccessControlPolicy")?;
    let mut grants: Vec<Grant> = doc
        .list
        .grants
        .into_iter()
        .filter_map(|g| {
            let grantee = match (g.grantee.id, g.grantee.uri, g.grantee.email) {
                (Some(id), _, _) => format!("id=\"{id}\""),
                (None, Some(uri), _) => format!("uri=\"{uri}\""),
                (None, None, Some(e)) => format!("emailAddress=\"{e}\""),
                _ => return None,
            };
            let permission = g.permission.trim().to_string();
            Some(Grant {
                permission,
                grantee,
            })
        })
        .collect();
    grants.sort();
    grants.dedup();
    Ok(grants)
}

/// The header that grants `permission`.
fn grant_header(permission: &str) -> Option<&'static str> {
    Some(match permission {
        "READ" => "x-amz-grant-read",
        "WRITE" => "x-amz-grant-write",
        "READ_ACP" => "x-amz-grant-read-acp",
        "WRITE_ACP" => "x-amz-grant-write-acp",
        "FULL_CONTROL" => "x-amz-grant-full-control",
        _ => return None,
    })
}

impl Client {
    /// The grants of a version, sorted.
    pub async fn get_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<Grant>, TaggingError> {
        let mut req = Req::new(Method::GET, bucket, Some(key)).query("acl", "");
        if let Some(v) = version_id {
            req = req.query("versionId", v);
        }
        let resp = match self.send("GetObjectAcl", req, &[]).await {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Err(TaggingError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let body = resp.body.collect(1024 * 1024).await?;
        Ok(parse_grants(&body)?)
    }

    pub async fn put_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        acl: &ObjectAcl,
    ) -> Result<(), TaggingError> {
        let mut req = Req::new(Method::PUT, bucket, Some(key)).query("acl", "");
        if let Some(v) = version_id {
            req = req.query("versionId", v);
        }
        match acl {
            ObjectAcl::Canned(c) => req = req.header("x-amz-acl", c)?,
            ObjectAcl::Grants(grants) => {
                for (header, permission) in [
                    ("x-amz-grant-read", "READ"),
                    ("x-amz-grant-write", "WRITE"),
                    ("x-amz-grant-read-acp", "READ_ACP"),
                    ("x-amz-grant-write-acp", "WRITE_ACP"),
                    ("x-amz-grant-full-control", "FULL_CONTROL"),
                ] {
                    debug_assert_eq!(grant_header(permission), Some(header));
                    let who: Vec<&str> = grants
                        .iter()
                        .filter(|g| g.permission == permission)
                        .map(|g| g.grantee.as_str())
                        .collect();
                    if !who.is_empty() {
                        req = req.header(header, &who.join(", "))?;
                    }
                }
            }
        }
        self.send_ok("PutObjectAcl", req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_grants_of_a_policy_document() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Owner><ID>owner1</ID><DisplayName>o</DisplayName></Owner>
  <AccessControlList>
    <Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>owner1</ID><DisplayName>o</DisplayName></Grantee><Permission>FULL_CONTROL</Permission></Grant>
    <Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group"><URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ</Permission></Grant>
  </AccessControlList>
</AccessControlPolicy>"#;
        let g = parse_grants(xml).unwrap();
        assert_eq!(
            g,
            vec![
                Grant {
                    permission: "FULL_CONTROL".into(),
                    grantee: "id=\"owner1\"".into()
                },
                Grant {
                    permission: "READ".into(),
                    grantee: "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\"".into()
                },
            ]
        );
        assert_eq!(grant_header("READ_ACP"), Some("x-amz-grant-read-acp"));
        assert_eq!(grant_header("OTHER"), None);
        assert!(parse_grants(b"<AccessControlPolicy>").is_err());
    }
}
