//! ListBuckets: the buckets the credentials own (site-level replication discovers new source
//! buckets with it). Paged with `continuation-token` where the server pages (AWS since
//! 2024); servers that do not page answer everything at once.

use http::Method;
use serde::Deserialize;

use super::bucket::BucketError;
use super::xml::{from_xml, non_empty};
use crate::s3::client::{Client, Req};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAllMyBucketsResult {
    #[serde(default)]
    buckets: Buckets,
    #[serde(default, deserialize_with = "non_empty")]
    continuation_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Buckets {
    #[serde(default)]
    bucket: Vec<Bucket>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Bucket {
    name: String,
}

/// One page: bucket names, and the token of the next page if there is one.
fn parse(body: &[u8]) -> Result<(Vec<String>, Option<String>), crate::s3::error::RequestError> {
    let doc: ListAllMyBucketsResult = from_xml(body, "ListAllMyBucketsResult")?;
    let names = doc.buckets.bucket.into_iter().map(|b| b.name).collect();
    Ok((names, doc.continuation_token))
}

/// At most this many pages (of up to 10 000 buckets each): a server that keeps answering a
/// token is not followed for ever.
const MAX_PAGES: usize = 100;

impl Client {
    /// Every bucket name the credentials own, sorted.
    pub async fn list_buckets(&self) -> Result<Vec<String>, BucketError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut req = Req::new(Method::GET, "", None).query("max-buckets", "10000");
            if let Some(t) = &token {
                req = req.query("continuation-token", t.clone());
            }
            let resp = self.send("ListBuckets", req, &[]).await?;
            let body = resp.body.collect(16 * 1024 * 1024).await?;
            let (page, next) = parse(&body)?;
            names.extend(page);
            match next {
                Some(t) if token.as_deref() != Some(t.as_str()) => token = Some(t),
                _ => break,
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_read() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>x</ID></Owner>
<Buckets><Bucket><Name>b</Name><CreationDate>2026-01-01T00:00:00.000Z</CreationDate></Bucket>
<Bucket><Name>a</Name><CreationDate>2026-01-01T00:00:00.000Z</CreationDate></Bucket></Buckets>
<ContinuationToken>t1</ContinuationToken></ListAllMyBucketsResult>"#;
        let (names, next) = parse(xml).unwrap();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(next.as_deref(), Some("t1"));
        let empty = b"<ListAllMyBucketsResult><Buckets/></ListAllMyBucketsResult>";
        assert_eq!(parse(empty).unwrap(), (vec![], None));
    }
}
