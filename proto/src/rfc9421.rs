//! RFC 9421 (HTTP Message Signatures) building blocks, without I/O or keys: the subset of RFC 8941
//! structured fields that `Signature-Input` and `Signature` use, and the signature base of §2.5.
//!
//! hwsign's RFC 9421 encoding (issue 16) expresses the same signature material as HWS1 — method,
//! authority, path, query, body digest (`Content-Digest`, RFC 9530), nonce, creation time, key id,
//! audience — with algorithm `ecdsa-p256-sha256`. This module is the wire layer both the signer
//! and the verifier use; it is checked against RFC 9421 Appendix B (the published ECDSA P-256
//! example verifies with the published key).
//!
//! Scope, refused with a specific error rather than guessed: component identifiers with
//! parameters (`;sf`, `;key`, `;bs`, `;req`, `;name`), decimal and token parameter values, and
//! more than [`MAX_COMPONENTS`] components or [`MAX_LABELS`] labels.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

/// Most components one signature may cover.
pub const MAX_COMPONENTS: usize = 32;
/// Most labels (signatures) in one `Signature-Input` or `Signature` field.
pub const MAX_LABELS: usize = 8;
/// Longest field value parsed.
pub const MAX_FIELD_LEN: usize = 8 * 1024;

/// Why a `Signature-Input` or `Signature` field was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Rfc9421Error {
    /// Not RFC 8941 syntax at `offset`.
    #[error("structured field syntax error at byte {offset}: {what}")]
    Syntax {
        /// Byte offset in the field value.
        offset: usize,
        /// What was expected.
        what: &'static str,
    },
    /// Syntax this implementation does not accept (see the module documentation).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A label appears twice.
    #[error("label {0:?} appears twice")]
    DuplicateLabel(String),
    /// A component appears twice in one signature.
    #[error("component {0:?} is covered twice")]
    DuplicateComponent(String),
    /// A parameter appears twice.
    #[error("parameter {0:?} appears twice")]
    DuplicateParameter(String),
    /// Too many labels, components or bytes.
    #[error("{0} over its bound")]
    TooLarge(&'static str),
    /// A covered component the message does not have.
    #[error("covered component {0:?} is not in the message")]
    MissingComponent(String),
    /// A header value that cannot appear in a signature base (control characters).
    #[error("field {0:?} has a value that cannot be signed")]
    BadFieldValue(String),
}

/// A parameter value (the bare items this profile uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// An integer (`created=1618884473`).
    Integer(i64),
    /// A string (`keyid="test-key"`).
    String(String),
    /// A boolean (`?1`, or a bare key).
    Boolean(bool),
}

impl ParamValue {
    fn serialize(&self, out: &mut String) {
        match self {
            Self::Integer(value) => {
                out.push('=');
                out.push_str(&value.to_string());
            }
            Self::String(value) => {
                out.push_str("=\"");
                for c in value.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            Self::Boolean(true) => {}
            Self::Boolean(false) => out.push_str("=?0"),
        }
    }
}

/// One signature's covered components and parameters, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureParams {
    /// Component identifiers (`@method`, `content-digest`, …), lower case.
    pub components: Vec<String>,
    /// Parameters in the order received.
    pub params: Vec<(String, ParamValue)>,
}

impl SignatureParams {
    /// The value of a parameter.
    pub fn param(&self, name: &str) -> Option<&ParamValue> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// An integer parameter.
    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.param(name)? {
            ParamValue::Integer(value) => Some(*value),
            _ => None,
        }
    }

    /// A string parameter.
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.param(name)? {
            ParamValue::String(value) => Some(value),
            _ => None,
        }
    }

    /// The RFC 8941 serialization of the inner list: the `@signature-params` value, and what a
    /// signer puts after `label=` in `Signature-Input`.
    pub fn serialize(&self) -> String {
        let mut out = String::from("(");
        for (index, component) in self.components.iter().enumerate() {
            if index > 0 {
                out.push(' ');
            }
            out.push('"');
            out.push_str(component);
            out.push('"');
        }
        out.push(')');
        for (key, value) in &self.params {
            out.push(';');
            out.push_str(key);
            value.serialize(&mut out);
        }
        out
    }
}

/// Parses a `Signature-Input` field value: label → covered components and parameters.
pub fn parse_signature_input(value: &str) -> Result<Vec<(String, SignatureParams)>, Rfc9421Error> {
    let mut parser = Parser::new(value)?;
    let mut out: Vec<(String, SignatureParams)> = Vec::new();
    parser.dictionary(|parser, label| {
        parser.expect(b'=', "`=` and an inner list")?;
        let params = parser.inner_list()?;
        if out.iter().any(|(l, _)| *l == label) {
            return Err(Rfc9421Error::DuplicateLabel(label));
        }
        if out.len() >= MAX_LABELS {
            return Err(Rfc9421Error::TooLarge("labels"));
        }
        out.push((label, params));
        Ok(())
    })?;
    Ok(out)
}

/// Parses a `Signature` field value: label → signature bytes.
pub fn parse_signature(value: &str) -> Result<Vec<(String, Vec<u8>)>, Rfc9421Error> {
    let mut parser = Parser::new(value)?;
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    parser.dictionary(|parser, label| {
        parser.expect(b'=', "`=` and a byte sequence")?;
        let bytes = parser.byte_sequence()?;
        if parser.peek() == Some(b';') {
            return Err(Rfc9421Error::Unsupported("parameters on a signature"));
        }
        if out.iter().any(|(l, _)| *l == label) {
            return Err(Rfc9421Error::DuplicateLabel(label));
        }
        if out.len() >= MAX_LABELS {
            return Err(Rfc9421Error::TooLarge("labels"));
        }
        out.push((label, bytes));
        Ok(())
    })?;
    Ok(out)
}

/// Serializes a `Signature` member: `label=:base64:`.
pub fn signature_member(label: &str, signature: &[u8]) -> String {
    format!("{label}=:{}:", STANDARD.encode(signature))
}

/// The signature base (RFC 9421 §2.5): one line per covered component, `"name": value`, then
/// `"@signature-params": <serialized params>`, lines joined by `\n` with no trailing newline.
/// `component` returns a covered component's value — for a field, its field lines combined as
/// §2.1 says (trimmed, joined by `, `) — or `None` if the message lacks it.
pub fn signature_base(
    params: &SignatureParams,
    mut component: impl FnMut(&str) -> Option<String>,
) -> Result<String, Rfc9421Error> {
    let mut base = String::new();
    for name in &params.components {
        let value = component(name).ok_or_else(|| Rfc9421Error::MissingComponent(name.clone()))?;
        if value.chars().any(|c| c.is_control()) {
            return Err(Rfc9421Error::BadFieldValue(name.clone()));
        }
        base.push('"');
        base.push_str(name);
        base.push_str("\": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&params.serialize());
    Ok(base)
}

/// Combines field lines the way §2.1 does: each value trimmed, joined by `, `.
pub fn combine_field_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut out: Option<String> = None;
    for line in lines {
        let line = line.trim_matches(|c| c == ' ' || c == '\t');
        match &mut out {
            None => out = Some(line.to_owned()),
            Some(joined) => {
                joined.push_str(", ");
                joined.push_str(line);
            }
        }
    }
    out
}

/// The `Content-Digest` value for a SHA-256 body digest: `sha-256=:base64:` (RFC 9530).
pub fn content_digest_sha256(digest: &[u8; 32]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(digest))
}

/// The SHA-256 digest a `Content-Digest` field value claims (`sha-256=:…:`), if it has exactly
/// one such member; other algorithms are ignored.
pub fn parse_content_digest_sha256(value: &str) -> Result<Option<[u8; 32]>, Rfc9421Error> {
    let mut parser = Parser::new(value)?;
    let mut found: Option<[u8; 32]> = None;
    parser.dictionary(|parser, key| {
        parser.expect(b'=', "`=` and a byte sequence")?;
        let bytes = parser.byte_sequence()?;
        if key == "sha-256" {
            let digest: [u8; 32] = bytes.try_into().map_err(|_| Rfc9421Error::Syntax {
                offset: parser.position,
                what: "a 32-byte sha-256 digest",
            })?;
            if found.replace(digest).is_some() {
                return Err(Rfc9421Error::DuplicateLabel(key));
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// A strict RFC 8941 reader over one field value.
struct Parser<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(value: &'a str) -> Result<Self, Rfc9421Error> {
        if value.len() > MAX_FIELD_LEN {
            return Err(Rfc9421Error::TooLarge("field value"));
        }
        let mut parser = Self {
            bytes: value.as_bytes(),
            position: 0,
        };
        parser.skip_sp();
        Ok(parser)
    }

    fn error(&self, what: &'static str) -> Rfc9421Error {
        Rfc9421Error::Syntax {
            offset: self.position,
            what,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), Rfc9421Error> {
        if self.peek() == Some(byte) {
            self.position += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.position += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.position += 1;
        }
    }

    /// `member *( OWS "," OWS member )`, calling `member` with each key.
    fn dictionary(
        &mut self,
        mut member: impl FnMut(&mut Self, String) -> Result<(), Rfc9421Error>,
    ) -> Result<(), Rfc9421Error> {
        loop {
            let key = self.key()?;
            member(self, key)?;
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => {
                    self.position += 1;
                    self.skip_ows();
                    if self.peek().is_none() {
                        return Err(self.error("a member after `,`"));
                    }
                }
                Some(_) => return Err(self.error("`,` or the end")),
            }
        }
    }

    fn key(&mut self) -> Result<String, Rfc9421Error> {
        let start = self.position;
        match self.peek() {
            Some(b'a'..=b'z' | b'*') => self.position += 1,
            _ => return Err(self.error("a key (lower-case letter or `*`)")),
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.position += 1;
        }
        Ok(String::from_utf8_lossy(&self.bytes[start..self.position]).into_owned())
    }

    fn inner_list(&mut self) -> Result<SignatureParams, Rfc9421Error> {
        self.expect(b'(', "`(`")?;
        let mut components: Vec<String> = Vec::new();
        loop {
            self.skip_sp();
            if self.peek() == Some(b')') {
                self.position += 1;
                break;
            }
            let component = self.string()?;
            if self.peek() == Some(b';') {
                return Err(Rfc9421Error::Unsupported("component parameters"));
            }
            if component.is_empty()
                || component
                    .bytes()
                    .any(|b| b.is_ascii_uppercase() || b == b' ')
            {
                return Err(Rfc9421Error::Unsupported(
                    "component names must be lower case without spaces",
                ));
            }
            if components.contains(&component) {
                return Err(Rfc9421Error::DuplicateComponent(component));
            }
            if components.len() >= MAX_COMPONENTS {
                return Err(Rfc9421Error::TooLarge("components"));
            }
            components.push(component);
            match self.peek() {
                Some(b' ' | b')') => {}
                _ => return Err(self.error("` ` or `)` in the inner list")),
            }
        }
        let params = self.parameters()?;
        Ok(SignatureParams { components, params })
    }

    fn parameters(&mut self) -> Result<Vec<(String, ParamValue)>, Rfc9421Error> {
        let mut params: Vec<(String, ParamValue)> = Vec::new();
        while self.peek() == Some(b';') {
            self.position += 1;
            self.skip_sp();
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.position += 1;
                self.bare_item()?
            } else {
                ParamValue::Boolean(true)
            };
            if params.iter().any(|(k, _)| *k == key) {
                return Err(Rfc9421Error::DuplicateParameter(key));
            }
            if params.len() >= MAX_COMPONENTS {
                return Err(Rfc9421Error::TooLarge("parameters"));
            }
            params.push((key, value));
        }
        Ok(params)
    }

    fn bare_item(&mut self) -> Result<ParamValue, Rfc9421Error> {
        match self.peek() {
            Some(b'"') => Ok(ParamValue::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b'?') => {
                self.position += 1;
                match self.peek() {
                    Some(b'1') => {
                        self.position += 1;
                        Ok(ParamValue::Boolean(true))
                    }
                    Some(b'0') => {
                        self.position += 1;
                        Ok(ParamValue::Boolean(false))
                    }
                    _ => Err(self.error("`?0` or `?1`")),
                }
            }
            _ => Err(Rfc9421Error::Unsupported(
                "parameter values other than integers, strings and booleans",
            )),
        }
    }

    fn integer(&mut self) -> Result<ParamValue, Rfc9421Error> {
        let start = self.position;
        if self.peek() == Some(b'-') {
            self.position += 1;
        }
        let digits = self.position;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.position += 1;
        }
        let count = self.position - digits;
        if count == 0 || count > 15 {
            return Err(self.error("an integer of 1 to 15 digits"));
        }
        if self.peek() == Some(b'.') {
            return Err(Rfc9421Error::Unsupported("decimal parameter values"));
        }
        std::str::from_utf8(&self.bytes[start..self.position])
            .ok()
            .and_then(|text| text.parse().ok())
            .map(ParamValue::Integer)
            .ok_or_else(|| self.error("an integer"))
    }

    fn string(&mut self) -> Result<String, Rfc9421Error> {
        self.expect(b'"', "a string")?;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("the closing `\"`")),
                Some(b'"') => {
                    self.position += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.position += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(char::from(c));
                            self.position += 1;
                        }
                        _ => return Err(self.error("`\\\"` or `\\\\`")),
                    }
                }
                Some(c @ 0x20..=0x7e) => {
                    out.push(char::from(c));
                    self.position += 1;
                }
                Some(_) => return Err(self.error("printable ASCII in a string")),
            }
        }
    }

    fn byte_sequence(&mut self) -> Result<Vec<u8>, Rfc9421Error> {
        self.expect(b':', "a byte sequence (`:`)")?;
        let start = self.position;
        while matches!(
            self.peek(),
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=')
        ) {
            self.position += 1;
        }
        let body = &self.bytes[start..self.position];
        self.expect(b':', "the closing `:` of a byte sequence")?;
        STANDARD
            .decode(body)
            .map_err(|_| self.error("base64 in a byte sequence"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_input_round_trips_and_refuses_what_it_does_not_support() {
        let field = r#"sig1=("@method" "@authority" "content-digest");created=1618884473;keyid="k \"1\"";alg="ecdsa-p256-sha256";flag"#;
        let parsed = parse_signature_input(field).unwrap_or_default();
        assert_eq!(parsed.len(), 1);
        let (label, params) = &parsed[0];
        assert_eq!(label, "sig1");
        assert_eq!(
            params.components,
            ["@method", "@authority", "content-digest"]
        );
        assert_eq!(params.integer("created"), Some(1_618_884_473));
        assert_eq!(params.string("keyid"), Some("k \"1\""));
        assert_eq!(params.param("flag"), Some(&ParamValue::Boolean(true)));
        assert_eq!(format!("{label}={}", params.serialize()), field);

        for (bad, why) in [
            (r#"sig1=("@method";req)"#, "parameters"),
            (r#"sig1=("@method" "@method")"#, "twice"),
            (r#"sig1=("a"), sig1=("b")"#, "twice"),
            (r#"sig1=("a");created=1.5"#, "decimal"),
            (r#"Sig1=("a")"#, "key"),
            (r#"sig1=("a"),"#, "member"),
            (r#"sig1=("A")"#, "lower case"),
            (r#"sig1=("a";created=1"#, "parameters"),
        ] {
            let error = parse_signature_input(bad).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(why)),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn content_digest_is_read_strictly() {
        let digest = [7u8; 32];
        let value = content_digest_sha256(&digest);
        assert_eq!(parse_content_digest_sha256(&value), Ok(Some(digest)));
        let both = format!("sha-512=:{}:, {value}", STANDARD.encode([1u8; 64]));
        assert_eq!(parse_content_digest_sha256(&both), Ok(Some(digest)));
        assert_eq!(
            parse_content_digest_sha256(&format!("sha-512=:{}:", STANDARD.encode([1u8; 64]))),
            Ok(None)
        );
        assert!(parse_content_digest_sha256("sha-256=:AAAA:").is_err());
        assert!(parse_content_digest_sha256(&format!("{value}, {value}")).is_err());
    }
}
