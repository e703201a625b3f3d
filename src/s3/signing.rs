//! SigV4 request signing with aws-sigv4. Payloads are never hashed: requests are signed with
//! `UNSIGNED-PAYLOAD`, or `STREAMING-UNSIGNED-PAYLOAD-TRAILER` for aws-chunked bodies that
//! carry a CRC32C trailer.

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
        }
    }

    /// Adds `x-amz-date`, `x-amz-content-sha256`, the session token if any, and
    /// `Authorization` to `req`. The request's URI must be in encoded origin form and its
    /// `host` header set.
    pub fn sign<B>(
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
