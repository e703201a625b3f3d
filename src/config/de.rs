//! Value parsers of the configuration file, with messages a reader of the file understands:
//! integers in a range, sizes (`8MiB` or a number), endpoint URLs, addresses and names; and the
//! rewording of serde's own messages (unknown fields become unknown keys or sections).

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::s3::ChecksumTransport;
use crate::shard::Placement;

/// Any TOML integer that fits in `T` ("expected an integer" otherwise).
pub struct Int<T>(pub T);

impl<'de, T: TryFrom<i64>> Deserialize<'de> for Int<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: TryFrom<i64>> Visitor<'_> for V<T> {
            type Value = Int<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Int<T>, E> {
                T::try_from(n)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{n} is out of range")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Int<T>, E> {
                let n = i64::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))?;
                self.visit_i64(n)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An integer between `MIN` and `MAX` (for `deserialize_with`).
pub fn int<'de, D, T, const MIN: i64, const MAX: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let n = Int::<i64>::deserialize(d)?.0;
    if !(MIN..=MAX).contains(&n) {
        return Err(de::Error::custom(format!(
            "must be between {MIN} and {MAX}, not {n}"
        )));
    }
    T::try_from(n).map_err(|_| de::Error::custom(format!("{n} is out of range")))
}

/// A byte size: a non-negative integer or a string such as "8MiB" (see `parse_size`).
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 8388608 or \"8MiB\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                super::parse_size(s).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A shard placement: "unbound" or "pinned".
pub struct Placed(pub Placement);

impl<'de> Deserialize<'de> for Placed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "unbound" => Ok(Placed(Placement::Unbound)),
            "pinned" => Ok(Placed(Placement::Pinned)),
            other => Err(de::Error::custom(format!(
                "{other:?}: use \"unbound\" or \"pinned\""
            ))),
        }
    }
}

pub use crate::s3::check_url;

/// An endpoint URL (for `deserialize_with` on an optional field).
pub fn url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check_url(&s).map_err(de::Error::custom)?;
    Ok(Some(s))
}

/// How uploads carry a checksum: "trailer" or "header" (optional field).
pub fn checksum<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ChecksumTransport>, D::Error> {
    match String::deserialize(d)?.as_str() {
        "trailer" => Ok(Some(ChecksumTransport::Trailer)),
        "header" => Ok(Some(ChecksumTransport::Header)),
        other => Err(de::Error::custom(format!(
            "{other:?}: use \"trailer\" or \"header\""
        ))),
    }
}

/// A socket address such as 127.0.0.1:8900.
pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| de::Error::custom(format!("{s:?} is not an address such as 127.0.0.1:8900")))
}

/// serde's message in the file's terms: "unknown field `x`, expected one of `a`, `b`" becomes
/// "unknown key (known: a, b)", or "unknown section" at the top level (`key` has no dot).
pub fn reword(message: &str, key: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.replace('\n', "; ");
    };
    let known = rest
        .split_once(", expected ")
        .map(|(_, k)| k.trim_start_matches("one of ").replace('`', ""))
        .unwrap_or_else(|| "none".into());
    let what = if key.contains('.') {
        "unknown key"
    } else {
        "unknown section"
    };
    format!("{what} (known: {known})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_become_keys_or_sections() {
        assert_eq!(
            reword("unknown field `x`, expected one of `a`, `b`", "kafka.x"),
            "unknown key (known: a, b)"
        );
        assert_eq!(
            reword("unknown field `x`, expected `kafka`", "x"),
            "unknown section (known: kafka)"
        );
        assert_eq!(reword("bad\nvalue", "k"), "bad; value");
    }
}
