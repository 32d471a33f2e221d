//! Envoy's rate-limit service API (RLS v3), the few messages global rules exchange, encoded and
//! decoded by hand (protobuf wire format) so the filter carries no protobuf runtime.
//!
//! - request: `envoy.service.ratelimit.v3.RateLimitRequest` { domain = 1, descriptors = 2
//!   (`envoy.extensions.common.ratelimit.v3.RateLimitDescriptor` { entries = 1 { key = 1,
//!   value = 2 }, hits_addend = 3 (`google.protobuf.UInt64Value`) }), hits_addend = 3 }
//! - response: `RateLimitResponse` { overall_code = 1, statuses = 2 (`DescriptorStatus`
//!   { code = 1, current_limit = 2 { requests_per_unit = 1, unit = 2, name = 3 },
//!   limit_remaining = 3, duration_until_reset = 4 (`google.protobuf.Duration` { seconds = 1 }) }) }
//!
//! The decoder reads only what the filter uses, skips every other field, and refuses (never
//! panics on) malformed input: the answer comes from another process and may be anything.

/// gRPC service and method of `ShouldRateLimit`.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// Largest answer the filter reads; a rate-limit answer for a few descriptors is far smaller.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most descriptor statuses read from one answer (more than the rules a config may have).
const MAX_STATUSES: usize = 256;

/// One descriptor: its entries (key, value) and how many hits this request counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
    pub hits: u64,
}

/// Verdict of the service for a request or one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn from_wire(v: u64) -> Code {
        match v {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

/// The limit the service applied to a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentLimit {
    pub requests_per_unit: u32,
    /// Length of the unit in seconds (0 when the unit is unknown).
    pub unit_s: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub current_limit: Option<CurrentLimit>,
    pub remaining: u32,
    /// Seconds until the descriptor's window resets, when the service says.
    pub reset_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub overall: Code,
    pub statuses: Vec<Status>,
}

/// Seconds in an `envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit`.
fn unit_seconds(unit: u64) -> u64 {
    match unit {
        1 => 1,
        2 => 60,
        3 => 3_600,
        4 => 86_400,
        7 => 7 * 86_400,
        5 => 30 * 86_400,
        6 => 365 * 86_400,
        _ => 0,
    }
}

// ---- encoding ----

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, 0);
    put_varint(out, v);
}

/// Encodes a `RateLimitRequest`. Each descriptor carries its own `hits_addend` when it is not 1;
/// the request-level `hits_addend` is set when every descriptor counts the same (servers that
/// predate per-descriptor hits read that one).
pub fn encode_request<'a, I>(domain: &str, descriptors: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a Descriptor>,
{
    let mut out = Vec::with_capacity(128);
    put_bytes(&mut out, 1, domain.as_bytes());
    let mut hits = None;
    let mut uniform = true;
    for d in descriptors {
        let mut desc = Vec::with_capacity(64);
        for (k, v) in &d.entries {
            let mut entry = Vec::with_capacity(k.len() + v.len() + 4);
            put_bytes(&mut entry, 1, k.as_bytes());
            put_bytes(&mut entry, 2, v.as_bytes());
            put_bytes(&mut desc, 1, &entry);
        }
        if d.hits != 1 {
            let mut wrapped = Vec::with_capacity(10);
            put_uint(&mut wrapped, 1, d.hits);
            put_bytes(&mut desc, 3, &wrapped);
        }
        put_bytes(&mut out, 2, &desc);
        uniform &= hits.is_none_or(|h| h == d.hits);
        hits = Some(d.hits);
    }
    match hits {
        Some(h) if uniform && h != 1 => put_uint(&mut out, 3, h.min(u64::from(u32::MAX))),
        _ => {}
    }
    out
}

// ---- decoding ----

/// Why an answer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    BadWireType,
    TooLarge,
}

/// A field value as read from the wire.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Truncated)
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// The next field: its number and value.
    fn field(&mut self) -> Result<(u64, Value<'a>), DecodeError> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
                Value::Bytes(self.skip(len)?)
            }
            5 => {
                self.skip(4)?;
                Value::Fixed
            }
            _ => return Err(DecodeError::BadWireType),
        };
        Ok((key >> 3, value))
    }
}

fn decode_current_limit(buf: &[u8]) -> Result<CurrentLimit, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = CurrentLimit::default();
    while !r.done() {
        match r.field()? {
            (1, Value::Varint(v)) => out.requests_per_unit = u32::try_from(v).unwrap_or(u32::MAX),
            (2, Value::Varint(v)) => out.unit_s = unit_seconds(v),
            (3, Value::Bytes(b)) => out.name = String::from_utf8_lossy(b).into_owned(),
            _ => {}
        }
    }
    Ok(out)
}

fn decode_duration_s(buf: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader::new(buf);
    let mut seconds: u64 = 0;
    let mut nanos: u64 = 0;
    while !r.done() {
        match r.field()? {
            // int64 seconds: a negative value arrives as a huge varint; treat as 0.
            (1, Value::Varint(v)) => seconds = if v > i64::MAX as u64 { 0 } else { v },
            (2, Value::Varint(v)) => nanos = if v > 999_999_999 { 0 } else { v },
            _ => {}
        }
    }
    Ok(seconds.saturating_add(u64::from(nanos > 0)))
}

fn decode_status(buf: &[u8]) -> Result<Status, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = Status {
        code: Code::Unknown,
        current_limit: None,
        remaining: 0,
        reset_s: None,
    };
    while !r.done() {
        match r.field()? {
            (1, Value::Varint(v)) => out.code = Code::from_wire(v),
            (2, Value::Bytes(b)) => out.current_limit = Some(decode_current_limit(b)?),
            (3, Value::Varint(v)) => out.remaining = u32::try_from(v).unwrap_or(u32::MAX),
            (4, Value::Bytes(b)) => out.reset_s = Some(decode_duration_s(b)?),
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes a `RateLimitResponse`.
pub fn decode_response(buf: &[u8]) -> Result<Response, DecodeError> {
    if buf.len() > MAX_RESPONSE_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let mut r = Reader::new(buf);
    let mut out = Response {
        overall: Code::Unknown,
        statuses: Vec::new(),
    };
    while !r.done() {
        match r.field()? {
            (1, Value::Varint(v)) => out.overall = Code::from_wire(v),
            (2, Value::Bytes(b)) => {
                if out.statuses.len() >= MAX_STATUSES {
                    return Err(DecodeError::TooLarge);
                }
                out.statuses.push(decode_status(b)?);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Test support: a service's answer in wire format, and a request read back.
#[cfg(test)]
pub(crate) mod wire {
    use super::*;

    /// One descriptor status: code, optional (requests_per_unit, unit, name), remaining, reset.
    pub type StatusSpec<'a> = (u64, Option<(u64, u64, &'a str)>, u64, u64);

    pub fn status(spec: StatusSpec) -> Vec<u8> {
        let (code, limit, remaining, reset) = spec;
        let mut s = Vec::new();
        put_uint(&mut s, 1, code);
        if let Some((rpu, unit, name)) = limit {
            let mut l = Vec::new();
            put_uint(&mut l, 1, rpu);
            put_uint(&mut l, 2, unit);
            put_bytes(&mut l, 3, name.as_bytes());
            put_bytes(&mut s, 2, &l);
        }
        put_uint(&mut s, 3, remaining);
        let mut dur = Vec::new();
        put_uint(&mut dur, 1, reset);
        put_bytes(&mut s, 4, &dur);
        s
    }

    pub fn response(overall: u64, statuses: &[StatusSpec]) -> Vec<u8> {
        let mut buf = Vec::new();
        put_uint(&mut buf, 1, overall);
        for st in statuses {
            put_bytes(&mut buf, 2, &status(*st));
        }
        buf
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// (domain, descriptors, request-level hits_addend) of an encoded request.
    pub fn request(buf: &[u8]) -> (String, Vec<Descriptor>, u64) {
        let mut r = Reader::new(buf);
        let (mut domain, mut descriptors, mut hits) = (String::new(), Vec::new(), 0);
        while !r.done() {
            match r.field().unwrap() {
                (1, Value::Bytes(b)) => domain = text(b),
                (2, Value::Bytes(b)) => {
                    let mut d = Descriptor {
                        entries: Vec::new(),
                        hits: 1,
                    };
                    let mut dr = Reader::new(b);
                    while !dr.done() {
                        match dr.field().unwrap() {
                            (1, Value::Bytes(e)) => {
                                let mut er = Reader::new(e);
                                let (mut k, mut v) = (String::new(), String::new());
                                while !er.done() {
                                    match er.field().unwrap() {
                                        (1, Value::Bytes(x)) => k = text(x),
                                        (2, Value::Bytes(x)) => v = text(x),
                                        other => panic!("entry field {}", other.0),
                                    }
                                }
                                d.entries.push((k, v));
                            }
                            (3, Value::Bytes(w)) => match Reader::new(w).field().unwrap() {
                                (1, Value::Varint(n)) => d.hits = n,
                                other => panic!("hits field {}", other.0),
                            },
                            other => panic!("descriptor field {}", other.0),
                        }
                    }
                    descriptors.push(d);
                }
                (3, Value::Varint(n)) => hits = n,
                other => panic!("request field {}", other.0),
            }
        }
        (domain, descriptors, hits)
    }
}

#[cfg(test)]
mod tests {
    use super::wire;
    use super::*;

    fn d(entries: &[(&str, &str)], hits: u64) -> Descriptor {
        Descriptor {
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            hits,
        }
    }

    #[test]
    fn request_bytes_match_the_wire_format() {
        let bytes = encode_request("kv", &[d(&[("a", "b")], 1)]);
        // domain "kv"; descriptor { entry { key "a", value "b" } }
        assert_eq!(
            bytes,
            vec![0x0a, 2, b'k', b'v', 0x12, 8, 0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b']
        );
    }

    #[test]
    fn hits_are_per_descriptor_and_uniform_ones_also_per_request() {
        let uniform = encode_request("kv", &[d(&[("a", "b")], 3)]);
        // ... descriptor { entry, hits_addend { value 3 } }, hits_addend 3
        assert_eq!(
            uniform,
            vec![
                0x0a, 2, b'k', b'v', 0x12, 12, 0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b', 0x1a, 2,
                0x08, 3, 0x18, 3
            ]
        );
        let mixed = encode_request("kv", &[d(&[("a", "b")], 3), d(&[("c", "d")], 1)]);
        assert_ne!(
            mixed.last(),
            Some(&3),
            "no request-level hits when they differ"
        );
        assert!(mixed.ends_with(&[0x12, 8, 0x0a, 6, 0x0a, 1, b'c', 0x12, 1, b'd']));
    }

    #[test]
    fn decodes_statuses_and_skips_unknown_fields() {
        let mut buf = Vec::new();
        put_uint(&mut buf, 1, 2);
        put_bytes(
            &mut buf,
            2,
            &wire::status((1, Some((10, 2, "orders")), 7, 42)),
        );
        put_bytes(&mut buf, 2, &wire::status((2, None, 0, 5)));
        // response_headers_to_add, raw_body, a fixed64 and a fixed32 field: skipped.
        put_bytes(&mut buf, 3, b"\x0a\x01x");
        put_bytes(&mut buf, 5, b"body");
        buf.extend_from_slice(&[(9 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        buf.extend_from_slice(&[(10 << 3) | 5, 1, 2, 3, 4]);
        let r = decode_response(&buf).unwrap();
        assert_eq!(r.overall, Code::OverLimit);
        assert_eq!(
            r.statuses,
            vec![
                Status {
                    code: Code::Ok,
                    current_limit: Some(CurrentLimit {
                        requests_per_unit: 10,
                        unit_s: 60,
                        name: "orders".into()
                    }),
                    remaining: 7,
                    reset_s: Some(42),
                },
                Status {
                    code: Code::OverLimit,
                    current_limit: None,
                    remaining: 0,
                    reset_s: Some(5),
                },
            ]
        );
    }

    #[test]
    fn requests_read_back_as_encoded() {
        let ds = vec![
            d(&[("rule", "g"), ("principal", "spiffe://x/y")], 2),
            d(&[("rule", "h")], 1),
        ];
        let (domain, back, hits) = wire::request(&encode_request("kavach", &ds));
        assert_eq!((domain.as_str(), back, hits), ("kavach", ds, 0));
    }

    #[test]
    fn empty_answer_is_unknown() {
        let r = decode_response(&[]).unwrap();
        assert_eq!(r.overall, Code::Unknown);
        assert!(r.statuses.is_empty());
    }

    #[test]
    fn malformed_answers_are_refused() {
        assert_eq!(decode_response(&[0x08]), Err(DecodeError::Truncated));
        assert_eq!(decode_response(&[0x12, 5, 1]), Err(DecodeError::Truncated));
        assert_eq!(decode_response(&[0x0b]), Err(DecodeError::BadWireType));
        assert_eq!(decode_response(&[0x08; 11]), Err(DecodeError::Truncated));
        let huge = vec![0u8; MAX_RESPONSE_BYTES + 1];
        assert_eq!(decode_response(&huge), Err(DecodeError::TooLarge));
        // A length that overflows the position.
        let mut b = vec![0x12];
        put_varint(&mut b, u64::MAX);
        assert_eq!(decode_response(&b), Err(DecodeError::Truncated));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let buf: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_response(&buf);
        }
    }

    #[test]
    fn negative_or_odd_durations_are_safe() {
        let mut dur = Vec::new();
        put_uint(&mut dur, 1, u64::MAX); // -1 as int64
        assert_eq!(decode_duration_s(&dur).unwrap(), 0);
        let mut dur = Vec::new();
        put_uint(&mut dur, 1, 2);
        put_uint(&mut dur, 2, 5);
        assert_eq!(
            decode_duration_s(&dur).unwrap(),
            3,
            "partial seconds round up"
        );
    }
}
