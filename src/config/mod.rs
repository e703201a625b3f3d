//! Configuration: the TOML file (serde models, origins of values), credentials and the AWS
//! settings (region, endpoint, CA bundle) from the environment or AWS profiles, value parsing.
//!
//! Owns: where settings come from and their validation. May call: `s3` (its config types),
//! `shard` (placement), `retry` (the default number of attempts), `lifecycle` (rules files
//! are read at check time), `replication` (what a site's replicas carry), `bandwidth` (a
//! site's limit), `buckets` (patterns and name templates checked), `populate` (a default
//! rules file is parsed at check time).

pub mod credentials;
mod de;
pub mod file;
pub mod kafka_security;
pub mod lifecycle;
pub mod tune;
mod tuning;

/// Parses a byte size: `1048576`, `64KiB`, `8MiB`, `1GiB`, `5MB`, `10k`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 1048576, 64KiB, 8MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("64kib").unwrap(), 64 << 10);
        assert_eq!(parse_size("5MB").unwrap(), 5_000_000);
        assert!(parse_size("x").is_err());
        assert!(parse_size("5XB").is_err());
    }
}
