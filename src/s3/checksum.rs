//! CRC32C in the form S3 uses (base64 of the big-endian 4-byte value), and what an ETag
//! says of how an object was uploaded.

use base64::Engine;

/// base64 of the big-endian CRC32C, as in `x-amz-checksum-crc32c`.
pub fn encode(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Parses a full-object CRC32C header value. Composite checksums of multipart objects
/// (`...-N`) and malformed values give `None`.
pub fn decode(value: &str) -> Option<u32> {
    if value.contains('-') {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let arr: [u8; 4] = raw.as_slice().try_into().ok()?;
    Some(u32::from_be_bytes(arr))
}

/// CRC32C of a byte slice.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Whether an ETag is a multipart upload's (`<hash>-<parts>`).
pub fn is_multipart_etag(etag: &str) -> bool {
    let e = etag.trim_matches('"');
    e.rsplit_once('-').is_some_and(|(hash, n)| {
        !hash.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(encode(crc32c(b"hello")), "mnG7TA==");
        assert_eq!(encode(crc32c(b"")), "AAAAAA==");
        // RFC 3720 test vector: 32 bytes of zeros
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(decode("mnG7TA=="), Some(crc32c(b"hello")));
        assert_eq!(decode("mnG7TA==-3"), None);
        assert_eq!(decode("zz"), None);
    }
}
