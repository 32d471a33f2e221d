//! The audit record and its hash chain.
//!
//! Wire form: one JSON object per line. The last member is always `"hash"`:
//!
//! ```text
//! {"v":1,"chain":"9f3c…","seq":41,"prev":"<hash of seq 40>", …,"hash":"<64 hex>"}
//! ```
//!
//! `hash` is SHA-256 (or HMAC-SHA256 with the chain key) over the exact bytes of the line with
//! the `,"hash":"…"` member removed, i.e. over the record as serialised before sealing. Each
//! record carries the previous record's hash in `prev` (64 zeros for `seq` 0), so an edited,
//! dropped, reordered or inserted record breaks the chain. Every VM (one per Envoy worker, new on
//! every restart or reload) starts its own chain with a random `chain` id, so chains are verified
//! independently even when workers' lines interleave in one log.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decision::Decision;
use crate::text::hex;

/// Record format version.
pub const VERSION: u32 = 1;

/// `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_MEMBER: &str = ",\"hash\":\"";
/// Length of `,"hash":"<64 hex>"}`.
const SEAL_LEN: usize = HASH_MEMBER.len() + 64 + 2;

/// How records are chained.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    Sha256,
    HmacSha256,
}

/// One audit record, fields in wire order.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub v: u32,
    pub alg: Algorithm,
    pub chain: String,
    pub seq: u64,
    pub prev: String,
    /// When the request arrived, RFC 3339 in the configured offset.
    pub ts: String,
    pub audit_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub method: String,
    pub path: String,
    pub authority: String,
    /// Response status; absent when the stream ended without a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Verified mTLS identity of the caller (URI SAN), absent for callers without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Decisions the other Kavach filters took on this request.
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// Filters whose published decision was not valid (never trusted, only named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invalid_decisions: Vec<String>,
    /// Fields were shortened to respect the record size cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The state of one chain: its id, the next sequence number and the last hash.
#[derive(Debug, Clone)]
pub struct Chain {
    id: String,
    next_seq: u64,
    prev: String,
    key: Option<Vec<u8>>,
}

impl Chain {
    /// A new chain. `key` switches chaining to HMAC-SHA256.
    pub fn new(id: String, key: Option<Vec<u8>>) -> Self {
        Chain {
            id,
            next_seq: 0,
            prev: GENESIS.to_string(),
            key,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn algorithm(&self) -> Algorithm {
        if self.key.is_some() {
            Algorithm::HmacSha256
        } else {
            Algorithm::Sha256
        }
    }

    /// Fills the chain fields of `record`, serialises and seals it, and advances the chain.
    /// `fit` may shorten the record when its line would be longer than `max_bytes`; it is called
    /// with the serialised length and returns false when it cannot shorten further.
    pub fn seal(
        &mut self,
        record: &mut Record,
        max_bytes: usize,
        mut fit: impl FnMut(&mut Record) -> bool,
    ) -> Option<String> {
        record.v = VERSION;
        record.alg = self.algorithm();
        record.chain = self.id.clone();
        record.seq = self.next_seq;
        record.prev = self.prev.clone();
        let mut body = serde_json::to_string(record).ok()?;
        while body.len() + SEAL_LEN - 1 > max_bytes {
            if !fit(record) {
                break;
            }
            body = serde_json::to_string(record).ok()?;
        }
        let hash = digest(self.key.as_deref(), body.as_bytes());
        self.next_seq += 1;
        self.prev = hash.clone();
        Some(attach(&body, &hash))
    }
}

/// The hash of a record body, with or without a key.
pub fn digest(key: Option<&[u8]>, body: &[u8]) -> String {
    match key {
        Some(k) => match Hmac::<Sha256>::new_from_slice(k) {
            Ok(mut mac) => {
                mac.update(body);
                hex(&mac.finalize().into_bytes())
            }
            // HMAC accepts keys of any length; unreachable in practice, and an empty hash can
            // never verify, so a failure here cannot produce a record that looks valid.
            Err(_) => String::new(),
        },
        None => hex(&Sha256::digest(body)),
    }
}

fn attach(body: &str, hash: &str) -> String {
    // body is a JSON object: replace its closing brace with the hash member.
    let open = body.strip_suffix('}').unwrap_or(body);
    format!("{open}{HASH_MEMBER}{hash}\"}}")
}

/// A line split into the record body that was hashed and the hash it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub body: String,
    pub hash: String,
}

/// Splits a record line into its hashed body and its claimed hash; None when the line does not
/// end with a well-formed hash member.
pub fn unseal(line: &str) -> Option<Sealed> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.len() < SEAL_LEN + 2 || !line.is_char_boundary(line.len() - SEAL_LEN) {
        return None;
    }
    let (head, seal) = line.split_at(line.len() - SEAL_LEN);
    let hash = seal.strip_prefix(HASH_MEMBER)?.strip_suffix("\"}")?;
    if hash.len() != 64
        || !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some(Sealed {
        body: format!("{head}}}"),
        hash: hash.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Record {
        Record {
            v: 0,
            alg: Algorithm::Sha256,
            chain: String::new(),
            seq: 0,
            prev: String::new(),
            ts: "2026-11-26T05:37:10.000000+05:30".into(),
            audit_id: "a1".into(),
            request_id: None,
            method: "GET".into(),
            path: "/accounts".into(),
            authority: "bank.local".into(),
            status: Some(200),
            duration_us: Some(1500),
            bytes_in: Some(10),
            bytes_out: Some(20),
            cluster: Some("core".into()),
            principal: Some("spiffe://bank/ns/pay/sa/api".into()),
            source: Some("10.0.0.1:4000".into()),
            node: Some("node-1".into()),
            region: Some("in-west".into()),
            decisions: vec![],
            invalid_decisions: vec![],
            truncated: false,
        }
    }

    #[test]
    fn records_link_to_their_predecessor() {
        let mut chain = Chain::new("c1".into(), None);
        let a = chain.seal(&mut sample(), 1 << 16, |_| false).unwrap();
        let b = chain.seal(&mut sample(), 1 << 16, |_| false).unwrap();
        let sa = unseal(&a).unwrap();
        let sb = unseal(&b).unwrap();
        assert_eq!(digest(None, sa.body.as_bytes()), sa.hash);
        let rb: Record = serde_json::from_str(&sb.body).unwrap();
        assert_eq!(rb.seq, 1);
        assert_eq!(rb.prev, sa.hash);
        let ra: Record = serde_json::from_str(&sa.body).unwrap();
        assert_eq!(ra.prev, GENESIS);
        assert!(a.ends_with(&format!("\"hash\":\"{}\"}}", sa.hash)));
        // The line itself is valid JSON with the hash as the last member.
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["hash"], sa.hash.as_str());
    }

    #[test]
    fn keyed_chains_differ_from_plain_ones() {
        let mut plain = Chain::new("c".into(), None);
        let mut keyed = Chain::new("c".into(), Some(b"k".to_vec()));
        let p = unseal(&plain.seal(&mut sample(), 1 << 16, |_| false).unwrap()).unwrap();
        let k = unseal(&keyed.seal(&mut sample(), 1 << 16, |_| false).unwrap()).unwrap();
        assert_ne!(p.hash, k.hash);
        assert_eq!(digest(Some(b"k"), k.body.as_bytes()), k.hash);
        assert!(k.body.contains("\"alg\":\"hmac-sha256\""));
    }

    #[test]
    fn oversized_records_are_fitted() {
        let mut chain = Chain::new("c".into(), None);
        let mut r = sample();
        r.path = "/x".repeat(5000);
        let line = chain
            .seal(&mut r, 4096, |rec| {
                rec.path.truncate(rec.path.len() / 2);
                rec.truncated = true;
                true
            })
            .unwrap();
        assert!(line.len() <= 4096, "{}", line.len());
        assert!(line.contains("\"truncated\":true"));
    }

    #[test]
    fn unseal_rejects_lines_without_a_proper_hash() {
        assert!(unseal("").is_none());
        assert!(unseal("{\"a\":1}").is_none());
        let fake = format!("{{\"a\":1,\"hash\":\"{}\"}}", "Z".repeat(64));
        assert!(unseal(&fake).is_none());
        let ok = format!("{{\"a\":1,\"hash\":\"{}\"}}", "a".repeat(64));
        assert_eq!(unseal(&ok).unwrap().body, "{\"a\":1}");
        // Multi-byte characters right before the seal do not split a character.
        let odd = format!("{{\"a\":\"é\",\"hash\":\"{}\"}}", "a".repeat(64));
        assert!(unseal(&odd).is_some());
    }
}
