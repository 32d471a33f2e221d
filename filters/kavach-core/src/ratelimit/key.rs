//! Who a request is: the client address and header values in canonical form, and the bytes a
//! bucket key is made of.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::headers::{single, Single};
use crate::host::Headers;

/// Longest header value used in a key; a longer one is treated as invalid.
pub const MAX_KEY_VALUE_BYTES: usize = 1024;

/// How client addresses are aggregated into buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPolicy {
    /// IPv4 addresses are aggregated to this prefix length (32: one bucket per address).
    pub ipv4_prefix: u8,
    /// IPv6 addresses are aggregated to this prefix length (64: one bucket per /64, what one
    /// subscriber usually gets).
    pub ipv6_prefix: u8,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        AddressPolicy {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

/// Parses one address as Envoy or a proxy writes it:
/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let t = text.trim_matches(|c| c == ' ' || c == '\t');
    if t.is_empty() || t.len() > 64 {
        return None;
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    t.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The client's address from Envoy's `source.address` property (`ip:port`, `[v6]:port`).
///
/// That is Envoy's *trusted client address*: the connection's peer when the connection manager
/// has `use_remote_address: true`, or the rightmost `x-forwarded-for` entry not written by the
/// `xff_num_trusted_hops` trusted proxies in front. The filter never reads `x-forwarded-for`
/// itself: a second, different reading of it would be a second way in for a forged one.
/// None when the property is missing or not an IP address (a pipe).
pub fn client_address(source: Option<&[u8]>) -> Option<IpAddr> {
    parse_address(std::str::from_utf8(source?).ok()?)
}

/// The canonical text of the network `ip` is aggregated to: `203.0.113.7`, `203.0.113.0/24`,
/// `2001:db8:1:2::/64`. An IPv4-mapped IPv6 address (`::ffff:203.0.113.7`) is the IPv4
/// address. IPv6 text is RFC 5952 (lower case, longest zero run compressed).
pub fn canonical_network(ip: IpAddr, policy: &AddressPolicy) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let prefix = policy.ipv4_prefix.min(32);
            if prefix == 32 {
                return v4.to_string();
            }
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let prefix = policy.ipv6_prefix.min(128);
            if prefix == 128 {
                return v6.to_string();
            }
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Why a key could not be built from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Not there (no header, no verified certificate, no route name, no usable address).
    Absent,
    /// The header appeared more than once: never pick one.
    Duplicated,
    /// Not valid UTF-8, a control character, or longer than [`MAX_KEY_VALUE_BYTES`].
    Invalid,
}

impl Missing {
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::Absent => "absent",
            Missing::Duplicated => "duplicated",
            Missing::Invalid => "invalid",
        }
    }
}

/// Canonical form of a header value used in a key: surrounding spaces and tabs removed, case
/// kept unless `lowercase` (ASCII letters only); empty counts as absent.
pub fn header_value(headers: &Headers, name: &str, lowercase: bool) -> Result<String, Missing> {
    let raw = match single(headers, name) {
        Single::Absent => return Err(Missing::Absent),
        Single::Duplicated => return Err(Missing::Duplicated),
        Single::One(v) => v,
    };
    text_value(raw, lowercase)
}

/// Canonical form of a value from the host (principal, route name) or a header.
pub fn text_value(raw: &[u8], lowercase: bool) -> Result<String, Missing> {
    let text = std::str::from_utf8(raw).map_err(|_| Missing::Invalid)?;
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    if text.is_empty() {
        return Err(Missing::Absent);
    }
    if text.len() > MAX_KEY_VALUE_BYTES || text.chars().any(char::is_control) {
        return Err(Missing::Invalid);
    }
    Ok(if lowercase {
        text.to_ascii_lowercase()
    } else {
        text.to_string()
    })
}

/// The bytes a bucket is identified by: each part tagged and length-prefixed, so no two
/// different lists of values encode alike (`a` + `bc` is not `ab` + `c`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyBytes(Vec<u8>);

impl KeyBytes {
    pub fn new() -> Self {
        KeyBytes(Vec::new())
    }

    pub fn push(&mut self, tag: u8, value: &[u8]) {
        self.0.push(tag);
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(value);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    fn policy(v4: u8, v6: u8) -> AddressPolicy {
        AddressPolicy {
            ipv4_prefix: v4,
            ipv6_prefix: v6,
        }
    }

    fn canon(text: &str) -> String {
        canonical_network(parse_address(text).unwrap(), &AddressPolicy::default())
    }

    #[test]
    fn addresses_parse_in_every_form_envoy_and_proxies_write() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_address("203.0.113.7"), Some(v4));
        assert_eq!(parse_address(" 203.0.113.7:40000\t"), Some(v4));
        assert_eq!(parse_address("2001:db8::1"), Some(v6));
        assert_eq!(parse_address("[2001:db8::1]"), Some(v6));
        assert_eq!(parse_address("[2001:db8::1]:443"), Some(v6));
        for bad in [
            "",
            "unknown",
            "1.2.3",
            "203.0.113.7:",
            "[1.2.3.4]",
            "_hidden",
            "1.2.3.4 5",
        ] {
            assert_eq!(parse_address(bad), None, "{bad:?}");
        }
        assert_eq!(parse_address(&"1".repeat(100)), None);
    }

    #[test]
    fn ipv6_is_aggregated_to_its_prefix_in_canonical_text() {
        assert_eq!(canon("2001:DB8:0:0:1:2:3:4"), "2001:db8::/64");
        assert_eq!(canon("[2001:db8:0:7:ffff::1]:443"), "2001:db8:0:7::/64");
        assert_eq!(
            canonical_network("2001:db8:0:7::1".parse().unwrap(), &policy(32, 48)),
            "2001:db8::/48"
        );
        assert_eq!(
            canonical_network("2001:db8::1".parse().unwrap(), &policy(32, 128)),
            "2001:db8::1"
        );
        // Two addresses of one /64 are one client; the next /64 is another.
        assert_eq!(canon("2001:db8:1:2::a"), canon("2001:db8:1:2:ffff::b"));
        assert_ne!(canon("2001:db8:1:2::a"), canon("2001:db8:1:3::a"));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        assert_eq!(canon("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(canon("[::ffff:cb00:7107]:8080"), "203.0.113.7");
        assert_eq!(canon("203.0.113.7"), "203.0.113.7");
        assert_eq!(
            canonical_network("::ffff:203.0.113.7".parse().unwrap(), &policy(24, 64)),
            "203.0.113.0/24"
        );
        // Not mapped: the deprecated IPv4-compatible form stays IPv6.
        assert_eq!(canon("::203.0.113.7"), "::/64");
    }

    #[test]
    fn ipv4_prefixes_mask_the_host_bits() {
        let ip: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(canonical_network(ip, &policy(24, 64)), "203.0.113.0/24");
        assert_eq!(canonical_network(ip, &policy(8, 64)), "203.0.0.0/8");
        assert_eq!(canonical_network(ip, &policy(0, 0)), "0.0.0.0/0");
    }

    #[test]
    fn the_client_is_envoys_source_address() {
        assert_eq!(
            client_address(Some(b"10.0.0.5:4000")),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            client_address(Some(b"[2001:db8::5]:0")),
            Some("2001:db8::5".parse().unwrap())
        );
        assert_eq!(client_address(None), None);
        assert_eq!(client_address(Some(b"/var/run/sock")), None);
        assert_eq!(client_address(Some(b"\xff")), None);
    }

    #[test]
    fn header_values_are_trimmed_checked_and_never_picked_from_duplicates() {
        let hs = h(&[
            ("x-api-key", b"  Key-1\t"),
            ("x-dup", b"a"),
            ("X-Dup", b"b"),
            ("x-empty", b"  "),
            ("x-bin", b"k\xff"),
            ("x-ctl", b"a\x01b"),
        ]);
        assert_eq!(header_value(&hs, "x-api-key", false), Ok("Key-1".into()));
        assert_eq!(header_value(&hs, "X-API-KEY", true), Ok("key-1".into()));
        assert_eq!(header_value(&hs, "x-dup", false), Err(Missing::Duplicated));
        assert_eq!(header_value(&hs, "x-none", false), Err(Missing::Absent));
        assert_eq!(header_value(&hs, "x-empty", false), Err(Missing::Absent));
        assert_eq!(header_value(&hs, "x-bin", false), Err(Missing::Invalid));
        assert_eq!(header_value(&hs, "x-ctl", false), Err(Missing::Invalid));
        let long = vec![b'a'; MAX_KEY_VALUE_BYTES + 1];
        assert_eq!(text_value(&long, false), Err(Missing::Invalid));
        assert_eq!(
            text_value(&long[..MAX_KEY_VALUE_BYTES], false).map(|s| s.len()),
            Ok(MAX_KEY_VALUE_BYTES)
        );
    }

    #[test]
    fn key_bytes_are_unambiguous() {
        let mut a = KeyBytes::new();
        a.push(1, b"a");
        a.push(1, b"bc");
        let mut b = KeyBytes::new();
        b.push(1, b"ab");
        b.push(1, b"c");
        assert_ne!(a, b);
        let mut c = KeyBytes::new();
        c.push(2, b"a");
        c.push(1, b"bc");
        assert_ne!(a, c);
    }
}
