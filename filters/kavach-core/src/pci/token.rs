//! CDE access tokens: short-lived HMAC-SHA256 tokens bound to the caller's SPIFFE ID.
//!
//! Wire form: `v1.<expiry>.<mac>` where `<expiry>` is Unix seconds in decimal (no sign, no
//! leading zeros) and `<mac>` is base64url without padding of
//! `HMAC-SHA256(key, "v1.<principal>.<expiry>")`. The principal is not in the token: it comes
//! from the verified peer certificate, so a token stolen from one workload is useless to another.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest token accepted (a real one is 58 to 62 bytes).
pub const MAX_TOKEN_BYTES: usize = 128;

const VERSION: &str = "v1";
const MAC_BYTES: usize = 32;
/// `u64::MAX` has 20 digits.
const MAX_EXPIRY_DIGITS: usize = 20;

/// Why a token did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No token header, or an empty one.
    Missing,
    /// Not `v1.<digits>.<43 base64url characters>`.
    Malformed,
    /// The expiry is not after now.
    Expired,
    /// The MAC does not match (wrong key, tampered, other principal, or no principal at all).
    BadSignature,
    /// The expiry is further ahead than the policy's `max_ttl_seconds`.
    TtlTooLong,
}

impl TokenError {
    pub fn kind(self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Malformed => "token_malformed",
            TokenError::Expired => "token_expired",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::TtlTooLong => "token_ttl_too_long",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

fn keyed(key: &[u8], principal: &str, expiry: u64) -> Option<Hmac<Sha256>> {
    // HMAC takes keys of any length, so this never fails.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(format!("{VERSION}.{principal}.{expiry}").as_bytes());
    Some(mac)
}

/// Issues a token for `principal` that expires at `expiry_unix` (seconds).
pub fn mint_token(key: &[u8], principal: &str, expiry_unix: u64) -> String {
    match keyed(key, principal, expiry_unix) {
        Some(mac) => {
            let tag = mac.finalize().into_bytes();
            format!("{VERSION}.{expiry_unix}.{}", URL_SAFE_NO_PAD.encode(tag))
        }
        // Unreachable (see `keyed`); an empty token never verifies.
        None => String::new(),
    }
}

/// Verifies `token` (the header value) for `principal` at `now_unix` (seconds). Returns the
/// token's expiry.
pub fn verify_token(
    key: &[u8],
    token: &[u8],
    principal: Option<&str>,
    now_unix: u64,
    max_ttl_seconds: u64,
) -> Result<u64, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    let (expiry, tag) = parse(token).ok_or(TokenError::Malformed)?;
    // Without a principal there is nothing the token could be bound to.
    let principal = principal.ok_or(TokenError::BadSignature)?;
    let mac = keyed(key, principal, expiry).ok_or(TokenError::BadSignature)?;
    // Constant-time comparison.
    mac.verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    if expiry <= now_unix {
        return Err(TokenError::Expired);
    }
    if expiry > now_unix.saturating_add(max_ttl_seconds) {
        return Err(TokenError::TtlTooLong);
    }
    Ok(expiry)
}

/// Splits a well-formed token into its expiry and MAC.
fn parse(token: &[u8]) -> Option<(u64, Vec<u8>)> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let text = std::str::from_utf8(token).ok()?;
    let mut parts = text.split('.');
    let (Some(VERSION), Some(expiry), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let canonical_number = !expiry.is_empty()
        && expiry.len() <= MAX_EXPIRY_DIGITS
        && expiry.bytes().all(|b| b.is_ascii_digit())
        && (expiry == "0" || !expiry.starts_with('0'));
    if !canonical_number {
        return None;
    }
    let expiry: u64 = expiry.parse().ok()?;
    let tag = URL_SAFE_NO_PAD.decode(mac).ok()?;
    (tag.len() == MAC_BYTES).then_some((expiry, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const ME: &str = "spiffe://bank.local/ns/payments/sa/api";
    const NOW: u64 = 1_764_115_030;
    const TTL: u64 = 3600;

    /// `(name, token, principal, expected)`.
    type Case = (
        String,
        Vec<u8>,
        Option<&'static str>,
        Result<u64, TokenError>,
    );

    fn check(token: &[u8], principal: Option<&str>) -> Result<u64, TokenError> {
        verify_token(KEY, token, principal, NOW, TTL)
    }

    #[test]
    fn minted_tokens_have_the_documented_form() {
        let t = mint_token(KEY, ME, NOW + 60);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "v1");
        assert_eq!(parts[1], (NOW + 60).to_string());
        assert_eq!(parts[2].len(), 43);
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
        mac.update(format!("v1.{ME}.{}", NOW + 60).as_bytes());
        assert_eq!(
            parts[2],
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn token_table() {
        let good = mint_token(KEY, ME, NOW + 60);
        let tampered_mac = {
            let mut b = good.clone().into_bytes();
            let last = b.len() - 2;
            b[last] = if b[last] == b'A' { b'B' } else { b'A' };
            b
        };
        let tampered_expiry = good.replacen(&(NOW + 60).to_string(), &(NOW + 61).to_string(), 1);
        let padded = format!("{good}=");
        let other_key = mint_token(b"another key, 32 bytes long.....!", ME, NOW + 60);
        let cases: Vec<Case> = vec![
            (
                "valid".into(),
                good.clone().into_bytes(),
                Some(ME),
                Ok(NOW + 60),
            ),
            (
                "valid at the ttl limit".into(),
                mint_token(KEY, ME, NOW + TTL).into_bytes(),
                Some(ME),
                Ok(NOW + TTL),
            ),
            (
                "ttl one second too long".into(),
                mint_token(KEY, ME, NOW + TTL + 1).into_bytes(),
                Some(ME),
                Err(TokenError::TtlTooLong),
            ),
            (
                "far future".into(),
                mint_token(KEY, ME, u64::MAX).into_bytes(),
                Some(ME),
                Err(TokenError::TtlTooLong),
            ),
            (
                "expires now".into(),
                mint_token(KEY, ME, NOW).into_bytes(),
                Some(ME),
                Err(TokenError::Expired),
            ),
            (
                "expired".into(),
                mint_token(KEY, ME, NOW - 1).into_bytes(),
                Some(ME),
                Err(TokenError::Expired),
            ),
            (
                "expiry zero".into(),
                mint_token(KEY, ME, 0).into_bytes(),
                Some(ME),
                Err(TokenError::Expired),
            ),
            (
                "wrong principal".into(),
                good.clone().into_bytes(),
                Some("spiffe://bank.local/ns/payments/sa/other"),
                Err(TokenError::BadSignature),
            ),
            (
                "no principal".into(),
                good.clone().into_bytes(),
                None,
                Err(TokenError::BadSignature),
            ),
            (
                "minted for nobody, presented without principal".into(),
                mint_token(KEY, "", NOW + 60).into_bytes(),
                None,
                Err(TokenError::BadSignature),
            ),
            (
                "tampered mac".into(),
                tampered_mac,
                Some(ME),
                Err(TokenError::BadSignature),
            ),
            (
                "tampered expiry".into(),
                tampered_expiry.into_bytes(),
                Some(ME),
                Err(TokenError::BadSignature),
            ),
            (
                "other key".into(),
                other_key.into_bytes(),
                Some(ME),
                Err(TokenError::BadSignature),
            ),
            (
                "empty".into(),
                Vec::new(),
                Some(ME),
                Err(TokenError::Missing),
            ),
            (
                "padded".into(),
                padded.into_bytes(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "v2".into(),
                good.replacen("v1.", "v2.", 1).into_bytes(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "leading zero".into(),
                good.replacen("v1.", "v1.0", 1).into_bytes(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "plus sign".into(),
                good.replacen("v1.", "v1.+", 1).into_bytes(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "extra part".into(),
                format!("{good}.x").into_bytes(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "two parts".into(),
                b"v1.123".to_vec(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "no expiry".into(),
                b"v1..abc".to_vec(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "short mac".into(),
                format!("v1.{}.{}", NOW + 60, URL_SAFE_NO_PAD.encode([0u8; 16])).into_bytes(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "standard base64".into(),
                good.replace('-', "+").replace('_', "/").into_bytes(),
                Some(ME),
                if good.contains(['-', '_']) {
                    Err(TokenError::Malformed)
                } else {
                    Ok(NOW + 60)
                },
            ),
            (
                "overflowing expiry".into(),
                b"v1.99999999999999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "invalid utf-8".into(),
                b"v1.\xff.abc".to_vec(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "too long".into(),
                format!("{good}{}", "A".repeat(200)).into_bytes(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
            (
                "bearer prefix".into(),
                format!("Bearer {good}").into_bytes(),
                Some(ME),
                Err(TokenError::Malformed),
            ),
        ];
        for (name, token, principal, want) in cases {
            assert_eq!(check(&token, principal), want, "{name}");
        }
    }

    #[test]
    fn reasons_are_named() {
        assert_eq!(TokenError::Missing.kind(), "token_missing");
        assert_eq!(TokenError::Malformed.to_string(), "token_malformed");
        assert_eq!(TokenError::Expired.kind(), "token_expired");
        assert_eq!(TokenError::BadSignature.kind(), "token_bad_signature");
        assert_eq!(TokenError::TtlTooLong.kind(), "token_ttl_too_long");
    }
}
