//! The canonical request, exactly as SigV4 defines it: method, canonical path, canonical query,
//! canonical headers, signed-header list and payload hash, joined by `\n`. Its `Display` output
//! is byte for byte what gets hashed.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::encoding;
use crate::error::ProtoError;
use crate::limits::{
    MAX_HEADER_NAME_LEN, MAX_HEADER_VALUE_LEN, MAX_HEADERS, MAX_METHOD_LEN, MAX_PATH_LEN,
    MAX_QUERY_LEN, MAX_QUERY_PARAMS, MAX_SIGNED_HEADERS,
};
use crate::profile::{DuplicateHeaders, ObsFold, Profile};

/// The parts of an HTTP request that canonicalization reads. `headers` is every header field of
/// the request in order (repeated names repeated), including `host`.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Path as sent on the wire (percent-encoded), without the query.
    pub path: &'a str,
    /// Raw query string without `?`; empty when there is none.
    pub query: &'a str,
    /// Header fields as (name, value).
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> RequestParts<'a> {
    /// Values of every header field named `name` (compared case-insensitively), in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The single value of `name`; an error when it is absent or repeated.
    pub fn single_header(&self, name: &str) -> Result<&'a str, ProtoError> {
        let mut values = self.header_values(name);
        let first = values
            .next()
            .ok_or_else(|| ProtoError::MissingHeader(name.to_owned()))?;
        if values.next().is_some() {
            return Err(ProtoError::DuplicateHeader(name.to_owned()));
        }
        Ok(first)
    }

    /// Checks the size bounds and basic syntax every request must meet before it is looked at.
    pub fn check_bounds(&self) -> Result<(), ProtoError> {
        if self.method.is_empty()
            || self.method.len() > MAX_METHOD_LEN
            || !self.method.bytes().all(is_token_byte)
        {
            return Err(ProtoError::InvalidMethod);
        }
        if self.path.len() > MAX_PATH_LEN {
            return Err(ProtoError::TooLarge {
                what: "path",
                limit: MAX_PATH_LEN,
            });
        }
        if self.query.len() > MAX_QUERY_LEN {
            return Err(ProtoError::TooLarge {
                what: "query",
                limit: MAX_QUERY_LEN,
            });
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(ProtoError::TooLarge {
                what: "header count",
                limit: MAX_HEADERS,
            });
        }
        for (name, value) in self.headers {
            check_header_name(name)?;
            if value.len() > MAX_HEADER_VALUE_LEN {
                return Err(ProtoError::TooLarge {
                    what: "header value",
                    limit: MAX_HEADER_VALUE_LEN,
                });
            }
        }
        Ok(())
    }
}

/// RFC 9110 `tchar`.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn check_header_name(name: &str) -> Result<(), ProtoError> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN || !name.bytes().all(is_token_byte) {
        return Err(ProtoError::InvalidHeaderName(
            name.chars().take(64).collect::<String>(),
        ));
    }
    Ok(())
}

/// The validated SignedHeaders list: lower-case, sorted, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    names: Vec<String>,
}

impl SignedHeaders {
    /// Builds the list a signer uses: the profile's always-signed headers, its signed-when-present
    /// headers that the request carries, and `extra` (names the caller asked to sign).
    pub fn for_signing<S: AsRef<str>>(
        profile: &Profile,
        parts: &RequestParts<'_>,
        extra: &[S],
    ) -> Result<Self, ProtoError> {
        let mut names: Vec<String> = profile
            .always_signed
            .iter()
            .map(|n| (*n).to_owned())
            .collect();
        for name in profile.signed_when_present {
            if parts.header_values(name).next().is_some() {
                names.push((*name).to_owned());
            }
        }
        for name in extra {
            let name = name.as_ref();
            check_header_name(name)?;
            names.push(name.to_ascii_lowercase());
        }
        names.sort();
        names.dedup();
        Self::from_sorted(names)
    }

    /// Every header of the request, as the AWS test suite signs them.
    pub fn all_of(parts: &RequestParts<'_>) -> Result<Self, ProtoError> {
        let mut names: Vec<String> = parts
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        Self::from_sorted(names)
    }

    fn from_sorted(names: Vec<String>) -> Result<Self, ProtoError> {
        if names.len() > MAX_SIGNED_HEADERS {
            return Err(ProtoError::TooLarge {
                what: "SignedHeaders",
                limit: MAX_SIGNED_HEADERS,
            });
        }
        Ok(Self { names })
    }

    /// Parses the `a;b;c` form strictly: it must already be lower case, sorted and duplicate-free,
    /// since a verifier that re-sorted would accept lists no conforming signer produces.
    pub fn parse(text: &str) -> Result<Self, ProtoError> {
        if text.is_empty() {
            return Err(ProtoError::InvalidSignedHeaders("empty".into()));
        }
        let count = text.bytes().filter(|b| *b == b';').count() + 1;
        let mut names: Vec<String> = Vec::with_capacity(count.min(MAX_SIGNED_HEADERS));
        for name in text.split(';') {
            if names.len() == MAX_SIGNED_HEADERS {
                return Err(ProtoError::TooLarge {
                    what: "SignedHeaders",
                    limit: MAX_SIGNED_HEADERS,
                });
            }
            check_header_name(name)
                .map_err(|_| ProtoError::InvalidSignedHeaders("invalid name".into()))?;
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(ProtoError::InvalidSignedHeaders("not lower case".into()));
            }
            if let Some(last) = names.last() {
                if last.as_str() >= name {
                    return Err(ProtoError::InvalidSignedHeaders(
                        "not sorted or repeated".into(),
                    ));
                }
            }
            names.push(name.to_owned());
        }
        Ok(Self { names })
    }

    /// Checks that the list covers what `profile` demands for this request.
    pub fn check_coverage(
        &self,
        profile: &Profile,
        parts: &RequestParts<'_>,
    ) -> Result<(), ProtoError> {
        for required in profile.always_signed {
            if !self.contains(required) {
                return Err(ProtoError::InvalidSignedHeaders(format!(
                    "{required} must be signed"
                )));
            }
        }
        for conditional in profile.signed_when_present {
            if parts.header_values(conditional).next().is_some() && !self.contains(conditional) {
                return Err(ProtoError::InvalidSignedHeaders(format!(
                    "{conditional} is present and must be signed"
                )));
            }
        }
        Ok(())
    }

    /// Whether `name` (lower case) is in the list.
    pub fn contains(&self, name: &str) -> bool {
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_ok()
    }

    /// The names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The names, sorted, taken out of the list.
    pub fn into_names(self) -> Vec<String> {
        self.names
    }
}

impl fmt::Display for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// The canonical request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    text: String,
}

impl CanonicalRequest {
    /// Canonicalizes `parts` under `profile`, signing the headers in `signed` and using
    /// `payload_hash` (64 lower-case hex digits, or `UNSIGNED-PAYLOAD` for presigned URLs) as the
    /// last line. `extra_query` holds presigned-URL parameters already in canonical encoding.
    pub fn new(
        profile: &Profile,
        parts: &RequestParts<'_>,
        signed: &SignedHeaders,
        payload_hash: &str,
    ) -> Result<Self, ProtoError> {
        parts.check_bounds()?;
        // Sized for the whole text, so building it never reallocates.
        let header_bytes: usize = parts
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum();
        let mut text =
            String::with_capacity(256 + parts.path.len() + parts.query.len() + header_bytes);
        text.push_str(parts.method);
        text.push('\n');
        canonical_path(profile, parts.path, &mut text)?;
        text.push('\n');
        canonical_query(profile, parts.query, &mut text)?;
        text.push('\n');
        for name in signed.names() {
            text.push_str(name);
            text.push(':');
            canonical_header_value(profile, parts, name, &mut text)?;
            text.push('\n');
        }
        text.push('\n');
        for (i, name) in signed.names().iter().enumerate() {
            if i > 0 {
                text.push(';');
            }
            text.push_str(name);
        }
        text.push('\n');
        text.push_str(payload_hash);
        Ok(Self { text })
    }

    /// The exact bytes that are hashed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// SHA-256 of the canonical request.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }
}

impl fmt::Display for CanonicalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn canonical_path(profile: &Profile, path: &str, out: &mut String) -> Result<(), ProtoError> {
    if !path.starts_with('/') || path.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err(ProtoError::InvalidPath);
    }
    if profile.normalize_path {
        let mut segments: Vec<&str> = Vec::new();
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                other => segments.push(other),
            }
        }
        out.push('/');
        for (i, segment) in segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            push_encoded(segment, encoding::decode, out)?;
        }
        if path.ends_with('/') && !segments.is_empty() {
            out.push('/');
        }
    } else {
        for (i, segment) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            push_encoded(segment, encoding::decode, out)?;
        }
    }
    Ok(())
}

/// SigV4's canonical query, with the profile's form-urlencoded rules: under HWS1 `+` reads as a
/// space (canonical `%20`, distinct from `%2B`) and a name may appear only once, so two queries
/// with the same canonical form are read the same by a form-urlencoded parser.
fn canonical_query(profile: &Profile, query: &str, out: &mut String) -> Result<(), ProtoError> {
    if query.is_empty() {
        return Ok(());
    }
    let decode = if profile.query_plus_is_space {
        encoding::decode_form
    } else {
        encoding::decode
    };
    let mut params: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if params.len() == MAX_QUERY_PARAMS {
            return Err(ProtoError::TooLarge {
                what: "query parameters",
                limit: MAX_QUERY_PARAMS,
            });
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((canonical_part(key, decode)?, canonical_part(value, decode)?));
    }
    params.sort_unstable();
    if profile.reject_repeated_query_names {
        if let Some(pair) = params.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(ProtoError::RepeatedQueryParameter(
                pair[0].0.chars().take(64).collect(),
            ));
        }
    }
    for (i, (key, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    Ok(())
}

/// Appends the canonical encoding of `text` (decoded once with `decode`, then encoded). Text made
/// only of unreserved characters is its own canonical form (neither decoding nor encoding changes
/// it) and is copied whole.
fn push_encoded(
    text: &str,
    decode: fn(&str) -> Result<Vec<u8>, ProtoError>,
    out: &mut String,
) -> Result<(), ProtoError> {
    if encoding::is_canonical(text) {
        out.push_str(text);
    } else {
        encoding::encode_into(&decode(text)?, out);
    }
    Ok(())
}

/// The canonical encoding of a query name or value, borrowed when `text` already is one.
fn canonical_part<'t>(
    text: &'t str,
    decode: fn(&str) -> Result<Vec<u8>, ProtoError>,
) -> Result<Cow<'t, str>, ProtoError> {
    if encoding::is_canonical(text) {
        Ok(Cow::Borrowed(text))
    } else {
        Ok(Cow::Owned(encoding::encode(&decode(text)?)))
    }
}

/// The canonical value of header `name`: trimmed at both ends, and under SigV4's rule (AWS profile)
/// with runs of spaces collapsed; HWS1 keeps the inside exactly as sent, so a changed value never
/// verifies. Control characters are refused; so is obsolete line folding, except under a profile
/// that joins folded lines as AWS does.
fn canonical_header_value(
    profile: &Profile,
    parts: &RequestParts<'_>,
    name: &str,
    out: &mut String,
) -> Result<(), ProtoError> {
    let mut found = 0usize;
    let lowercase = profile.lowercase_host && name == "host";
    for value in parts.header_values(name) {
        if found > 0 {
            if profile.duplicate_headers == DuplicateHeaders::Reject {
                return Err(ProtoError::DuplicateHeader(name.to_owned()));
            }
            out.push(',');
        }
        found += 1;
        let start = out.len();
        match profile.obs_fold {
            ObsFold::JoinLinesWithComma if value.contains('\n') => {
                for (i, line) in value.split('\n').enumerate() {
                    let line = if i > 0 {
                        line.strip_prefix([' ', '\t'])
                            .ok_or_else(|| ProtoError::InvalidHeaderValue(name.to_owned()))?
                    } else {
                        line
                    };
                    let line = line.strip_suffix('\r').unwrap_or(line);
                    if i > 0 {
                        out.push(',');
                    }
                    push_line(profile, name, line, out)?;
                }
            }
            _ => push_line(profile, name, value, out)?,
        }
        if lowercase {
            out[start..].make_ascii_lowercase();
        }
    }
    if found == 0 {
        return Err(ProtoError::SignedHeaderAbsent(name.to_owned()));
    }
    Ok(())
}

/// One line of a header value: control characters refused, trimmed, and collapsed when the
/// profile says so.
fn push_line(
    profile: &Profile,
    name: &str,
    line: &str,
    out: &mut String,
) -> Result<(), ProtoError> {
    if line.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(ProtoError::InvalidHeaderValue(name.to_owned()));
    }
    let trimmed = line.trim_matches([' ', '\t']);
    // The common value has nothing to collapse: copy it whole.
    if !profile.collapse_header_whitespace || (!trimmed.contains('\t') && !trimmed.contains("  ")) {
        out.push_str(trimmed);
        return Ok(());
    }
    let mut previous_space = false;
    for c in trimmed.chars() {
        let is_space = c == ' ' || c == '\t';
        if !(is_space && previous_space) {
            out.push(if is_space { ' ' } else { c });
        }
        previous_space = is_space;
    }
    Ok(())
}
