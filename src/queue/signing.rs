//! Signed records: with `kafka.signing_key_file`, every record the engine writes carries an
//! HMAC-SHA256 of its key and value under a shared key (a header), and the records it acts
//! on (replication and replay entries, control records, failed records) are checked before
//! anything is done with them. Anyone who can write to the topics but does not hold the key
//! cannot make a node copy, pause or retry anything. Without a key nothing is signed or
//! checked.
//!
//! The key is set once per process at start, like the transport settings.

use std::sync::OnceLock;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use ring::hmac;

/// The header that carries a record's signature (hex).
pub const HEADER: &str = "backbeat-signature";

/// The shared key, and its bytes (to tell a second, different key apart).
static KEY: OnceLock<(Vec<u8>, hmac::Key)> = OnceLock::new();

/// Signs every record this process writes from now on, and checks those it acts on. Once:
/// a later call with another key is refused (false) and changes nothing.
pub fn sign_with(key: &[u8]) -> bool {
    let set = KEY.get_or_init(|| (key.to_vec(), hmac::Key::new(hmac::HMAC_SHA256, key)));
    set.0 == key
}

/// What is signed: the key's length and bytes, then whether there is a value, and the value.
fn signed_bytes(key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + key.len() + value.map_or(0, <[u8]>::len));
    b.extend_from_slice(&(key.len() as u64).to_be_bytes());
    b.extend_from_slice(key);
    b.push(u8::from(value.is_some()));
    b.extend_from_slice(value.unwrap_or(&[]));
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// The headers a record of `key` and `value` is written with: its signature, when signing.
pub fn headers(key: &str, value: Option<&[u8]>) -> Option<OwnedHeaders> {
    let (_, k) = KEY.get()?;
    let tag = hmac::sign(k, &signed_bytes(key.as_bytes(), value));
    let sig = hex(tag.as_ref());
    Some(OwnedHeaders::new().insert(Header {
        key: HEADER,
        value: Some(&sig),
    }))
}

/// Why a record is not to be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("unsigned: kafka.signing_key_file is set and the record carries no {HEADER} header")]
    Unsigned,
    #[error("wrongly signed: its {HEADER} header does not match the record under the key of kafka.signing_key_file")]
    WronglySigned,
}

/// Whether a record may be acted on: always without a key; with one, when it carries the
/// right signature.
pub fn check<M: Message>(m: &M) -> Result<(), Untrusted> {
    let Some((_, k)) = KEY.get() else {
        return Ok(());
    };
    let sig = m
        .headers()
        .and_then(|h| (0..h.count()).find_map(|i| h.try_get(i).filter(|h| h.key == HEADER)))
        .and_then(|h| h.value)
        .ok_or(Untrusted::Unsigned)?;
    let tag = unhex(sig).ok_or(Untrusted::WronglySigned)?;
    let signed = signed_bytes(m.key().unwrap_or(&[]), m.payload());
    hmac::verify(k, &signed, &tag).map_err(|_| Untrusted::WronglySigned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn message(key: &str, value: Option<&[u8]>, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            value.map(<[u8]>::to_vec),
            Some(key.as_bytes().to_vec()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            headers,
        )
    }

    #[test]
    fn a_signed_record_checks_and_a_changed_one_does_not() {
        assert!(sign_with(b"0123456789abcdef0123456789abcdef"));
        assert!(!sign_with(b"another key"), "a second key is refused");
        let h = headers("b/k", Some(b"{}"));
        assert!(check(&message("b/k", Some(b"{}"), h.clone())).is_ok());
        assert_eq!(
            check(&message("b/k", Some(b"{ }"), h.clone())),
            Err(Untrusted::WronglySigned)
        );
        assert_eq!(
            check(&message("b/other", Some(b"{}"), h)),
            Err(Untrusted::WronglySigned)
        );
        assert_eq!(
            check(&message("b/k", Some(b"{}"), None)),
            Err(Untrusted::Unsigned)
        );
        let tombstone = headers("b/k", None);
        assert!(check(&message("b/k", None, tombstone.clone())).is_ok());
        assert_eq!(
            check(&message("b/k", Some(b""), tombstone)),
            Err(Untrusted::WronglySigned),
            "a tombstone's signature is not an empty value's"
        );
    }
}
