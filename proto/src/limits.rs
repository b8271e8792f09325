//! Size bounds shared by signer and verifier. Every field that crosses a trust boundary is bounded
//! here, once, so both sides refuse the same inputs.

/// Longest method accepted (`PROPPATCH` fits; nonsense does not).
pub const MAX_METHOD_LEN: usize = 32;
/// Longest path, percent-encoded.
pub const MAX_PATH_LEN: usize = 8 * 1024;
/// Longest raw query string.
pub const MAX_QUERY_LEN: usize = 8 * 1024;
/// Most query parameters.
pub const MAX_QUERY_PARAMS: usize = 256;
/// Most header fields in a request that is signed or verified.
pub const MAX_HEADERS: usize = 128;
/// Longest header name.
pub const MAX_HEADER_NAME_LEN: usize = 256;
/// Longest header value.
pub const MAX_HEADER_VALUE_LEN: usize = 8 * 1024;
/// Longest `Authorization` header value.
pub const MAX_AUTHORIZATION_LEN: usize = 4 * 1024;
/// Most headers named in SignedHeaders.
pub const MAX_SIGNED_HEADERS: usize = 64;
/// Longest audience.
pub const MAX_AUDIENCE_LEN: usize = 64;
/// Longest authority (`host[:port]`).
pub const MAX_AUTHORITY_LEN: usize = 255 + 6;
/// Longest lifetime of a presigned URL (7 days), as in SigV4.
pub const MAX_PRESIGN_EXPIRES_SECS: u64 = 7 * 24 * 3600;
/// Longest DER ECDSA P-256 signature (72 bytes) with room to spare.
pub const MAX_SIGNATURE_LEN: usize = 80;
