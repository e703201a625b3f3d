//! `[kafka]`'s transport and authentication keys: TLS (a CA, a client certificate) and
//! SASL (PLAIN or SCRAM, a user name, and a password read from a file or the environment,
//! never from the configuration file itself), checked so that `config check` finds what
//! would fail only when connecting, and shown with the secret masked.
//!
//! Owns: these keys and their checks. May call: nothing beyond `std` and `serde`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The environment variable a SASL password is read from when no file is given.
pub const PASSWORD_ENV: &str = "BACKBEAT_KAFKA_PASSWORD";

/// How the clients reach the brokers (librdkafka's `security.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// The SASL mechanism (librdkafka's `sasl.mechanisms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The keys together (`[kafka]` holds them; `KafkaConfig::security` gathers them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    pub security_protocol: Protocol,
    pub sasl_mechanism: Option<Mechanism>,
    pub sasl_username: Option<String>,
    /// A file whose first line is the password; without it, [`PASSWORD_ENV`].
    pub sasl_password_file: Option<PathBuf>,
    /// The CA that signs the brokers' certificates (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for brokers that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// A shared key (at least 32 bytes): records are signed with it, and those without its
    /// signature are not acted on.
    pub signing_key_file: Option<PathBuf>,
}

/// The fewest bytes a signing key may have.
pub const SIGNING_KEY_MIN: usize = 32;

/// The signing key in `path`: its bytes, a trailing line end left out.
pub fn signing_key(path: &Path) -> Result<Vec<u8>, String> {
    let mut key =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < SIGNING_KEY_MIN {
        return Err(format!(
            "{} holds {} bytes: a signing key needs at least {SIGNING_KEY_MIN} (e.g. `head -c 48 /dev/urandom | base64 > FILE`)",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

impl KafkaSecurity {
    /// Whether the keys fit together and their files can be read: `(key, why)` otherwise.
    /// `brokers`: whether a Kafka cluster is configured (the embedded broker has no
    /// security); `env`: reads an environment variable.
    pub fn check(
        &self,
        brokers: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), (&'static str, String)> {
        let p = self.security_protocol;
        if p != Protocol::Plaintext && !brokers {
            let m = "needs kafka.brokers: the embedded broker speaks plaintext only";
            return Err(("kafka.security_protocol", m.into()));
        }
        self.check_sasl(env)?;
        let tls_keys = [
            ("kafka.ca_file", &self.ca_file),
            ("kafka.cert_file", &self.cert_file),
            ("kafka.key_file", &self.key_file),
        ];
        for (key, path) in tls_keys {
            if let Some(path) = path {
                if !p.tls() {
                    let m = format!("is for TLS: set kafka.security_protocol to \"ssl\" or \"sasl_ssl\" (it is \"{}\")", p.as_str());
                    return Err((key, m));
                }
                readable(path).map_err(|m| (key, m))?;
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            let m = "a client certificate needs both kafka.cert_file and kafka.key_file";
            return Err(("kafka.cert_file", m.into()));
        }
        if let Some(path) = &self.signing_key_file {
            if !brokers {
                let m =
                    "needs kafka.brokers: nothing but this process writes to the embedded broker";
                return Err(("kafka.signing_key_file", m.into()));
            }
            signing_key(path).map_err(|m| ("kafka.signing_key_file", m))?;
        }
        Ok(())
    }

    fn check_sasl(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), (&'static str, String)> {
        let sasl_keys = self.sasl_mechanism.is_some()
            || self.sasl_username.is_some()
            || self.sasl_password_file.is_some();
        if !self.security_protocol.sasl() {
            if sasl_keys {
                let m = "SASL keys are set: set kafka.security_protocol to \"sasl_plaintext\" or \"sasl_ssl\"";
                return Err(("kafka.security_protocol", m.into()));
            }
            return Ok(());
        }
        if self.sasl_mechanism.is_none() {
            let m = "required with SASL: \"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\"";
            return Err(("kafka.sasl_mechanism", m.into()));
        }
        if self.sasl_username.as_deref().is_none_or(str::is_empty) {
            return Err(("kafka.sasl_username", "required with SASL".into()));
        }
        self.password(env).map(|_| ())
    }

    /// The SASL password: the first line of `sasl_password_file`, else [`PASSWORD_ENV`].
    pub fn password(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, (&'static str, String)> {
        let key = "kafka.sasl_password_file";
        let password = match &self.sasl_password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| (key, format!("cannot read {}: {e}", path.display())))?;
                text.lines().next().unwrap_or("").trim_end().to_string()
            }
            None => env(PASSWORD_ENV).unwrap_or_default(),
        };
        if password.is_empty() {
            let m = format!("no SASL password: give a file whose first line is the password, or set {PASSWORD_ENV}");
            return Err((key, m));
        }
        Ok(password)
    }

    /// `(dotted key, value as shown)`; the password is never shown, only where it comes from.
    pub fn shown(&self) -> Vec<(String, String)> {
        let path = |p: &Option<PathBuf>| {
            p.as_ref().map_or("(none)".to_string(), |p| {
                format!("{:?}", p.display().to_string())
            })
        };
        let mut lines = vec![(
            "kafka.security_protocol".to_string(),
            format!("{:?}", self.security_protocol.as_str()),
        )];
        if self.security_protocol.sasl() {
            let m = self.sasl_mechanism.map_or("(none)", Mechanism::as_str);
            lines.push(("kafka.sasl_mechanism".into(), format!("{m:?}")));
            let user = self.sasl_username.as_deref().unwrap_or("(none)");
            lines.push(("kafka.sasl_username".into(), format!("{user:?}")));
            let password = match &self.sasl_password_file {
                Some(p) => format!("*** (from {:?})", p.display().to_string()),
                None => format!("*** (from {PASSWORD_ENV})"),
            };
            lines.push(("kafka.sasl_password".into(), password));
        }
        let signing = match &self.signing_key_file {
            Some(p) => format!(
                "*** (from {:?}): records signed and checked",
                p.display().to_string()
            ),
            None => "(none): records neither signed nor checked".into(),
        };
        lines.push(("kafka.signing_key_file".into(), signing));
        if self.security_protocol.tls() {
            lines.push(("kafka.ca_file".into(), path(&self.ca_file)));
            lines.push(("kafka.cert_file".into(), path(&self.cert_file)));
            lines.push(("kafka.key_file".into(), path(&self.key_file)));
        }
        lines
    }
}

fn readable(path: &Path) -> Result<(), String> {
    std::fs::read(path)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn sasl_needs_its_keys_and_a_password() {
        let mut s = KafkaSecurity {
            security_protocol: Protocol::SaslPlaintext,
            ..Default::default()
        };
        assert_eq!(
            s.check(true, &no_env).unwrap_err().0,
            "kafka.sasl_mechanism"
        );
        s.sasl_mechanism = Some(Mechanism::ScramSha256);
        assert_eq!(s.check(true, &no_env).unwrap_err().0, "kafka.sasl_username");
        s.sasl_username = Some("alice".into());
        let e = s.check(true, &no_env).unwrap_err();
        assert!(e.1.contains(PASSWORD_ENV), "{e:?}");
        let env = |k: &str| (k == PASSWORD_ENV).then(|| "s3cret".to_string());
        assert!(s.check(true, &env).is_ok());
        assert_eq!(s.password(&env).unwrap(), "s3cret");
        let shown = format!("{:?}", s.shown());
        assert!(
            !shown.contains("s3cret") && shown.contains("***"),
            "{shown}"
        );
        s.sasl_password_file = Some("/nonexistent/password".into());
        let e = s.check(true, &env).unwrap_err();
        assert_eq!(e.0, "kafka.sasl_password_file");
    }

    #[test]
    fn tls_keys_need_tls_and_files() {
        let mut s = KafkaSecurity {
            ca_file: Some("/etc/hostname".into()),
            ..Default::default()
        };
        assert_eq!(s.check(true, &no_env).unwrap_err().0, "kafka.ca_file");
        s.security_protocol = Protocol::Ssl;
        assert!(s.check(true, &no_env).is_ok());
        assert_eq!(
            s.check(false, &no_env).unwrap_err().0,
            "kafka.security_protocol"
        );
        s.cert_file = Some("/etc/hostname".into());
        assert_eq!(s.check(true, &no_env).unwrap_err().0, "kafka.cert_file");
        s.key_file = Some("/nonexistent/key.pem".into());
        assert_eq!(s.check(true, &no_env).unwrap_err().0, "kafka.key_file");
        s.security_protocol = Protocol::Plaintext;
        s.sasl_username = Some("a".into());
        assert_eq!(
            s.check(true, &no_env).unwrap_err().0,
            "kafka.security_protocol"
        );
    }
}
