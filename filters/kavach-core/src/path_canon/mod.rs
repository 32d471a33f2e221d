//! The canonical form of a request path, the only form rules are matched against.
//!
//! A path that two components could read differently (the proxy and the upstream, or two
//! upstream frameworks) is refused rather than guessed at: `%2F` inside a segment, `%25`, a
//! backslash, `;` path parameters, control bytes, non-ASCII bytes, a fragment. What remains has a
//! single meaning and is brought to one spelling:
//!
//! - the query (`?` onwards) is dropped (it is not part of the decision);
//! - `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded, exactly once; every
//!   other `%XX` stays encoded, with upper-case hex digits;
//! - repeated slashes are merged (`//a///b` is `/a/b`);
//! - `.` and `..` segments (also when spelled `%2e`, since decoding comes first) are refused, or
//!   resolved per RFC 3986 section 5.2.4 when the policy says `"dot_segments": "resolve"`;
//! - a trailing slash is kept: `/v1/cards/` and `/v1/cards` are different paths, and the glob
//!   `/v1/cards/*` does not match `/v1/cards/` (`*` needs a non-empty segment).

use std::fmt::{self, Write as _};

use serde::Deserialize;

use crate::text::{hex_value, is_unreserved};

/// What to do with `.` and `..` path segments.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DotSegments {
    /// Refuse the request (`ambiguous_path:dot_segment`).
    #[default]
    Reject,
    /// Resolve them; `..` above the root is refused (`ambiguous_path:traversal`).
    Resolve,
}

/// Why a path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Nothing before the query.
    Empty,
    /// Does not start with `/` (`*`, `http://host/x`, `a/b`).
    NotAbsolute,
    /// A `#` anywhere in the value.
    Fragment,
    /// A byte above 0x7f (raw UTF-8 or invalid UTF-8).
    NonAscii,
    /// A control byte (below 0x20, or 0x7f), raw or percent-encoded.
    Control,
    /// A raw `\`.
    Backslash,
    /// A raw `;` (`;jsessionid=...`).
    PathParameter,
    /// `%2F` or `%5C`: a separator hidden inside a segment.
    EncodedSlash,
    /// `%25`: an encoded percent sign, which a second decoding pass would turn into more.
    DoubleEncoding,
    /// `%` not followed by two hexadecimal digits.
    BadEncoding,
    /// A `.` or `..` segment while dot segments are refused.
    DotSegment,
    /// `..` above the root.
    Traversal,
}

impl PathError {
    /// The short machine-readable name used in decisions (`ambiguous_path:<kind>`).
    pub fn kind(self) -> &'static str {
        match self {
            PathError::Empty => "empty",
            PathError::NotAbsolute => "not_absolute",
            PathError::Fragment => "fragment",
            PathError::NonAscii => "non_ascii",
            PathError::Control => "control",
            PathError::Backslash => "backslash",
            PathError::PathParameter => "path_parameter",
            PathError::EncodedSlash => "encoded_slash",
            PathError::DoubleEncoding => "double_encoding",
            PathError::BadEncoding => "bad_encoding",
            PathError::DotSegment => "dot_segment",
            PathError::Traversal => "traversal",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// The canonical form of the `:path` value `raw`, or why it has none.
pub fn canonicalize(raw: &[u8], dot_segments: DotSegments) -> Result<String, PathError> {
    if raw.contains(&b'#') {
        return Err(PathError::Fragment);
    }
    let path = match raw.iter().position(|&b| b == b'?') {
        Some(end) => raw.get(..end).unwrap_or_default(),
        None => raw,
    };
    match path.first() {
        None => return Err(PathError::Empty),
        Some(b'/') => {}
        Some(_) => return Err(PathError::NotAbsolute),
    }
    let decoded = decode(path)?;

    let mut segments: Vec<&str> = Vec::new();
    // Whether the output ends with a slash: after an empty last segment, or after a final `.`
    // or `..` (RFC 3986: `/a/b/..` is `/a/`).
    let mut trailing = false;
    // `decoded` starts with '/', so the first piece is always empty.
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" => trailing = true,
            "." | ".." if dot_segments == DotSegments::Reject => return Err(PathError::DotSegment),
            "." => trailing = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::Traversal);
                }
                trailing = true;
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }

    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if segments.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

/// Checks every byte and decodes percent-encoded unreserved characters.
fn decode(path: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        match b {
            0x80..=0xff => return Err(PathError::NonAscii),
            0x00..=0x1f | 0x7f => return Err(PathError::Control),
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'%' => {
                let hi = path.get(i + 1).and_then(|&c| hex_value(c));
                let lo = path.get(i + 2).and_then(|&c| hex_value(c));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEncoding);
                };
                let value = (hi << 4) | lo;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    b'%' => return Err(PathError::DoubleEncoding),
                    0x00..=0x1f | 0x7f => return Err(PathError::Control),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        // Writing to a String cannot fail.
                        let _ = write!(out, "%{v:02X}");
                    }
                }
                i += 3;
                continue;
            }
            _ => out.push(char::from(b)),
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
