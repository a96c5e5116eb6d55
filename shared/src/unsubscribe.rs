//! The one-click unsubscribe token (RFC 8058) of the publish-history email: signed by publish-history-email, checked
//! by the unsubscribe endpoint. HMAC-SHA256 over the list, the user's `sub`, the tenant and when it was issued, keyed
//! with the SSM parameter's value as given; base64url; no email address in it. Verification accepts the current key
//! and one previous key, so a key can be rotated without breaking the links in inboxes.
//!
//! Token: `base64url(sub ":" tenant ":" issued_at_epoch_seconds) "." base64url(hmac)`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The list a token unsubscribes from: the publish-history notifications.
pub const LIST: &str = "publish-history";
/// A link works this long after the email was sent (RFC 8058 asks for a long-lived link; we promise 60 days).
pub const VALIDITY_SECONDS: i64 = 90 * 24 * 3600;
/// The shortest key accepted.
pub const MIN_KEY_CHARS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscription {
    pub sub: String,
    pub tenant: String,
    pub issued_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is missing")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not match")]
    Forged,
    #[error("the token has expired")]
    Expired,
}

/// A signing key, checked for length; never printed.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// The parameter's value as given (e.g. 64 hex characters); at least [`MIN_KEY_CHARS`] characters.
    pub fn new(value: &str) -> Result<Self, String> {
        if value.chars().count() < MIN_KEY_CHARS {
            return Err(format!("the signing key must be at least {MIN_KEY_CHARS} characters"));
        }
        Ok(Self(value.as_bytes().to_vec()))
    }

    fn mac(&self, sub: &str, tenant: &str, issued_at: i64) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        // Length-prefixed fields, so no two different tuples sign the same bytes.
        for field in [LIST, sub, tenant, &issued_at.to_string()] {
            mac.update(&(field.len() as u32).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }

    pub fn sign(&self, sub: &str, tenant: &str, issued_at: i64) -> String {
        let payload = URL_SAFE_NO_PAD.encode(format!("{sub}:{tenant}:{issued_at}"));
        let signature = URL_SAFE_NO_PAD.encode(self.mac(sub, tenant, issued_at).finalize().into_bytes());
        format!("{payload}.{signature}")
    }
}

/// Checks `token` against `current` and then `previous`; `now` in epoch seconds.
pub fn verify(
    token: Option<&str>,
    current: &SigningKey,
    previous: Option<&SigningKey>,
    now: i64,
) -> Result<Unsubscription, TokenError> {
    let token = token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::Missing)?;
    let (payload, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
    // The sub and the tenant are simple tokens (no colon); the time is last.
    let mut fields = payload.splitn(3, ':');
    let (Some(sub), Some(tenant), Some(issued)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(TokenError::Malformed);
    };
    let issued_at: i64 = issued.parse().map_err(|_| TokenError::Malformed)?;
    if sub.is_empty() {
        return Err(TokenError::Malformed);
    }
    let genuine = std::iter::once(current)
        .chain(previous)
        .any(|key| key.mac(sub, tenant, issued_at).verify_slice(&signature).is_ok());
    if !genuine {
        return Err(TokenError::Forged);
    }
    // A token from the future (beyond clock skew) or older than its validity.
    if issued_at > now + 300 || now - issued_at > VALIDITY_SECONDS {
        return Err(TokenError::Expired);
    }
    Ok(Unsubscription {
        sub: sub.to_owned(),
        tenant: tenant.to_owned(),
        issued_at,
    })
}

/// A signing key from the SecureString `name` that the variable `variable` names, read once at init; an unreadable
/// parameter or a value that is no key is a configuration error naming both.
#[cfg(feature = "ssm")]
pub async fn read_signing_key(
    ssm: &aws_sdk_ssm::Client,
    variable: &str,
    name: &str,
) -> Result<SigningKey, crate::config::ConfigError> {
    let value = crate::secrets::read_secret_for(ssm, variable, name).await?;
    SigningKey::new(&value).map_err(|reason| crate::config::ConfigError::invalid(variable, name, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000;

    fn key(c: char) -> SigningKey {
        SigningKey::new(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn a_signed_token_verifies_and_says_whom_to_unsubscribe() {
        let token = key('a').sign("6b1c0f7e-sub", "acme", NOW);
        assert!(
            !token.contains('@') && !token.contains('+') && !token.contains('/'),
            "base64url, no address: {token}"
        );
        let verified = verify(Some(&token), &key('a'), None, NOW + 3600).unwrap();
        assert_eq!(
            verified,
            Unsubscription {
                sub: "6b1c0f7e-sub".into(),
                tenant: "acme".into(),
                issued_at: NOW
            }
        );
    }

    #[test]
    fn forged_edited_truncated_and_missing_tokens_fail() {
        let token = key('a').sign("sub-1", "acme", NOW);
        assert_eq!(
            verify(Some(&key('b').sign("sub-1", "acme", NOW)), &key('a'), None, NOW),
            Err(TokenError::Forged),
            "another key"
        );
        let other_user = key('a').sign("sub-2", "acme", NOW);
        let (payload, _) = other_user.split_once('.').unwrap();
        let (_, signature) = token.split_once('.').unwrap();
        assert_eq!(
            verify(Some(&format!("{payload}.{signature}")), &key('a'), None, NOW),
            Err(TokenError::Forged),
            "another user's payload"
        );
        let mut edited = token.clone().into_bytes();
        let last = edited.len() - 1;
        edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
        assert!(
            verify(Some(std::str::from_utf8(&edited).unwrap()), &key('a'), None, NOW).is_err(),
            "one character edited"
        );
        assert!(
            verify(Some(&token[..token.len() - 5]), &key('a'), None, NOW).is_err(),
            "truncated"
        );
        assert_eq!(
            verify(Some("not-a-token"), &key('a'), None, NOW),
            Err(TokenError::Malformed)
        );
        assert_eq!(verify(None, &key('a'), None, NOW), Err(TokenError::Missing));
        assert_eq!(verify(Some(" "), &key('a'), None, NOW), Err(TokenError::Missing));
    }

    #[test]
    fn the_previous_key_still_works_after_a_rotation() {
        let old = key('a').sign("sub-1", "acme", NOW);
        assert!(verify(Some(&old), &key('b'), Some(&key('a')), NOW).is_ok());
        assert_eq!(
            verify(Some(&old), &key('b'), None, NOW),
            Err(TokenError::Forged),
            "without the previous key"
        );
    }

    #[test]
    fn links_stay_valid_at_least_sixty_days_but_not_for_ever() {
        let token = key('a').sign("sub-1", "acme", NOW);
        assert!(verify(Some(&token), &key('a'), None, NOW + 60 * 24 * 3600).is_ok());
        assert_eq!(
            verify(Some(&token), &key('a'), None, NOW + VALIDITY_SECONDS + 1),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(Some(&key('a').sign("sub-1", "acme", NOW + 3600)), &key('a'), None, NOW),
            Err(TokenError::Expired),
            "from the future"
        );
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        assert!(SigningKey::new("short").is_err());
        assert_eq!(format!("{:?}", key('a')), "SigningKey(***)");
    }
}
