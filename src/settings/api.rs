//! `[api]`: the profile lookup API and the customer 360 page that `unicus run` serves.
//!
//! Off unless `listen` is set. Every request carries a bearer token; the configuration
//! holds only each token's SHA-256 (`unicus api-token` makes a token and its entry), with
//! the scopes it grants:
//! - `profiles:read`: golden records and explanations, emails, phones and addresses
//!   masked;
//! - `pii:read`: the same unmasked (with `profiles:read`);
//! - `commands:write`: split requests to `identity.commands`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SettingsError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "profiles:read")]
    ProfilesRead,
    #[serde(rename = "pii:read")]
    PiiRead,
    #[serde(rename = "commands:write")]
    CommandsWrite,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::ProfilesRead, Scope::PiiRead, Scope::CommandsWrite];

    pub fn name(self) -> &'static str {
        match self {
            Scope::ProfilesRead => "profiles:read",
            Scope::PiiRead => "pii:read",
            Scope::CommandsWrite => "commands:write",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One bearer token, as the configuration keeps it: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it: named in the audit log, never the token.
    pub name: String,
    /// SHA-256 of the token, 64 hexadecimal digits.
    pub sha256: String,
    pub scopes: Vec<Scope>,
}

/// A file of tokens (`api.tokens_file`): `[[tokens]]` entries like `[[api.tokens]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<ApiToken>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Address and port of the API and of the 360 page (`/ui/`); absent: not served.
    pub listen: Option<String>,
    pub tokens: Vec<ApiToken>,
    /// More tokens, read at start from this file (kept apart from the configuration).
    pub tokens_file: Option<PathBuf>,
    /// A request whose target (path and query) or body is longer is refused (414/413).
    pub max_request_bytes: usize,
    /// Requests per second each token may make on average; more are refused (429).
    pub rate_per_second: u32,
    /// Requests a token may make at once beyond its rate.
    pub burst: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: None,
            tokens: Vec::new(),
            tokens_file: None,
            max_request_bytes: 8 * 1024,
            rate_per_second: 1_000,
            burst: 2_000,
        }
    }
}

impl ApiSettings {
    /// The tokens of the configuration and of `tokens_file`.
    pub fn all_tokens(&self) -> Result<Vec<ApiToken>, SettingsError> {
        let mut tokens = self.tokens.clone();
        if let Some(path) = &self.tokens_file {
            tokens.extend(read_tokens_file(path)?);
        }
        Ok(tokens)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |field, problem: String| Err(SettingsError::Invalid { field, problem });
        let Some(listen) = &self.listen else {
            return Ok(());
        };
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "api.listen",
                "must be an address and port, e.g. 127.0.0.1:8080".into(),
            );
        }
        if self.max_request_bytes < 256 {
            return invalid("api.max_request_bytes", "must be at least 256".into());
        }
        if self.rate_per_second == 0 || self.burst == 0 {
            return invalid(
                "api.rate_per_second",
                "rate_per_second and burst must be above 0".into(),
            );
        }
        let tokens = self.all_tokens()?;
        if tokens.is_empty() {
            return invalid(
                "api.tokens",
                "the API is served only with at least one token (`unicus api-token` makes one)"
                    .into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &tokens {
            if t.name.trim().is_empty() || t.name.len() > 64 {
                return invalid("api.tokens", "a token's name is 1 to 64 bytes".into());
            }
            if !names.insert(t.name.as_str()) {
                return invalid("api.tokens", format!("two tokens are named `{}`", t.name));
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(
                    "api.tokens",
                    format!(
                        "token `{}`: sha256 must be 64 hexadecimal digits (the hash, never the token)",
                        t.name
                    ),
                );
            }
            if t.scopes.is_empty() {
                return invalid("api.tokens", format!("token `{}` has no scope", t.name));
            }
        }
        Ok(())
    }
}

fn read_tokens_file(path: &Path) -> Result<Vec<ApiToken>, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: TokensFile = toml::from_str(&text).map_err(|e| SettingsError::Invalid {
        field: "api.tokens_file",
        problem: format!("{}: {e}", path.display()),
    })?;
    Ok(file.tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> ApiToken {
        ApiToken {
            name: name.into(),
            sha256: "a".repeat(64),
            scopes: vec![Scope::ProfilesRead],
        }
    }

    #[test]
    fn off_by_default_and_on_only_with_a_valid_token() {
        assert!(ApiSettings::default().validate().is_ok());
        let mut api = ApiSettings {
            listen: Some("127.0.0.1:0".into()),
            ..ApiSettings::default()
        };
        assert!(api
            .validate()
            .unwrap_err()
            .to_string()
            .contains("api.tokens"));
        api.tokens.push(entry("shop"));
        api.validate().unwrap();
        api.tokens.push(ApiToken {
            sha256: "secret-token".into(),
            ..entry("plain")
        });
        assert!(api
            .validate()
            .unwrap_err()
            .to_string()
            .contains("64 hexadecimal"));
        api.tokens.pop();
        api.tokens.push(entry("shop"));
        assert!(api
            .validate()
            .unwrap_err()
            .to_string()
            .contains("two tokens"));
        api.tokens.pop();
        api.listen = Some("nowhere".into());
        assert!(api
            .validate()
            .unwrap_err()
            .to_string()
            .contains("api.listen"));
    }

    #[test]
    fn tokens_are_read_from_their_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            format!(
                "[[tokens]]\nname = \"agent\"\nsha256 = \"{}\"\nscopes = [\"profiles:read\", \"pii:read\"]\n",
                "b".repeat(64)
            ),
        )
        .unwrap();
        let api = ApiSettings {
            listen: Some("127.0.0.1:0".into()),
            tokens: vec![entry("shop")],
            tokens_file: Some(path.clone()),
            ..ApiSettings::default()
        };
        api.validate().unwrap();
        let all = api.all_tokens().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].scopes, vec![Scope::ProfilesRead, Scope::PiiRead]);
        std::fs::write(&path, "[[tokens]]\nname = \"x\"\nscopes = [\"root\"]\n").unwrap();
        let e = api.validate().unwrap_err().to_string();
        assert!(e.contains("api.tokens_file"), "{e}");
    }
}
