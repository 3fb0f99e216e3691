//! Who may post reports: only bearer tokens that the API server's TokenReview accepts, for the
//! `trafficmap` audience, as the configured sniffer ServiceAccount.
//!
//! Decisions are cached by a SHA-256 of the token (never the token itself), accepted ones until
//! the token expires (capped), rejected ones briefly, so a flood of forged tokens costs one
//! TokenReview each per [`REJECTION_CACHE_TTL`] and memory stays bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use sha2::{Digest, Sha256};

/// Longest an accepted token is trusted without asking the API server again.
pub const MAX_ACCEPT_CACHE_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a rejection is remembered.
pub const REJECTION_CACHE_TTL: Duration = Duration::from_secs(30);
/// Most tokens remembered at once.
pub const MAX_CACHED_TOKENS: usize = 4096;
/// Longest bearer token considered at all (projected tokens are ~1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a request was refused; also the `reason` label of the rejection metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// No `Authorization: Bearer` header, or an unusable one.
    MissingToken,
    /// TokenReview did not authenticate the token (forged, expired, wrong audience).
    NotAuthenticated,
    /// Authenticated, but not as the sniffer's ServiceAccount.
    WrongIdentity,
    /// TokenReview did not confirm the `trafficmap` audience.
    WrongAudience,
    /// The API server could not be asked.
    ReviewFailed,
}

impl Rejection {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::MissingToken => "missing_token",
            Rejection::NotAuthenticated => "not_authenticated",
            Rejection::WrongIdentity => "wrong_identity",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::ReviewFailed => "review_failed",
        }
    }

    /// HTTP status: 401 when the caller is unknown, 403 when known but not allowed, 503 when
    /// the answer is unknown.
    pub fn http_status(self) -> u16 {
        match self {
            Rejection::MissingToken | Rejection::NotAuthenticated | Rejection::WrongAudience => 401,
            Rejection::WrongIdentity => 403,
            Rejection::ReviewFailed => 503,
        }
    }
}

/// Extracts the token from an `Authorization` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, Rejection> {
    let value = header.ok_or(Rejection::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(Rejection::MissingToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::MissingToken);
    }
    Ok(token)
}

/// Decides from a TokenReview status whether the caller is the expected account with the
/// expected audience.
pub fn decide(
    status: &TokenReviewStatus,
    expected_username: &str,
    audience: &str,
) -> Result<(), Rejection> {
    if status.authenticated != Some(true) {
        return Err(Rejection::NotAuthenticated);
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(Rejection::WrongAudience);
    }
    let username = status.user.as_ref().and_then(|u| u.username.as_deref());
    if username != Some(expected_username) {
        return Err(Rejection::WrongIdentity);
    }
    Ok(())
}

/// The username of a ServiceAccount.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Reads the `exp` claim of a JWT without verifying it (TokenReview verified the token; this only
/// bounds how long the verdict is cached).
pub fn jwt_expiry_unix_seconds(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64_url_decode(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

fn base64_url_decode(input: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(input.trim_end_matches('='))
        .ok()
}

/// Cached verdicts, keyed by the token's SHA-256.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: HashMap<[u8; 32], (Result<(), Rejection>, Instant)>,
}

impl TokenCache {
    /// The cached verdict for `token`, if still fresh at `now`.
    pub fn get(&self, token: &str, now: Instant) -> Option<Result<(), Rejection>> {
        let (verdict, until) = self.entries.get(&digest(token))?;
        (now < *until).then_some(*verdict)
    }

    /// Remembers a verdict. Accepted tokens are kept until `expires_in` (capped at
    /// [`MAX_ACCEPT_CACHE_TTL`]); rejections for [`REJECTION_CACHE_TTL`]; failures to ask are
    /// not cached. When full, expired entries go first, then the soonest to expire.
    pub fn insert(
        &mut self,
        token: &str,
        verdict: Result<(), Rejection>,
        expires_in: Option<Duration>,
        now: Instant,
    ) {
        let ttl = match verdict {
            Ok(()) => expires_in
                .unwrap_or(MAX_ACCEPT_CACHE_TTL)
                .min(MAX_ACCEPT_CACHE_TTL),
            Err(Rejection::ReviewFailed) => return,
            Err(_) => REJECTION_CACHE_TTL,
        };
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() >= MAX_CACHED_TOKENS {
            self.entries.retain(|_, (_, until)| *until > now);
        }
        if self.entries.len() >= MAX_CACHED_TOKENS
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(k, _)| *k)
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(digest(token), (verdict, now + ttl));
    }

    /// Number of cached verdicts.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    const SNIFFER: &str = "system:serviceaccount:trafficmap:trafficmap-sniffer";

    fn status(authenticated: bool, user: &str, audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        }
    }

    #[test]
    fn only_the_sniffer_account_with_the_trafficmap_audience_is_accepted() {
        assert_eq!(
            decide(
                &status(true, SNIFFER, &["trafficmap"]),
                SNIFFER,
                "trafficmap"
            ),
            Ok(())
        );
        assert_eq!(
            decide(
                &status(false, SNIFFER, &["trafficmap"]),
                SNIFFER,
                "trafficmap"
            ),
            Err(Rejection::NotAuthenticated)
        );
        assert_eq!(
            decide(
                &status(true, "system:serviceaccount:shop:web", &["trafficmap"]),
                SNIFFER,
                "trafficmap"
            ),
            Err(Rejection::WrongIdentity)
        );
        assert_eq!(
            decide(&status(true, SNIFFER, &["other"]), SNIFFER, "trafficmap"),
            Err(Rejection::WrongAudience)
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header_only() {
        assert_eq!(bearer_token(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer_token(Some("bearer  tok ")), Ok("tok"));
        assert_eq!(bearer_token(None), Err(Rejection::MissingToken));
        assert_eq!(
            bearer_token(Some("Basic dXNlcg==")),
            Err(Rejection::MissingToken)
        );
        assert_eq!(bearer_token(Some("Bearer ")), Err(Rejection::MissingToken));
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer_token(Some(&huge)), Err(Rejection::MissingToken));
    }

    #[test]
    fn jwt_expiry_is_read_from_the_payload() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"aud":["trafficmap"],"exp":1900000000}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig");
        assert_eq!(jwt_expiry_unix_seconds(&token), Some(1_900_000_000));
        assert_eq!(jwt_expiry_unix_seconds("not-a-jwt"), None);
        assert_eq!(jwt_expiry_unix_seconds("a.%%%.c"), None);
    }

    #[test]
    fn verdicts_are_cached_until_expiry_and_failures_are_not_cached() {
        let mut cache = TokenCache::default();
        let now = Instant::now();
        cache.insert("good", Ok(()), Some(Duration::from_secs(60)), now);
        cache.insert("bad", Err(Rejection::NotAuthenticated), None, now);
        cache.insert("unknown", Err(Rejection::ReviewFailed), None, now);
        assert_eq!(cache.get("good", now), Some(Ok(())));
        assert_eq!(
            cache.get("bad", now),
            Some(Err(Rejection::NotAuthenticated))
        );
        assert_eq!(cache.get("unknown", now), None);
        assert_eq!(cache.get("bad", now + REJECTION_CACHE_TTL), None);
        assert_eq!(cache.get("good", now + Duration::from_secs(61)), None);
        let long = Some(Duration::from_secs(86_400));
        cache.insert("long", Ok(()), long, now);
        assert_eq!(cache.get("long", now + MAX_ACCEPT_CACHE_TTL), None);
    }

    #[test]
    fn the_cache_stays_bounded_under_a_flood_of_tokens() {
        let mut cache = TokenCache::default();
        let now = Instant::now();
        for i in 0..(MAX_CACHED_TOKENS * 3) {
            cache.insert(
                &format!("forged-{i}"),
                Err(Rejection::NotAuthenticated),
                None,
                now,
            );
        }
        assert!(cache.len() <= MAX_CACHED_TOKENS);
    }
}
