//! GetObjectTagging, PutObjectTagging and DeleteObjectTagging.

use http::Method;
use serde::{Deserialize, Serialize};

use super::xml::{from_xml, to_xml, S3_XMLNS};
use crate::s3::client::{Client, Req};
use crate::s3::error::{op_error, RequestError};
use crate::s3::http::ReqBody;

op_error! {
    /// Why GetObjectTagging or PutObjectTagging failed.
    TaggingError {
        #[error("object not found")]
        NotFound => false, "NoSuchKey";
    }
}

/// The `Tagging` document, read from GetObjectTagging and sent to PutObjectTagging.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Tagging")]
struct Tagging {
    #[serde(rename = "@xmlns", default, skip_deserializing)]
    xmlns: &'static str,
    #[serde(rename = "TagSet", default)]
    tag_set: TagSet,
}

#[derive(Serialize, Deserialize, Default)]
struct TagSet {
    #[serde(rename = "Tag", default)]
    tags: Vec<Tag>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

/// Parses a `Tagging` document into (key, value) pairs, in document order.
fn parse_tagging(body: &[u8]) -> Result<Vec<(String, String)>, RequestError> {
    let doc: Tagging = from_xml(body, "Tagging")?;
    Ok(doc
        .tag_set
        .tags
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect())
}

/// Writes the `Tagging` document of PutObjectTagging.
fn tagging_body(tags: &[(String, String)]) -> Result<String, RequestError> {
    let doc = Tagging {
        xmlns: S3_XMLNS,
        tag_set: TagSet {
            tags: tags
                .iter()
                .map(|(key, value)| Tag {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        },
    };
    to_xml(&doc, "Tagging")
}

impl Client {
    pub async fn get_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, TaggingError> {
        let mut req = Req::new(Method::GET, bucket, Some(key)).query("tagging", "");
        if let Some(v) = version_id {
            req = req.query("versionId", v);
        }
        let resp = match self.send("GetObjectTagging", req, &[]).await {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Err(TaggingError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let body = resp.body.collect(1024 * 1024).await?;
        Ok(parse_tagging(&body)?)
    }

    pub async fn put_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), TaggingError> {
        let xml = tagging_body(tags)?;
        let mut req = Req::new(Method::PUT, bucket, Some(key)).query("tagging", "");
        if let Some(v) = version_id {
            req = req.query("versionId", v);
        }
        let crc = crate::s3::checksum::crc32c(xml.as_bytes());
        let req = req
            .header("content-type", "application/xml")?
            .header("x-amz-checksum-crc32c", &crate::s3::checksum::encode(crc))?
            .body(ReqBody::full(xml));
        match self.send("PutObjectTagging", req, &[]).await {
            Ok(r) => {
                let _ = r.body.collect(64 * 1024).await;
                Ok(())
            }
            Err(e) if e.status() == Some(404) => Err(TaggingError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<(), TaggingError> {
        let mut req = Req::new(Method::DELETE, bucket, Some(key)).query("tagging", "");
        if let Some(v) = version_id {
            req = req.query("versionId", v);
        }
        self.send_ok("DeleteObjectTagging", req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(t: &[(&str, &str)]) -> Vec<(String, String)> {
        t.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn writes_the_body_s3_clients_send() {
        let body = tagging_body(&pairs(&[("a", "1"), ("k<&>\"'", " v ")])).unwrap();
        assert_eq!(
            body,
            "<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet>\
             <Tag><Key>a</Key><Value>1</Value></Tag>\
             <Tag><Key>k&lt;&amp;&gt;&quot;&apos;</Key><Value> v </Value></Tag>\
             </TagSet></Tagging>"
        );
        assert_eq!(
            tagging_body(&[]).unwrap(),
            "<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet></TagSet></Tagging>"
        );
    }

    #[test]
    fn reads_what_it_writes_and_what_servers_send() {
        let tags = pairs(&[("a", "1"), ("k<&>\"'", " v "), ("e", "")]);
        assert_eq!(
            parse_tagging(tagging_body(&tags).unwrap().as_bytes()).unwrap(),
            tags
        );
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<Tagging xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <TagSet>
    <Tag><Key>x</Key><Value>y</Value></Tag>
    <Tag><Key>e</Key><Value/></Tag>
  </TagSet>
</Tagging>"#;
        assert_eq!(parse_tagging(xml).unwrap(), pairs(&[("x", "y"), ("e", "")]));
        assert!(parse_tagging(b"<Tagging><TagSet/></Tagging>")
            .unwrap()
            .is_empty());
        assert!(parse_tagging(b"<Tagging><TagSet>").is_err());
    }
}
