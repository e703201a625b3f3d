//! SigV4 request signing. Payloads are never hashed: requests are signed with
//! `UNSIGNED-PAYLOAD`, or `STREAMING-UNSIGNED-PAYLOAD-TRAILER` for aws-chunked bodies that
//! carry a CRC32C trailer.
//!
//! [`Signer::sign`] is the fast path: the canonical request is built in one buffer and the
//! day's signing key is cached, so a request costs two SHA-256 passes (the canonical request
//! and one HMAC) instead of six. [`Signer::sign_reference`] signs with aws-sigv4; the tests
//! check the fast path against it byte for byte on generated requests, and both against the
//! AWS documentation's examples.

use std::fmt;
use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::error::RequestError;

/// An access key pair. Its `Debug` output never shows the secret or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .finish()
    }
}

/// How the payload is declared in `x-amz-content-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    Unsigned,
    StreamingUnsignedTrailer,
    /// A hash computed elsewhere (only the signing tests use it).
    Precomputed(&'a str),
}

/// Signs requests for one endpoint and region.
#[derive(Clone)]
pub struct Signer {
    identity: Identity,
    region: String,
    access_key_id: String,
    session_token: Option<String>,
    secret: std::sync::Arc<str>,
    /// The signing key of one day (days since the epoch), derived once per day.
    key: std::sync::Arc<std::sync::Mutex<Option<(u64, ring::hmac::Key)>>>,
}

/// Headers aws-sigv4 leaves out of the signature by default (altered by proxies).
const EXCLUDED: [&str; 4] = [
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// Characters left as they are in canonical query strings (RFC 3986 unreserved).
const QUERY_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `YYYYMMDD` and `YYYYMMDDTHHMMSSZ` of a time (UTC), and its day number.
fn amz_dates(time: SystemTime) -> (String, String, u64) {
    let u = crate::time::Utc::of(time);
    let date = format!("{:04}{:02}{:02}", u.year, u.month, u.day);
    let datetime = format!("{date}T{:02}{:02}{:02}Z", u.hour, u.minute, u.second);
    (date, datetime, crate::time::Utc::days(time))
}

/// Trims spaces and folds runs of spaces into one (SigV4 header value normalization).
fn push_trimmed(out: &mut String, v: &str) {
    let v = v.trim_matches(' ');
    let mut prev_space = false;
    for c in v.chars() {
        if c == ' ' {
            if !prev_space {
                out.push(' ');
            }
            prev_space = true;
        } else {
            out.push(c);
            prev_space = false;
        }
    }
}

/// The canonical query string: pairs decoded as `application/x-www-form-urlencoded`,
/// re-encoded, sorted.
fn push_canonical_query(out: &mut String, query: &str) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let dec = |x: &str| -> String {
            let plus = x.replace('+', " ");
            let bytes: Vec<u8> = percent_encoding::percent_decode_str(&plus).collect();
            let text = String::from_utf8_lossy(&bytes);
            percent_encoding::utf8_percent_encode(&text, QUERY_SET).to_string()
        };
        pairs.push((dec(k), dec(v)));
    }
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
}

fn hex_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .finish()
    }
}

fn settings() -> SigningSettings {
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s
}

impl Signer {
    pub fn new(credentials: &Credentials, region: &str) -> Self {
        let creds = aws_credential_types::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.clone(),
            credentials.session_token.clone(),
            None,
            "backbeat",
        );
        Self {
            identity: creds.into(),
            region: region.to_string(),
            access_key_id: credentials.access_key_id.clone(),
            session_token: credentials.session_token.clone(),
            secret: credentials.secret_access_key.as_str().into(),
            key: Default::default(),
        }
    }

    /// The signing key of `day` (cached: derived once a day).
    fn signing_key(&self, day: u64, date: &str) -> ring::hmac::Key {
        let mut cached = self.key.lock().expect("signing key cache");
        if let Some((d, k)) = cached.as_ref() {
            if *d == day {
                return k.clone();
            }
        }
        let step = |key: &[u8], data: &str| {
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
            ring::hmac::sign(&k, data.as_bytes())
        };
        let k_date = step(format!("AWS4{}", self.secret).as_bytes(), date);
        let k_region = step(k_date.as_ref(), &self.region);
        let k_service = step(k_region.as_ref(), "s3");
        let k_signing = step(k_service.as_ref(), "aws4_request");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k_signing.as_ref());
        *cached = Some((day, key.clone()));
        key
    }

    /// Adds `x-amz-date`, `x-amz-content-sha256`, the session token if any, and
    /// `Authorization` to `req`, exactly as [`Signer::sign_reference`] does. The request's
    /// URI must be in encoded origin form and its `host` header set.
    pub fn sign<B>(
        &self,
        req: &mut http::Request<B>,
        payload: Payload<'_>,
        time: SystemTime,
    ) -> Result<(), RequestError> {
        if !req.headers().contains_key(http::header::HOST) {
            // Host from the URI's authority: not how the client builds requests.
            return self.sign_reference(req, payload, time);
        }
        let (date, datetime, day) = amz_dates(time);
        let payload_hash = match payload {
            Payload::Unsigned => "UNSIGNED-PAYLOAD",
            Payload::StreamingUnsignedTrailer => "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            Payload::Precomputed(h) => h,
        };
        let all = self.headers_to_sign(req.headers(), &datetime, payload_hash);
        let mut creq = String::with_capacity(512);
        creq.push_str(req.method().as_str());
        creq.push('\n');
        creq.push_str(req.uri().path());
        creq.push('\n');
        push_canonical_query(&mut creq, req.uri().query().unwrap_or(""));
        creq.push('\n');
        let signed = push_canonical_headers(&mut creq, &all)?;
        creq.push('\n');
        creq.push_str(&signed);
        creq.push('\n');
        creq.push_str(payload_hash);
        let auth = self.authorization(&creq, &date, &datetime, day, &signed);
        let value = |v: &str| {
            http::HeaderValue::from_str(v)
                .map_err(|e| RequestError::InvalidRequest(format!("signing header: {e}")))
        };
        let h = req.headers_mut();
        h.insert("x-amz-date", value(&datetime)?);
        h.insert(http::header::AUTHORIZATION, value(&auth)?);
        h.insert("x-amz-content-sha256", value(payload_hash)?);
        if let Some(t) = &self.session_token {
            let mut v = value(t)?;
            v.set_sensitive(true);
            h.insert("x-amz-security-token", v);
        }
        Ok(())
    }

    /// The headers to sign, sorted by name: the request's (minus the excluded and those this
    /// signer sets), with `x-amz-date`, `x-amz-content-sha256` and the session token added
    /// (as plain strings: they are not in the request yet).
    fn headers_to_sign<'a>(
        &'a self,
        headers: &'a http::HeaderMap,
        datetime: &'a str,
        payload_hash: &'a str,
    ) -> Vec<SignedHeader<'a>> {
        let mut all: Vec<SignedHeader<'a>> = Vec::with_capacity(headers.len() + 3);
        for (name, value) in headers {
            let n = name.as_str();
            if EXCLUDED.contains(&n)
                || n == "x-amz-date"
                || n == "x-amz-content-sha256"
                || (n == "x-amz-security-token" && self.session_token.is_some())
            {
                continue;
            }
            all.push((n, Some(value), ""));
        }
        all.push(("x-amz-date", None, datetime));
        all.push(("x-amz-content-sha256", None, payload_hash));
        if let Some(t) = &self.session_token {
            all.push(("x-amz-security-token", None, t.as_str()));
        }
        // Stable: the request's own headers keep their order among equal names.
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// The `Authorization` value for a canonical request: the string to sign hashed with
    /// the day's (cached) signing key.
    fn authorization(
        &self,
        creq: &str,
        date: &str,
        datetime: &str,
        day: u64,
        signed: &str,
    ) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, creq.as_bytes());
        let mut sts = String::with_capacity(160);
        sts.push_str("AWS4-HMAC-SHA256\n");
        sts.push_str(datetime);
        sts.push('\n');
        let scope_start = sts.len();
        sts.push_str(date);
        sts.push('/');
        sts.push_str(&self.region);
        sts.push_str("/s3/aws4_request");
        let scope_end = sts.len();
        sts.push('\n');
        hex_into(&mut sts, digest.as_ref());
        let key = self.signing_key(day, date);
        let tag = ring::hmac::sign(&key, sts.as_bytes());
        let mut auth = String::with_capacity(256);
        auth.push_str("AWS4-HMAC-SHA256 Credential=");
        auth.push_str(&self.access_key_id);
        auth.push('/');
        auth.push_str(&sts[scope_start..scope_end]);
        auth.push_str(", SignedHeaders=");
        auth.push_str(signed);
        auth.push_str(", Signature=");
        hex_into(&mut auth, tag.as_ref());
        auth
    }

    /// Signs with aws-sigv4 (the reference the fast path is checked against).
    pub fn sign_reference<B>(
        &self,
        req: &mut http::Request<B>,
        payload: Payload<'_>,
        time: SystemTime,
    ) -> Result<(), RequestError> {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(time)
            .settings(settings())
            .build()
            .map_err(|e| RequestError::InvalidRequest(format!("signing parameters: {e}")))?
            .into();
        let mut headers = Vec::with_capacity(req.headers().len());
        for (name, value) in req.headers() {
            let value = value
                .to_str()
                .map_err(|_| RequestError::InvalidRequest(format!("header {name} is not ASCII")))?;
            headers.push((name.as_str(), value));
        }
        let body = match payload {
            Payload::Unsigned => SignableBody::UnsignedPayload,
            Payload::StreamingUnsignedTrailer => SignableBody::StreamingUnsignedPayloadTrailer,
            Payload::Precomputed(h) => SignableBody::Precomputed(h.to_string()),
        };
        let uri = req.uri().to_string();
        let signable = SignableRequest::new(req.method().as_str(), uri, headers.into_iter(), body)
            .map_err(|e| RequestError::InvalidRequest(format!("cannot sign request: {e}")))?;
        let (instructions, _sig) = sign(signable, &params)
            .map_err(|e| RequestError::InvalidRequest(format!("cannot sign request: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

/// A header to sign: its name, and its value in the request or (added by the signer) as a
/// string.
type SignedHeader<'a> = (&'a str, Option<&'a http::HeaderValue>, &'a str);

/// Appends the canonical headers (`name:value` lines, values of a repeated name joined with
/// commas and trimmed) to `creq`; returns the signed-headers list (`a;b;c`).
fn push_canonical_headers(
    creq: &mut String,
    all: &[SignedHeader<'_>],
) -> Result<String, RequestError> {
    let mut signed = String::with_capacity(128);
    let mut i = 0;
    while i < all.len() {
        let name = all[i].0;
        creq.push_str(name);
        creq.push(':');
        if !signed.is_empty() {
            signed.push(';');
        }
        signed.push_str(name);
        let mut first = true;
        while i < all.len() && all[i].0 == name {
            if !first {
                creq.push(',');
            }
            first = false;
            let v = match all[i].1 {
                Some(v) => v.to_str().map_err(|_| {
                    RequestError::InvalidRequest(format!("header {name} is not ASCII"))
                })?,
                None => all[i].2,
            };
            push_trimmed(creq, v);
            i += 1;
        }
        creq.push('\n');
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    //! The examples of the AWS documentation, "Signature Calculations for the Authorization
    //! Header: Transferring Payload in a Single Chunk (AWS Signature Version 4)".
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn signer() -> Signer {
        Signer::new(
            &Credentials {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            },
            "us-east-1",
        )
    }

    fn time() -> SystemTime {
        // 20130524T000000Z
        UNIX_EPOCH + Duration::from_secs(1_369_353_600)
    }

    fn signature(req: &http::Request<()>) -> String {
        let auth = req.headers()["authorization"].to_str().unwrap();
        auth.rsplit("Signature=").next().unwrap().to_string()
    }

    #[test]
    fn get_object_example() {
        let mut req = http::Request::get("/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .body(())
            .unwrap();
        signer()
            .sign(&mut req, Payload::Precomputed(EMPTY_SHA), time())
            .unwrap();
        assert_eq!(
            signature(&req),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"));
    }

    #[test]
    fn put_object_example() {
        let mut req = http::Request::put("/test%24file.text")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("date", "Fri, 24 May 2013 00:00:00 GMT")
            .header("x-amz-storage-class", "REDUCED_REDUNDANCY")
            .body(())
            .unwrap();
        signer()
            .sign(
                &mut req,
                Payload::Precomputed(
                    "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
                ),
                time(),
            )
            .unwrap();
        assert_eq!(
            signature(&req),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn get_bucket_lifecycle_example() {
        let mut req = http::Request::get("/?lifecycle")
            .header("host", "examplebucket.s3.amazonaws.com")
            .body(())
            .unwrap();
        signer()
            .sign(&mut req, Payload::Precomputed(EMPTY_SHA), time())
            .unwrap();
        assert_eq!(
            signature(&req),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn list_objects_example() {
        let mut req = http::Request::get("/?max-keys=2&prefix=J")
            .header("host", "examplebucket.s3.amazonaws.com")
            .body(())
            .unwrap();
        signer()
            .sign(&mut req, Payload::Precomputed(EMPTY_SHA), time())
            .unwrap();
        assert_eq!(
            signature(&req),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn unsigned_payload_header() {
        let mut req = http::Request::get("/b/k")
            .header("host", "h")
            .body(())
            .unwrap();
        signer().sign(&mut req, Payload::Unsigned, time()).unwrap();
        assert_eq!(req.headers()["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        let mut req = http::Request::put("/b/k")
            .header("host", "h")
            .body(())
            .unwrap();
        signer()
            .sign(&mut req, Payload::StreamingUnsignedTrailer, time())
            .unwrap();
        assert_eq!(
            req.headers()["x-amz-content-sha256"],
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        );
    }

    fn headers_of(req: &http::Request<()>) -> Vec<(String, Vec<u8>)> {
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn documentation_examples_with_the_reference_signer_too() {
        let mut req = http::Request::get("/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .body(())
            .unwrap();
        signer()
            .sign_reference(&mut req, Payload::Precomputed(EMPTY_SHA), time())
            .unwrap();
        assert_eq!(
            signature(&req),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn dates_across_leap_days_and_centuries() {
        // Expected values from `date -u -d @SECS +%Y%m%dT%H%M%SZ`.
        for (secs, want) in [
            (0u64, "19700101T000000Z"),
            (951_782_400, "20000229T000000Z"),
            (1_369_353_600, "20130524T000000Z"),
            (4_107_542_399, "21000228T235959Z"),
            (4_102_444_800, "21000101T000000Z"),
            (1_709_164_800, "20240229T000000Z"),
        ] {
            let (date, datetime, _) = amz_dates(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(datetime, want);
            assert_eq!(date, &want[..8]);
        }
    }

    mod equivalence {
        use super::*;
        use proptest::prelude::*;

        fn key() -> impl Strategy<Value = String> {
            prop_oneof!["[a-zA-Z0-9/._~-]{1,40}", "\\PC{1,20}", "[ !-~]{1,30}",]
        }

        fn query() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
            let names = prop::sample::select(vec![
                "versionId",
                "partNumber",
                "uploadId",
                "prefix",
                "key-marker",
                "version-id-marker",
                "list-type",
                "max-keys",
                "tagging",
                "versions",
                "uploads",
                "delete",
                "x-id",
                "continuation-token",
            ]);
            prop::collection::vec((names, prop::option::of("[ -~]{0,20}|\\PC{0,8}")), 0..5)
                .prop_map(|v| v.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        }

        fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
            let names = prop::sample::select(vec![
                "range",
                "content-length",
                "content-type",
                "x-amz-meta-a",
                "x-amz-meta-zz",
                "x-amz-checksum-crc32c",
                "x-amz-checksum-mode",
                "x-amz-tagging",
                "x-amz-metadata-directive",
                "user-agent",
                "x-amz-date",
                "expect",
                "x-amz-trailer",
                "content-encoding",
                "x-amz-decoded-content-length",
                "x-amz-security-token",
            ]);
            prop::collection::vec((names, "[ -~]{0,30}"), 0..8)
                .prop_map(|v| v.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn fast_path_is_byte_identical_to_aws_sigv4(
                method in prop::sample::select(vec!["GET", "PUT", "HEAD", "POST", "DELETE"]),
                bucket in "[a-z0-9-]{3,20}",
                k in key(),
                q in query(),
                hs in headers(),
                host in "[a-z0-9.-]{1,20}(:[0-9]{2,5})?",
                secs in 946_684_800u64..4_102_444_800,
                token in prop::option::of("[A-Za-z0-9/+=]{10,60}"),
                region in prop::sample::select(vec!["us-east-1", "eu-west-3", "garage"]),
                payload in 0usize..3,
            ) {
                let mut uri = format!("/{bucket}/{}", crate::s3::client::encode_key(&k));
                for (i, (name, v)) in q.iter().enumerate() {
                    uri.push(if i == 0 { '?' } else { '&' });
                    uri.push_str(name);
                    if let Some(v) = v {
                        uri.push('=');
                        uri.push_str(&percent_encoding::utf8_percent_encode(v, QUERY_SET).to_string());
                    }
                }
                let mut b = http::Request::builder().method(method).uri(&uri).header("host", &host);
                for (n, v) in &hs {
                    b = b.header(n.as_str(), v.as_str());
                }
                let base = b.body(()).unwrap();
                let signer = Signer::new(
                    &Credentials {
                        access_key_id: "AKIDEXAMPLE".into(),
                        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                        session_token: token,
                    },
                    region,
                );
                let payload = match payload {
                    0 => Payload::Unsigned,
                    1 => Payload::StreamingUnsignedTrailer,
                    _ => Payload::Precomputed(EMPTY_SHA),
                };
                let t = UNIX_EPOCH + Duration::from_secs(secs);
                let clone = |r: &http::Request<()>| {
                    let mut c = http::Request::builder().method(r.method()).uri(r.uri()).body(()).unwrap();
                    *c.headers_mut() = r.headers().clone();
                    c
                };
                let (mut fast, mut reference) = (clone(&base), clone(&base));
                let a = signer.sign(&mut fast, payload, t);
                let b = signer.sign_reference(&mut reference, payload, t);
                prop_assert_eq!(a.is_ok(), b.is_ok());
                prop_assert_eq!(headers_of(&fast), headers_of(&reference));
                prop_assert_eq!(fast.uri(), reference.uri());
                // A second request the same day uses the cached key: still identical.
                let (mut fast2, mut reference2) = (clone(&base), clone(&base));
                let t2 = t + Duration::from_secs(1);
                let _ = signer.sign(&mut fast2, payload, t2);
                let _ = signer.sign_reference(&mut reference2, payload, t2);
                prop_assert_eq!(headers_of(&fast2), headers_of(&reference2));
            }
        }
    }

    #[test]
    fn debug_hides_secret() {
        let c = Credentials {
            access_key_id: "AK".into(),
            secret_access_key: "SECRETVALUE".into(),
            session_token: Some("TOKENVALUE".into()),
        };
        let s = format!("{c:?}");
        assert!(!s.contains("SECRETVALUE") && !s.contains("TOKENVALUE"));
    }
}
