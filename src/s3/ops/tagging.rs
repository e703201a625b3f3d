//! GetObjectTagging and PutObjectTagging.

use http::Method;

use super::{walk_xml, xml_escape};
use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;
use crate::s3::http::ReqBody;

op_error! {
    /// Why GetObjectTagging or PutObjectTagging failed.
    TaggingError {
        #[error("object not found")]
        NotFound => false, "NoSuchKey";
    }
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
        let mut tags = Vec::new();
        let mut cur: (String, String) = Default::default();
        walk_xml(&body, |path, text| match (path, text) {
            ("TagSet/Tag", None) => cur = Default::default(),
            ("TagSet/Tag/Key", Some(t)) => cur.0 = t.to_string(),
            ("TagSet/Tag/Value", Some(t)) => cur.1 = t.to_string(),
            ("TagSet/Tag/", None) => tags.push(std::mem::take(&mut cur)),
            _ => {}
        })?;
        Ok(tags)
    }

    pub async fn put_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), TaggingError> {
        let mut xml =
            String::from("<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><TagSet>");
        for (k, v) in tags {
            xml.push_str(&format!(
                "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                xml_escape(k),
                xml_escape(v)
            ));
        }
        xml.push_str("</TagSet></Tagging>");
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
}
