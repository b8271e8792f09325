//! Input types shared by the fuzz targets, and the encoder that writes their seeds.
//!
//! [`RequestInput`] implements [`Arbitrary`] by hand with a plain length-prefixed layout instead
//! of `#[derive(Arbitrary)]`: the derived layout reads lengths from the end of the buffer in a way
//! that depends on the remaining size, so no seed could be written for it by hand. With this
//! layout [`RequestInput::to_bytes`] produces seeds that decode back to exactly the request they
//! describe, and libFuzzer still mutates every field independently.
#![forbid(unsafe_code)]

use arbitrary::{Arbitrary, Result, Unstructured};

/// Longest string field read from fuzz input; longer declared lengths are cut to what is left.
const MAX_FIELD_LEN: usize = u16::MAX as usize;

/// A request to canonicalize, sign and verify, plus everything the signer needs.
///
/// Layout (big-endian integers; a string is a u16 length then that many bytes, cut short when
/// the input ends, decoded lossily as UTF-8):
///
/// | field | encoding |
/// | --- | --- |
/// | `selector` | u8: bits 0–1 profile (0, 3 HWS1; 1 AWS normalized; 2 AWS raw), bit 2 presign with `UNSIGNED-PAYLOAD` |
/// | `time` | u32 seconds since the epoch |
/// | `nonce` | 16 bytes |
/// | `body_sha256` | 32 bytes |
/// | `presign_expires` | u32 |
/// | `signature`, `credential`, `audience`, `method`, `path`, `query` | strings |
/// | `headers` | u8 count, then name and value strings |
/// | `extra_signed` | u8 count, then strings |
/// | `delegation` | u8 (odd: present), then a string when present |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInput {
    /// Profile and payload choices, see the layout.
    pub selector: u8,
    /// Signing time.
    pub time: u32,
    /// Nonce bytes.
    pub nonce: [u8; 16],
    /// Body digest (hex-encoded when used).
    pub body_sha256: [u8; 32],
    /// Presigned-URL lifetime in seconds.
    pub presign_expires: u32,
    /// DER signature bytes to put in the `Authorization` header (not checked by the parsers).
    pub signature: Vec<u8>,
    /// Key id.
    pub credential: String,
    /// Audience.
    pub audience: String,
    /// Method.
    pub method: String,
    /// Path as sent.
    pub path: String,
    /// Raw query without `?`.
    pub query: String,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// Header names the caller asks to sign beyond the profile's.
    pub extra_signed: Vec<String>,
    /// An `X-Hws-Delegation` value the signer adds.
    pub delegation: Option<String>,
}

/// The profile a [`RequestInput`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileChoice {
    /// HWS1.
    Hws1,
    /// AWS SigV4a with path normalization.
    AwsNormalized,
    /// AWS SigV4a without path normalization.
    AwsRaw,
}

impl RequestInput {
    /// The selected profile.
    pub fn profile_choice(&self) -> ProfileChoice {
        match self.selector & 0b11 {
            1 => ProfileChoice::AwsNormalized,
            2 => ProfileChoice::AwsRaw,
            _ => ProfileChoice::Hws1,
        }
    }

    /// Whether the presigned URL uses `UNSIGNED-PAYLOAD` rather than the body digest.
    pub fn presign_unsigned_payload(&self) -> bool {
        self.selector & 0b100 != 0
    }

    /// The encoding [`Arbitrary::arbitrary`] reads back: what seed files contain.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.selector];
        out.extend_from_slice(&self.time.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.body_sha256);
        out.extend_from_slice(&self.presign_expires.to_be_bytes());
        put_bytes(&mut out, &self.signature);
        for text in [
            &self.credential,
            &self.audience,
            &self.method,
            &self.path,
            &self.query,
        ] {
            put_bytes(&mut out, text.as_bytes());
        }
        put_count(&mut out, self.headers.len());
        for (name, value) in &self.headers {
            put_bytes(&mut out, name.as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_count(&mut out, self.extra_signed.len());
        for name in &self.extra_signed {
            put_bytes(&mut out, name.as_bytes());
        }
        match &self.delegation {
            Some(value) => {
                out.push(1);
                put_bytes(&mut out, value.as_bytes());
            }
            None => out.push(0),
        }
        out
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(MAX_FIELD_LEN);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

fn put_count(out: &mut Vec<u8>, count: usize) {
    out.push(u8::try_from(count).unwrap_or(u8::MAX));
}

fn take_array<const N: usize>(u: &mut Unstructured<'_>) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    u.fill_buffer(&mut out)?;
    Ok(out)
}

fn take_bytes<'a>(u: &mut Unstructured<'a>) -> Result<&'a [u8]> {
    let declared = usize::from(u16::from_be_bytes(take_array(u)?));
    u.bytes(declared.min(u.len()))
}

fn take_string(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(String::from_utf8_lossy(take_bytes(u)?).into_owned())
}

impl<'a> Arbitrary<'a> for RequestInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let selector = take_array::<1>(u)?[0];
        let time = u32::from_be_bytes(take_array(u)?);
        let nonce = take_array(u)?;
        let body_sha256 = take_array(u)?;
        let presign_expires = u32::from_be_bytes(take_array(u)?);
        let signature = take_bytes(u)?.to_vec();
        let credential = take_string(u)?;
        let audience = take_string(u)?;
        let method = take_string(u)?;
        let path = take_string(u)?;
        let query = take_string(u)?;
        let header_count = take_array::<1>(u)?[0];
        let mut headers = Vec::with_capacity(usize::from(header_count));
        for _ in 0..header_count {
            headers.push((take_string(u)?, take_string(u)?));
        }
        let extra_count = take_array::<1>(u)?[0];
        let mut extra_signed = Vec::with_capacity(usize::from(extra_count));
        for _ in 0..extra_count {
            extra_signed.push(take_string(u)?);
        }
        let delegation = if take_array::<1>(u)?[0] & 1 == 1 {
            Some(take_string(u)?)
        } else {
            None
        };
        Ok(Self {
            selector,
            time,
            nonce,
            body_sha256,
            presign_expires,
            signature,
            credential,
            audience,
            method,
            path,
            query,
            headers,
            extra_signed,
            delegation,
        })
    }
}

/// Splits `bytes` into TPM2B-prefixed pieces (u16 size then contents) and the rest: the layout
/// of the `tpm_structures` target's "bundle" inputs (a public area, a message, a signature).
pub fn split_tpm2b(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let size = usize::from(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]));
    let body = bytes.get(2..2 + size)?;
    Some((body, bytes.get(2 + size..)?))
}
