//! The decision hook: one record per authentication decision, from the verify path.

use std::net::IpAddr;

use hwsign_proto::{HWS1, RequestParts};

use crate::audit::AuditEvent;
use crate::rejection::Rejection;
use crate::verify::VerifiedPrincipal;

/// What the verify path knows about a request besides the decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecisionContext<'a> {
    /// The method.
    pub method: &'a str,
    /// The path (the route), without the query.
    pub path: &'a str,
    /// The query, for a presigned URL's credential.
    pub query: &'a str,
    /// The `Authorization` header, for the key a refused request claimed.
    pub authorization: Option<&'a str>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// The TCP peer (the verifier's own view; not `X-Forwarded-For`).
    pub source: Option<IpAddr>,
}

impl<'a> DecisionContext<'a> {
    /// The context a request's parts give (no source address).
    pub fn from_parts(parts: &RequestParts<'a>) -> Self {
        Self {
            method: parts.method,
            path: parts.path,
            query: parts.query,
            authorization: parts.header_values("authorization").next(),
            user_agent: parts.header_values("user-agent").next(),
            source: None,
        }
    }
}

/// The record of a decision.
pub(crate) fn event(
    context: &DecisionContext<'_>,
    result: &Result<VerifiedPrincipal, Rejection>,
) -> AuditEvent {
    let source = context.source.map(|ip| ip.to_string());
    let base = AuditEvent::new("decision")
        .with("method", Some(context.method))
        .with("route", Some(context.path))
        .with("source", source.as_deref())
        .with("user_agent", context.user_agent);
    match result {
        Ok(principal) => base
            .with("outcome", Some("accepted"))
            .with("code", Some("ok"))
            .with("key", Some(&principal.key_id))
            .with("device", principal.device_id.as_deref())
            .with("user", principal.user_id.as_deref())
            .with("level", Some(principal.level.as_str()))
            .with_value("delegated", principal.delegated),
        Err(rejection) => base
            .with("outcome", Some("refused"))
            .with("code", Some(rejection.code().as_str()))
            .with("detail", Some(&rejection.detail()))
            .with("claimed_key", claimed_key(context)),
    }
}

/// The key id a request names (unauthenticated: a refused request may name anyone's key).
fn claimed_key<'a>(context: &DecisionContext<'a>) -> Option<&'a str> {
    let from_header = context.authorization.and_then(|value| {
        let start = value.find("Credential=")? + "Credential=".len();
        Some(&value[start..])
    });
    let from_query = || {
        context.query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let suffix = name.strip_prefix(HWS1.query_prefix)?;
            suffix.eq_ignore_ascii_case("Credential").then_some(value)
        })
    };
    let credential = from_header.or_else(from_query)?;
    let end = credential
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .unwrap_or(credential.len())
        .min(128);
    (end > 0).then(|| &credential[..end])
}
