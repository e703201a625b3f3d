//! Credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, or from a profile of the
//! AWS shared credentials and config files; and the other settings every AWS tool reads from
//! the environment or a profile: region, endpoint URL and CA bundle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::file::Origin;
use crate::s3::Credentials;

/// Why credentials could not be found.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile of ~/.aws/credentials")]
    Missing,
    #[error("profile {profile:?} not found in {files}")]
    NoProfile { profile: String, files: String },
    #[error("profile {profile:?} in {file} has no {key}")]
    Incomplete {
        profile: String,
        file: String,
        key: &'static str,
    },
}

/// Environment values the lookup reads (injectable for tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

fn home(env: &dyn Env) -> PathBuf {
    env.var("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// The profile: the one named, else `AWS_PROFILE`, else `default`.
fn profile_name(profile: Option<&str>, env: &dyn Env) -> String {
    profile
        .map(str::to_string)
        .or_else(|| env.var("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into())
}

/// The AWS config file: `AWS_CONFIG_FILE`, else `~/.aws/config`.
fn config_file(env: &dyn Env) -> PathBuf {
    env.var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home(env).join(".aws/config"))
}

/// A profile's section in the config file (`[profile NAME]`, but `[default]`).
fn config_section(name: &str) -> String {
    if name == "default" {
        "default".into()
    } else {
        format!("profile {name}")
    }
}

/// Parses an INI file into sections of key/value pairs.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Credentials from a profile's section of `file`: both keys, or an error naming the missing one.
fn from_section(
    sec: &HashMap<String, String>,
    profile: &str,
    file: &Path,
) -> Result<Credentials, CredentialsError> {
    let get = |key: &'static str| {
        sec.get(key)
            .cloned()
            .ok_or_else(|| CredentialsError::Incomplete {
                profile: profile.to_string(),
                file: file.display().to_string(),
                key,
            })
    };
    Ok(Credentials {
        access_key_id: get("aws_access_key_id")?,
        secret_access_key: get("aws_secret_access_key")?,
        session_token: sec.get("aws_session_token").cloned(),
    })
}

/// Resolves credentials: a named profile if given, else the environment variables, else
/// `AWS_PROFILE` or the `default` profile.
pub fn resolve(profile: Option<&str>, env: &dyn Env) -> Result<Credentials, CredentialsError> {
    if profile.is_none() {
        if let (Some(ak), Some(sk)) = (
            env.var("AWS_ACCESS_KEY_ID"),
            env.var("AWS_SECRET_ACCESS_KEY"),
        ) {
            return Ok(Credentials {
                access_key_id: ak,
                secret_access_key: sk,
                session_token: env.var("AWS_SESSION_TOKEN"),
            });
        }
    }
    let explicit = profile.is_some() || env.var("AWS_PROFILE").is_some();
    let name = profile_name(profile, env);
    let cred_file = env
        .var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home(env).join(".aws/credentials"));
    let conf_file = config_file(env);
    let candidates = [
        (cred_file.clone(), name.clone()),
        (conf_file.clone(), config_section(&name)),
    ];
    for (file, section) in &candidates {
        let Some(text) = read(file) else { continue };
        let ini = parse_ini(&text);
        let Some(sec) = ini.get(section) else {
            continue;
        };
        return from_section(sec, &name, file);
    }
    if explicit {
        Err(CredentialsError::NoProfile {
            profile: name,
            files: format!("{} or {}", cred_file.display(), conf_file.display()),
        })
    } else {
        Err(CredentialsError::Missing)
    }
}

/// An S3 setting that AWS tools read from the environment, then from a profile of the AWS
/// config file, when neither the command line nor a configuration file gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsSetting {
    Region,
    EndpointUrl,
    CaBundle,
}

impl AwsSetting {
    /// The environment variables that set it; the first one set wins (the S3-specific
    /// `AWS_ENDPOINT_URL_S3` before `AWS_ENDPOINT_URL`).
    pub fn env_vars(self) -> &'static [&'static str] {
        match self {
            AwsSetting::Region => &["AWS_REGION", "AWS_DEFAULT_REGION"],
            AwsSetting::EndpointUrl => &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
            AwsSetting::CaBundle => &["AWS_CA_BUNDLE"],
        }
    }

    /// Its key in a profile of the AWS config file.
    pub fn profile_key(self) -> &'static str {
        match self {
            AwsSetting::Region => "region",
            AwsSetting::EndpointUrl => "endpoint_url",
            AwsSetting::CaBundle => "ca_bundle",
        }
    }
}

/// `setting` from the environment, else from the AWS config file's profile (`profile`, else
/// `AWS_PROFILE`, else `default`), with where it was found.
pub fn aws_setting(
    setting: AwsSetting,
    profile: Option<&str>,
    env: &dyn Env,
) -> Option<(String, Origin)> {
    for var in setting.env_vars() {
        if let Some(v) = env.var(var) {
            return Some((v, Origin::Env(var)));
        }
    }
    let name = profile_name(profile, env);
    let file = config_file(env);
    let value = parse_ini(&read(&file)?)
        .get(&config_section(&name))?
        .get(setting.profile_key())?
        .clone();
    Some((value, Origin::AwsProfile { name, file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_first_then_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let cred = dir.path().join("credentials");
        let conf = dir.path().join("config");
        std::fs::write(&cred, "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n[src]\naws_access_key_id=S\naws_secret_access_key=SS\naws_session_token=T\n").unwrap();
        std::fs::write(&conf, "[profile dst]\naws_access_key_id = X\naws_secret_access_key = XS\nregion = eu-west-1\n[profile half]\naws_access_key_id = H\n").unwrap();
        let base = [
            ("AWS_SHARED_CREDENTIALS_FILE", cred.to_str().unwrap()),
            ("AWS_CONFIG_FILE", conf.to_str().unwrap()),
        ];
        let mut with_env = base.to_vec();
        with_env.extend([("AWS_ACCESS_KEY_ID", "E"), ("AWS_SECRET_ACCESS_KEY", "ES")]);
        let e = env(&with_env);
        assert_eq!(resolve(None, &e).unwrap().access_key_id, "E");
        // an explicit profile wins over the environment
        let c = resolve(Some("src"), &e).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("S", Some("T"))
        );
        let e = env(&base);
        assert_eq!(resolve(None, &e).unwrap().access_key_id, "D");
        assert_eq!(resolve(Some("dst"), &e).unwrap().access_key_id, "X");
        assert_eq!(
            aws_setting(AwsSetting::Region, Some("dst"), &e),
            Some((
                "eu-west-1".into(),
                Origin::AwsProfile {
                    name: "dst".into(),
                    file: conf.clone()
                }
            ))
        );
        assert!(matches!(
            resolve(Some("nope"), &e),
            Err(CredentialsError::NoProfile { .. })
        ));
        let err = resolve(Some("half"), &e).unwrap_err();
        assert!(err.to_string().contains("aws_secret_access_key"), "{err}");
        let empty = env(&[("HOME", dir.path().to_str().unwrap())]);
        assert!(matches!(
            resolve(None, &empty),
            Err(CredentialsError::Missing)
        ));
    }
}
