//! Bearer tokens: compared by their SHA-256 in constant time, each with its scopes and
//! its own rate limit (a token bucket).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::settings::api::{ApiSettings, ApiToken, Scope};

/// Who is calling: the token's name and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scopes: BTreeSet<Scope>,
}

impl Caller {
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Why a request is refused before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one that is not known.
    Unauthenticated,
    /// More than the token's rate.
    RateLimited,
}

struct Entry {
    hash: [u8; 32],
    caller: Caller,
}

/// Tokens left per caller and when they were counted.
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Tokens {
    entries: Vec<Entry>,
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A new random token: 32 bytes from the system's generator, in hexadecimal.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    std::iter::once("uni_".to_string())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect()
}

/// The SHA-256 of a token, in hexadecimal: what the configuration keeps.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// The tokens of validated settings (a malformed hash is skipped: validation refuses
    /// it first).
    pub fn new(settings: &ApiSettings, tokens: &[ApiToken]) -> Self {
        let entries = tokens
            .iter()
            .filter_map(|t| {
                Some(Entry {
                    hash: parse_hash(&t.sha256)?,
                    caller: Caller {
                        name: t.name.clone(),
                        scopes: t.scopes.iter().copied().collect(),
                    },
                })
            })
            .collect();
        Self {
            entries,
            rate: f64::from(settings.rate_per_second),
            burst: f64::from(settings.burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The caller an `Authorization` header names, within its rate.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Refusal> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Unauthenticated)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, each in constant time: neither the time nor the
        // order tells how much of a hash matched, or which entry.
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&hash)) {
                found = Some(&e.caller);
            }
        }
        let caller = found.ok_or(Refusal::Unauthenticated)?;
        self.take(&caller.name, Instant::now())?;
        Ok(caller.clone())
    }

    /// Takes one request from the caller's bucket.
    fn take(&self, name: &str, now: Instant) -> Result<(), Refusal> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(name.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Refusal::RateLimited);
        }
        b.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tokens(rate: u32, burst: u32) -> Tokens {
        let settings = ApiSettings {
            rate_per_second: rate,
            burst,
            ..ApiSettings::default()
        };
        let list = [ApiToken {
            name: "shop".into(),
            sha256: token_hash("s3cret"),
            scopes: vec![Scope::ProfilesRead],
        }];
        Tokens::new(&settings, &list)
    }

    #[test]
    fn only_a_known_token_passes_and_its_scopes_come_with_it() {
        let t = tokens(10, 10);
        let caller = t.authenticate(Some("Bearer s3cret")).unwrap();
        assert_eq!(caller.name, "shop");
        assert!(caller.may(Scope::ProfilesRead) && !caller.may(Scope::PiiRead));
        for header in [
            None,
            Some("s3cret"),
            Some("Bearer "),
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
        ] {
            assert_eq!(
                t.authenticate(header).unwrap_err(),
                Refusal::Unauthenticated,
                "{header:?}"
            );
        }
        assert_eq!(token_hash("s3cret").len(), 64);
    }

    #[test]
    fn a_token_beyond_its_burst_waits_for_its_rate() {
        let t = tokens(2, 3);
        let now = Instant::now();
        for _ in 0..3 {
            t.take("shop", now).unwrap();
        }
        assert_eq!(t.take("shop", now).unwrap_err(), Refusal::RateLimited);
        // Half a second gives one more at 2 per second.
        let later = now + Duration::from_millis(500);
        t.take("shop", later).unwrap();
        assert_eq!(t.take("shop", later).unwrap_err(), Refusal::RateLimited);
        // Another caller has its own bucket.
        t.take("agent", later).unwrap();
    }
}
