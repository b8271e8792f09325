//! `clientDataJSON` (W3C WebAuthn L3 §5.8.1): built by the agent, checked by the verifier.
//!
//! Parsed as JSON, never by substring or template: browsers add members (Chromium adds
//! `other_keys_can_be_added_here`), so unknown members are allowed, but a repeated member name is
//! refused (two JSON readers may keep different copies).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::error::WebAuthnError;

/// `type` of an assertion.
pub const TYPE_GET: &str = "webauthn.get";
/// `type` of a registration.
pub const TYPE_CREATE: &str = "webauthn.create";

/// The members of `clientDataJSON` the checks read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientData {
    /// `type`.
    pub type_: String,
    /// `challenge` (base64url, no padding).
    pub challenge: String,
    /// `origin` (`https://example.com`, `http://localhost:8080`).
    pub origin: String,
    /// `crossOrigin` (absent = false).
    pub cross_origin: bool,
    /// `topOrigin`, present only for cross-origin frames.
    pub top_origin: Option<String>,
}

/// Builds the client data a non-browser client (the agent) sends: `{"type":"webauthn.get",
/// "challenge":"…","origin":"…","crossOrigin":false}` with JSON string escaping.
pub fn client_data_json(type_: &str, challenge: &str, origin: &str) -> String {
    let quote = |text: &str| Value::String(text.to_owned()).to_string();
    format!(
        "{{\"type\":{},\"challenge\":{},\"origin\":{},\"crossOrigin\":false}}",
        quote(type_),
        quote(challenge),
        quote(origin)
    )
}

/// A JSON object whose member names are all distinct.
struct UniqueMembers(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for UniqueMembers {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = UniqueMembers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMembers, A::Error> {
                let mut members: Vec<(String, Value)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    if members.iter().any(|(seen, _)| *seen == name) {
                        return Err(de::Error::custom("repeated member"));
                    }
                    if members.len() >= 32 {
                        return Err(de::Error::custom("too many members"));
                    }
                    members.push((name, value));
                }
                Ok(UniqueMembers(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

impl ClientData {
    /// Parses `clientDataJSON` bytes (UTF-8 JSON object, members unique; `type`, `challenge`,
    /// `origin` strings; `crossOrigin` a boolean when present).
    pub fn parse(bytes: &[u8]) -> Result<Self, WebAuthnError> {
        use WebAuthnError::Malformed as Bad;
        let UniqueMembers(members) =
            serde_json::from_slice(bytes).map_err(|_| Bad("client data is not a JSON object"))?;
        let member = |name: &str| {
            members
                .iter()
                .find(|(member, _)| member == name)
                .map(|(_, value)| value)
        };
        let string = |name: &'static str| match member(name) {
            Some(Value::String(text)) => Ok(text.clone()),
            _ => Err(Bad(name)),
        };
        let cross_origin = match member("crossOrigin") {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => return Err(Bad("crossOrigin is not a boolean")),
        };
        let top_origin = match member("topOrigin") {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => return Err(Bad("topOrigin is not a string")),
        };
        Ok(Self {
            type_: string("type")?,
            challenge: string("challenge")?,
            origin: string("origin")?,
            cross_origin,
            top_origin,
        })
    }

    /// The checks of W3C WebAuthn L3 §7.2 steps 11–14 (and §7.1 for registration): type,
    /// challenge (constant time), origin in `origins` (exact match), not cross-origin.
    pub fn check(
        &self,
        expected_type: &str,
        expected_challenge: &str,
        origins: &[String],
    ) -> Result<(), WebAuthnError> {
        if self.type_ != expected_type {
            return Err(WebAuthnError::WrongType(self.type_.clone()));
        }
        let same: bool = self
            .challenge
            .as_bytes()
            .ct_eq(expected_challenge.as_bytes())
            .into();
        if !same {
            return Err(WebAuthnError::ChallengeMismatch);
        }
        if !origins.contains(&self.origin) {
            return Err(WebAuthnError::Origin(self.origin.clone()));
        }
        if self.cross_origin || self.top_origin.is_some() {
            return Err(WebAuthnError::CrossOrigin);
        }
        Ok(())
    }
}
