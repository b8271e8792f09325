//! Signing profiles. The canonicalization is the same SigV4 algorithm for every profile; a profile
//! names the algorithm, the headers that carry date, body hash and nonce, the scope terminator and
//! the few rules where HWS1 is deliberately stricter than AWS.

/// What to do when a signed header appears more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateHeaders {
    /// Join the values with `,` in order of appearance (SigV4).
    Join,
    /// Refuse the request: two parties may disagree on which value counts (HWS1).
    Reject,
}

/// How a header value continued on following lines (obsolete line folding, RFC 9112 §5.2) is
/// treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsFold {
    /// Refuse the value, like any other control character (HWS1).
    Refuse,
    /// Trim each line and join the lines with `,`, as the AWS signers do (AWS profile only).
    JoinLinesWithComma,
}

/// A signing profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// First token of the `Authorization` header and first line of the string to sign.
    pub algorithm: &'static str,
    /// Lower-case name of the signed date header.
    pub date_header: &'static str,
    /// Lower-case name of the body hash header.
    pub content_sha256_header: &'static str,
    /// Lower-case name of the nonce header, if the profile has one.
    pub nonce_header: Option<&'static str>,
    /// Last component of the credential scope.
    pub scope_terminator: &'static str,
    /// Prefix of presigned-URL query parameters (`X-Hws-`).
    pub query_prefix: &'static str,
    /// Apply SigV4 path normalization (remove `.`/`..` segments, collapse empty segments).
    pub normalize_path: bool,
    /// Treatment of repeated signed headers.
    pub duplicate_headers: DuplicateHeaders,
    /// Query parsing as `application/x-www-form-urlencoded` reads it: `+` is a space (canonical
    /// `%20`), distinct from `%2B`. Without it `+` is a literal plus (SigV4).
    pub query_plus_is_space: bool,
    /// Refuse a query that names a parameter twice (after decoding), instead of sorting the
    /// copies (SigV4): frameworks keep the first or the last copy, and may disagree.
    pub reject_repeated_query_names: bool,
    /// Collapse runs of spaces and tabs inside signed header values to one space (SigV4). Without
    /// it the value is signed exactly as sent, only trimmed at both ends.
    pub collapse_header_whitespace: bool,
    /// Lower-case the value of the signed `host` header (host names are case-insensitive).
    pub lowercase_host: bool,
    /// Treatment of folded header values.
    pub obs_fold: ObsFold,
    /// Whether the body-hash header is always added and signed in header mode.
    pub sign_body_hash_header: bool,
    /// Headers that must always be in SignedHeaders (lower case).
    pub always_signed: &'static [&'static str],
    /// Headers that must be in SignedHeaders whenever the request carries them.
    pub signed_when_present: &'static [&'static str],
}

/// Name of the `Authorization`-scheme algorithm of HWS1.
pub const HWS1_ALGORITHM: &str = "HWS1-ECDSA-P256-SHA256";
/// HWS1 date header.
pub const HWS1_DATE_HEADER: &str = "x-hws-date";
/// HWS1 body hash header.
pub const HWS1_CONTENT_SHA256_HEADER: &str = "x-hws-content-sha256";
/// HWS1 nonce header.
pub const HWS1_NONCE_HEADER: &str = "x-hws-nonce";
/// HWS1 delegation statement header (delegated session keys).
pub const HWS1_DELEGATION_HEADER: &str = "x-hws-delegation";

/// The hwsign profile.
pub const HWS1: Profile = Profile {
    algorithm: HWS1_ALGORITHM,
    date_header: HWS1_DATE_HEADER,
    content_sha256_header: HWS1_CONTENT_SHA256_HEADER,
    nonce_header: Some(HWS1_NONCE_HEADER),
    scope_terminator: "hws1_request",
    query_prefix: "X-Hws-",
    // HWS1 signs the path exactly as sent (only the percent-encoding is normalized): a server
    // that routes `//admin` differently from `/admin` must not accept one for the other.
    normalize_path: false,
    duplicate_headers: DuplicateHeaders::Reject,
    // What is signed must be what the application reads: a form-urlencoded parser reads `+` as a
    // space and keeps one copy of a repeated name, and a proxy can change whitespace inside a
    // header value. See docs/PROTOCOL.md §2.
    query_plus_is_space: true,
    reject_repeated_query_names: true,
    collapse_header_whitespace: false,
    lowercase_host: true,
    obs_fold: ObsFold::Refuse,
    sign_body_hash_header: true,
    always_signed: &[
        "host",
        HWS1_CONTENT_SHA256_HEADER,
        HWS1_DATE_HEADER,
        HWS1_NONCE_HEADER,
    ],
    signed_when_present: &["content-type", HWS1_DELEGATION_HEADER],
};

/// The AWS SigV4a profile, used to prove the canonicalizer against the AWS test suite.
pub const fn aws_sigv4a(normalize_path: bool) -> Profile {
    Profile {
        algorithm: "AWS4-ECDSA-P256-SHA256",
        date_header: "x-amz-date",
        content_sha256_header: "x-amz-content-sha256",
        nonce_header: None,
        scope_terminator: "aws4_request",
        query_prefix: "X-Amz-",
        normalize_path,
        duplicate_headers: DuplicateHeaders::Join,
        query_plus_is_space: false,
        reject_repeated_query_names: false,
        collapse_header_whitespace: true,
        lowercase_host: false,
        obs_fold: ObsFold::JoinLinesWithComma,
        sign_body_hash_header: false,
        always_signed: &["host", "x-amz-date"],
        signed_when_present: &[],
    }
}

/// `x-amz-region-set` → `X-Amz-Region-Set`: the presigned-URL spelling of a header name.
pub fn query_param_name(header_name: &str) -> String {
    let mut out = String::with_capacity(header_name.len());
    let mut upper = true;
    for c in header_name.chars() {
        if c == '-' {
            out.push('-');
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
