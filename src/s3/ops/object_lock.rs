//! PutObjectRetention and PutObjectLegalHold: a version's Object Lock state, set after it
//! was written (a replica follows its source's changes).

use http::Method;
use serde::Serialize;

use super::tagging::TaggingError;
use super::xml::{to_xml, S3_XMLNS};
use crate::s3::client::{Client, Req};
use crate::s3::error::RequestError;
use crate::s3::http::ReqBody;

/// The `Retention` document (both absent: no retention).
#[derive(Serialize)]
#[serde(rename = "Retention")]
struct Retention<'a> {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    #[serde(rename = "Mode", skip_serializing_if = "Option::is_none")]
    mode: Option<&'a str>,
    #[serde(rename = "RetainUntilDate", skip_serializing_if = "Option::is_none")]
    retain_until: Option<&'a str>,
}

/// The `LegalHold` document.
#[derive(Serialize)]
#[serde(rename = "LegalHold")]
struct LegalHold {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    #[serde(rename = "Status")]
    status: &'static str,
}

/// A `?query` request on a version with an XML body and its CRC32C (these operations
/// require a checksum).
pub(crate) fn xml_request<'a>(
    bucket: &'a str,
    key: &'a str,
    query: &'static str,
    version_id: Option<&'a str>,
    xml: String,
) -> Result<Req<'a>, RequestError> {
    let mut req = Req::new(Method::PUT, bucket, Some(key)).query(query, "");
    if let Some(v) = version_id {
        req = req.query("versionId", v);
    }
    let crc = crate::s3::checksum::crc32c(xml.as_bytes());
    Ok(req
        .header("content-type", "application/xml")?
        .header("x-amz-checksum-crc32c", &crate::s3::checksum::encode(crc))?
        .body(ReqBody::full(xml)))
}

impl Client {
    /// Sets (or, with `mode` absent, removes) a version's retention. Shortening or removing
    /// a GOVERNANCE retention bypasses it (the caller needs `s3:BypassGovernanceRetention`).
    pub async fn put_object_retention(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        mode: Option<&str>,
        retain_until: Option<&str>,
    ) -> Result<(), TaggingError> {
        let doc = Retention {
            xmlns: S3_XMLNS,
            mode,
            retain_until: mode.and(retain_until),
        };
        let xml = to_xml(&doc, "Retention")?;
        let req = xml_request(bucket, key, "retention", version_id, xml)?
            .header("x-amz-bypass-governance-retention", "true")?;
        self.send_ok("PutObjectRetention", req).await
    }

    /// Puts a version's legal hold on or off.
    pub async fn put_object_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        on: bool,
    ) -> Result<(), TaggingError> {
        let doc = LegalHold {
            xmlns: S3_XMLNS,
            status: if on { "ON" } else { "OFF" },
        };
        let xml = to_xml(&doc, "LegalHold")?;
        let req = xml_request(bucket, key, "legal-hold", version_id, xml)?;
        self.send_ok("PutObjectLegalHold", req).await
    }

    /// Sends a request whose response body says nothing (404: [`TaggingError::NotFound`]).
    pub(crate) async fn send_ok(&self, op: &'static str, req: Req<'_>) -> Result<(), TaggingError> {
        match self.send(op, req, &[]).await {
            Ok(r) => {
                let _ = r.body.collect(64 * 1024).await;
                Ok(())
            }
            Err(e) if e.status() == Some(404) => Err(TaggingError::NotFound),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_those_s3_clients_send() {
        let r = Retention {
            xmlns: S3_XMLNS,
            mode: Some("GOVERNANCE"),
            retain_until: Some("2030-01-01T00:00:00Z"),
        };
        assert_eq!(
            to_xml(&r, "Retention").unwrap(),
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>GOVERNANCE</Mode>\
             <RetainUntilDate>2030-01-01T00:00:00Z</RetainUntilDate></Retention>"
        );
        let h = LegalHold {
            xmlns: S3_XMLNS,
            status: "ON",
        };
        assert_eq!(
            to_xml(&h, "LegalHold").unwrap(),
            "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>ON</Status></LegalHold>"
        );
    }
}
