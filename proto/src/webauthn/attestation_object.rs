//! The attestation object of a registration (W3C WebAuthn L3 §6.5): a CBOR map `{"fmt",
//! "attStmt", "authData"}`. Parsed here; the verifier checks the statement against its roots.

use ciborium::Value;

use super::authenticator_data::AuthenticatorData;
use super::cose_key::{encode_cbor, map_entries, parse_cbor};
use super::error::WebAuthnError;

/// Longest attestation object accepted (room for a certificate chain of a few KiB).
pub const MAX_ATTESTATION_OBJECT_LEN: usize = 16 * 1024;
/// Most certificates in an `x5c` chain.
const MAX_X5C: usize = 4;

/// The attestation statement, by format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationStatement {
    /// `none`: no statement (`attStmt` is an empty map).
    None,
    /// `packed` (W3C WebAuthn L3 §8.2): ES256 signature over `authData ‖ clientDataHash`, by the
    /// leaf of `x5c` (full attestation) or by the credential key itself (self attestation, `x5c`
    /// empty).
    Packed {
        /// COSE algorithm (only ES256 is accepted by the verifier).
        alg: i64,
        /// DER signature.
        sig: Vec<u8>,
        /// DER certificates, leaf first; empty for self attestation.
        x5c: Vec<Vec<u8>>,
    },
    /// Any other format (`tpm`, `android-key`, `fido-u2f`, `apple`, …): not verified, so the
    /// registration cannot rank above `fido2-unattested`.
    Other(String),
}

/// A parsed attestation object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationObject {
    /// The statement.
    pub statement: AttestationStatement,
    /// The raw authenticator data (the statement's signature covers these bytes).
    pub auth_data_bytes: Vec<u8>,
    /// The parsed authenticator data (AT must be set).
    pub auth_data: AuthenticatorData,
}

fn text(value: &Value) -> Option<&str> {
    value.as_text()
}

impl AttestationObject {
    /// Parses an attestation object strictly: one CBOR map with exactly `fmt`, `attStmt`,
    /// `authData`; authenticator data with attested credential data.
    pub fn parse(bytes: &[u8]) -> Result<Self, WebAuthnError> {
        use WebAuthnError::Malformed as Bad;
        if bytes.len() > MAX_ATTESTATION_OBJECT_LEN {
            return Err(WebAuthnError::TooLarge {
                what: "attestation object",
                limit: MAX_ATTESTATION_OBJECT_LEN,
            });
        }
        let value = parse_cbor(bytes)?;
        let entries = map_entries(&value)?;
        if entries.len() != 3 {
            return Err(Bad("attestation object must have fmt, attStmt, authData"));
        }
        let field = |name: &str| {
            entries
                .iter()
                .find(|(key, _)| text(key) == Some(name))
                .map(|(_, value)| value)
                .ok_or(Bad("attestation object must have fmt, attStmt, authData"))
        };
        let fmt = text(field("fmt")?).ok_or(Bad("fmt is not text"))?;
        let statement_value = field("attStmt")?;
        let statement_entries = map_entries(statement_value)?;
        let auth_data_bytes = field("authData")?
            .as_bytes()
            .ok_or(Bad("authData is not a byte string"))?
            .clone();
        let statement = match fmt {
            "none" if statement_entries.is_empty() => AttestationStatement::None,
            "none" => return Err(Bad("none attestation with a statement")),
            "packed" => parse_packed(statement_entries)?,
            other => AttestationStatement::Other(other.to_owned()),
        };
        let auth_data = AuthenticatorData::parse(&auth_data_bytes)?;
        if auth_data.attested_credential.is_none() {
            return Err(Bad("registration without attested credential data"));
        }
        Ok(Self {
            statement,
            auth_data_bytes,
            auth_data,
        })
    }

    /// Encodes the object (tests and vectors build registrations with it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let (fmt, statement) = match &self.statement {
            AttestationStatement::None => ("none".to_owned(), Value::Map(Vec::new())),
            AttestationStatement::Packed { alg, sig, x5c } => {
                let mut entries = vec![
                    (Value::from("alg"), Value::from(*alg)),
                    (Value::from("sig"), Value::Bytes(sig.clone())),
                ];
                if !x5c.is_empty() {
                    entries.push((
                        Value::from("x5c"),
                        Value::Array(x5c.iter().cloned().map(Value::Bytes).collect()),
                    ));
                }
                ("packed".to_owned(), Value::Map(entries))
            }
            AttestationStatement::Other(fmt) => (fmt.clone(), Value::Map(Vec::new())),
        };
        encode_cbor(&Value::Map(vec![
            (Value::from("fmt"), Value::from(fmt)),
            (Value::from("attStmt"), statement),
            (
                Value::from("authData"),
                Value::Bytes(self.auth_data_bytes.clone()),
            ),
        ]))
    }
}

fn parse_packed(entries: &[(Value, Value)]) -> Result<AttestationStatement, WebAuthnError> {
    use WebAuthnError::Malformed as Bad;
    let mut alg = None;
    let mut sig = None;
    let mut x5c = Vec::new();
    for (key, value) in entries {
        match text(key) {
            Some("alg") => {
                alg = value
                    .as_integer()
                    .and_then(|n| i64::try_from(n).ok())
                    .map(Some)
                    .ok_or(Bad("packed alg is not an integer"))?;
            }
            Some("sig") => {
                sig = Some(
                    value
                        .as_bytes()
                        .ok_or(Bad("packed sig is not bytes"))?
                        .clone(),
                );
            }
            Some("x5c") => {
                let certificates = value.as_array().ok_or(Bad("x5c is not an array"))?;
                if certificates.is_empty() || certificates.len() > MAX_X5C {
                    return Err(Bad("x5c must hold 1 to 4 certificates"));
                }
                for certificate in certificates {
                    x5c.push(
                        certificate
                            .as_bytes()
                            .ok_or(Bad("x5c entry is not bytes"))?
                            .clone(),
                    );
                }
            }
            // ECDAA was removed from the specification; anything else is unknown.
            _ => return Err(Bad("unknown member in a packed statement")),
        }
    }
    Ok(AttestationStatement::Packed {
        alg: alg.ok_or(Bad("packed statement without alg"))?,
        sig: sig.ok_or(Bad("packed statement without sig"))?,
        x5c,
    })
}
