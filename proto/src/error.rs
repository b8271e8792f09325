//! Errors of the wire format. Each maps to one stable wire code (see [`ProtoError::code`]) so that
//! the agent and the verifier refuse malformed input with the same documented name.

use thiserror::Error;

/// Why a request, header or value cannot be canonicalized, parsed or checked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The method is empty, too long or not an HTTP token.
    #[error("invalid HTTP method")]
    InvalidMethod,
    /// The path is empty, does not start with `/`, or holds bytes a request target cannot.
    #[error("invalid request path")]
    InvalidPath,
    /// A `%` escape is not followed by two hex digits.
    #[error("invalid percent-encoding")]
    InvalidPercentEncoding,
    /// A header name is not an HTTP token.
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    /// A header value holds a control character (CR, LF, NUL, ...); folded headers are refused.
    #[error("invalid value for header {0:?}")]
    InvalidHeaderValue(String),
    /// A header that must appear once appears more than once.
    #[error("header {0:?} appears more than once")]
    DuplicateHeader(String),
    /// A header that must be signed is absent from the request.
    #[error("required header {0:?} is missing")]
    MissingHeader(String),
    /// A header named in SignedHeaders is not in the request.
    #[error("signed header {0:?} is not present in the request")]
    SignedHeaderAbsent(String),
    /// SignedHeaders is not the sorted, lower-case, duplicate-free list the protocol requires,
    /// or it omits a header the protocol always signs.
    #[error("invalid SignedHeaders: {0}")]
    InvalidSignedHeaders(String),
    /// The date header is not `YYYYMMDDTHHMMSSZ`.
    #[error("invalid date {0:?}")]
    InvalidDate(String),
    /// The payload hash is neither 64 lower-case hex digits nor an allowed literal.
    #[error("invalid payload hash")]
    InvalidPayloadHash,
    /// `UNSIGNED-PAYLOAD` outside a presigned URL.
    #[error("UNSIGNED-PAYLOAD is only allowed in presigned URLs")]
    UnsignedPayloadNotAllowed,
    /// The nonce is not 16 random bytes in unpadded base64url.
    #[error("invalid nonce")]
    InvalidNonce,
    /// The audience is empty, too long or holds characters outside `[a-z0-9.-]`.
    #[error("invalid audience")]
    InvalidAudience,
    /// The key id is not of the form the protocol defines.
    #[error("invalid key id")]
    InvalidKeyId,
    /// The `Authorization` header does not follow the grammar.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
    /// The presigned-URL parameters are missing, duplicated or malformed.
    #[error("malformed presigned URL: {0}")]
    MalformedPresign(&'static str),
    /// A size bound was exceeded.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// The signature bytes are not a DER ECDSA signature.
    #[error("malformed signature")]
    MalformedSignature,
    /// The public key is not an uncompressed/compressed P-256 point or SPKI.
    #[error("malformed public key")]
    MalformedPublicKey,
    /// A query parameter name appears more than once (after decoding), in a profile that refuses
    /// repeated names (HWS1): applications disagree on which copy counts.
    #[error("query parameter {0:?} appears more than once")]
    RepeatedQueryParameter(String),
    /// The authority a signer was given is not `host[:port]` (see `host::signed_host`).
    #[error("invalid authority: {0}")]
    InvalidAuthority(&'static str),
    /// The delegation statement is malformed.
    #[error("malformed delegation statement: {0}")]
    MalformedDelegation(&'static str),
    /// A request in hwsign's RFC 9421 encoding does not meet the profile
    /// ([`crate::rfc9421_request`]).
    #[error("RFC 9421 signature refused")]
    Rfc9421(#[from] crate::rfc9421_request::Rfc9421RequestError),
}

/// Displays an error and each of its causes once, joined by `: ` (`cannot read configuration
/// /etc/hwsign/agent.toml: Permission denied (os error 13)`). Error messages in the hwsign crates
/// never repeat their cause (it is `source()`), so logs and flattened messages use this to show
/// it.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            // A message of another crate may still repeat its cause: print it once.
            let part = error.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            cause = error.source();
        }
        f.write_str(&text)
    }
}
