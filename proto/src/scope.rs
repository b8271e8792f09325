//! The credential scope (`<yyyymmdd>/<audience>/<terminator>`), the audience it names, and the
//! one parser of a `Credential` value (`<key>/<scope>`), shared by the `Authorization` header and
//! presigned URLs.

use std::fmt;

use crate::error::ProtoError;
use crate::limits::MAX_AUDIENCE_LEN;
use crate::time::SigningTime;

/// Checks an audience (the API's name, like a SigV4 service): 1–64 characters of `[a-z0-9._-]`.
pub fn check_audience(audience: &str) -> Result<(), ProtoError> {
    if audience.is_empty()
        || audience.len() > MAX_AUDIENCE_LEN
        || !audience.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
    {
        return Err(ProtoError::InvalidAudience);
    }
    Ok(())
}

/// Checks a credential: 1–128 printable ASCII characters, no `/`, `,`, `;`, `=` or space.
pub fn check_credential(credential: &str) -> Result<(), ProtoError> {
    if credential.is_empty()
        || credential.len() > 128
        || !credential
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b',' | b';' | b'='))
    {
        return Err(ProtoError::InvalidKeyId);
    }
    Ok(())
}

/// The credential scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `YYYYMMDD`.
    pub date: String,
    /// The audience (SigV4: service).
    pub audience: String,
    /// The profile's terminator (`hws1_request`).
    pub terminator: String,
}

impl Scope {
    /// The scope for a request signed at `time`.
    pub fn new(time: SigningTime, audience: &str, terminator: &str) -> Self {
        Self {
            date: time.date_stamp(),
            audience: audience.to_owned(),
            terminator: terminator.to_owned(),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.date, self.audience, self.terminator)
    }
}

/// Why a `Credential` value was refused by [`parse_credential`]; the caller wraps the message in
/// its own error (`MalformedAuthorization`, `MalformedPresign`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialError {
    /// Not four `/`-separated parts.
    Shape,
    /// The key id part is not a credential ([`check_credential`]).
    KeyId,
    /// The date is not eight digits.
    Date,
    /// The audience fails [`check_audience`].
    Audience,
    /// The terminator is not the profile's.
    Terminator,
}

impl CredentialError {
    /// What was wrong, for the refusal.
    pub fn message(self) -> &'static str {
        match self {
            Self::Shape => "Credential must be <key>/<date>/<audience>/<terminator>",
            Self::KeyId => "invalid key id in Credential",
            Self::Date => "invalid date in Credential",
            Self::Audience => "invalid audience in Credential",
            Self::Terminator => "wrong scope terminator",
        }
    }
}

/// Splits and checks a `Credential` value, `<key>/<yyyymmdd>/<audience>/<terminator>`, where the
/// terminator must be `terminator` (the profile's). Returns the key part and the scope.
pub fn parse_credential<'a>(
    value: &'a str,
    terminator: &str,
) -> Result<(&'a str, Scope), CredentialError> {
    let mut parts = value.split('/');
    let (Some(credential), Some(date), Some(audience), Some(found), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(CredentialError::Shape);
    };
    check_credential(credential).map_err(|_| CredentialError::KeyId)?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CredentialError::Date);
    }
    check_audience(audience).map_err(|_| CredentialError::Audience)?;
    if found != terminator {
        return Err(CredentialError::Terminator);
    }
    Ok((
        credential,
        Scope {
            date: date.to_owned(),
            audience: audience.to_owned(),
            terminator: found.to_owned(),
        },
    ))
}
