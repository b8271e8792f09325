//! Builds the Cedar request for one HTTP request: the principal (the device), the action (the
//! method), the resource (the route and its ancestors) and the context (docs/POLICY.md).

use std::net::IpAddr;
use std::str::FromStr;

use cedar_policy::{Context, Entities, EntityUid, Request, Schema};
use hwsign_proto::api::KeyLevel;
use serde_json::{Map, Value, json};

use super::load::PolicyError;
use crate::registry::{DeviceFacts, DeviceRecord, Fact, RegisteredKey};

/// Most route ancestors given to Cedar (`/a/b/c` has `/a/b`, `/a`, `/`). A deeper path is
/// refused rather than cut: dropping an ancestor would let it escape a rule written for it.
pub const MAX_ROUTE_DEPTH: usize = 64;

/// Methods with an action of their own; any other is `Action::"OTHER"`.
const METHODS: [&str; 7] = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"];

/// What a policy decision is made on: who signed, what they asked for, and what the verifier
/// knows about the device.
#[derive(Debug, Clone)]
pub struct PolicyRequest<'a> {
    /// The key that signed (for a delegated request: the device key).
    pub key: &'a RegisteredKey,
    /// The key's enrolled device, if any.
    pub device: Option<&'a DeviceRecord>,
    /// Facts kept about that device, if any.
    pub facts: Option<&'a DeviceFacts>,
    /// The HTTP method.
    pub method: &'a str,
    /// The request path as received (without the query).
    pub path: &'a str,
    /// Whether a delegated session key signed.
    pub delegated: bool,
    /// The verifier's clock, seconds since the epoch.
    pub now_unix: i64,
    /// The client's address, when the server knows it.
    pub source_ip: Option<IpAddr>,
}

impl PolicyRequest<'_> {
    /// The principal's id: the enrolled device's id, else the key id.
    pub fn device_id(&self) -> &str {
        self.key.device_id.as_deref().unwrap_or(&self.key.key_id)
    }
}

/// A request ready for the authorizer.
pub(super) struct CedarRequest {
    pub(super) request: Request,
    pub(super) entities: Entities,
}

fn level_rank(level: KeyLevel) -> i64 {
    match level {
        // FIDO2 credentials rank with software here so that a policy written before they
        // existed (`level_rank >= 1`) never admits them; policies name them by `level`.
        KeyLevel::Software | KeyLevel::Fido2Unattested | KeyLevel::Fido2 => 0,
        KeyLevel::HardwareUnattested => 1,
        KeyLevel::Tpm => 2,
    }
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let name = cedar_policy::EntityTypeName::from_str(type_name)
        .map_err(|e| PolicyError::Request(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(
        name,
        cedar_policy::EntityId::new(id),
    ))
}

fn fact<T: serde::Serialize>(fact: &Fact<T>) -> Value {
    json!({ "value": fact.value, "attested": fact.attested })
}

/// `/a/b/c` → `["/a/b", "/a", "/"]`; `/` → `[]`.
fn ancestors(path: &str) -> Vec<&str> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut out: Vec<&str> = trimmed
        .char_indices()
        .filter(|&(i, c)| c == '/' && i > 0)
        .map(|(i, _)| &trimmed[..i])
        .collect();
    out.reverse();
    if trimmed != path && !trimmed.is_empty() {
        out.insert(0, trimmed);
    }
    if path != "/" {
        out.push("/");
    }
    out.dedup();
    out
}

/// Whether `path` has more ancestors than [`MAX_ROUTE_DEPTH`].
pub(super) fn too_deep(path: &str) -> bool {
    path.bytes().filter(|&b| b == b'/').count() > MAX_ROUTE_DEPTH
}

fn route_entities(path: &str) -> Vec<Value> {
    let mut chain = vec![path];
    chain.extend(ancestors(path));
    chain
        .windows(2)
        .map(|pair| {
            json!({
                "uid": { "type": "Hws::Route", "id": pair[0] },
                "attrs": { "path": pair[0] },
                "parents": [{ "type": "Hws::Route", "id": pair[1] }],
            })
        })
        .chain(chain.last().map(|root| {
            json!({
                "uid": { "type": "Hws::Route", "id": root },
                "attrs": { "path": root },
                "parents": [],
            })
        }))
        .collect()
}

fn device_entity(request: &PolicyRequest<'_>) -> Value {
    let mut attrs = Map::new();
    attrs.insert("key_id".into(), json!(request.key.key_id));
    attrs.insert("label".into(), json!(request.key.label));
    attrs.insert("enrolled".into(), json!(request.device.is_some()));
    if let Some(device) = request.device {
        attrs.insert("enrolled_unix".into(), json!(device.enrolled_unix));
        let mut tpm = Map::new();
        // Firmware versions are u64 on the wire; Cedar longs are i64 (bit pattern kept).
        tpm.insert(
            "firmware_version".into(),
            json!(device.firmware_version as i64),
        );
        if let Some(facts) = request.facts {
            if let Some(m) = &facts.tpm_manufacturer {
                tpm.insert("manufacturer".into(), json!(m));
            }
            if let Some(m) = &facts.tpm_model {
                tpm.insert("model".into(), json!(m));
            }
        }
        attrs.insert("tpm".into(), Value::Object(tpm));
    }
    json!({
        "uid": { "type": "Hws::Device", "id": request.device_id() },
        "attrs": attrs,
        "parents": [],
    })
}

/// The context; with `fresh`, as if the device had attested at `now` (its recorded boot state
/// and posture values kept, their ages 0): what a re-attestation could change.
fn context_json(request: &PolicyRequest<'_>, fresh: bool) -> Value {
    let mut context = Map::new();
    context.insert("level".into(), json!(request.key.level.as_str()));
    context.insert("level_rank".into(), json!(level_rank(request.key.level)));
    context.insert("delegated".into(), json!(request.delegated));
    context.insert("strict".into(), json!(!request.delegated));
    context.insert("now_unix".into(), json!(request.now_unix));
    context.insert(
        "now".into(),
        json!({ "__extn": { "fn": "datetime", "arg": format_rfc3339(request.now_unix) } }),
    );
    if let Some(ip) = request.source_ip {
        context.insert(
            "source_ip".into(),
            json!({ "__extn": { "fn": "ip", "arg": ip.to_string() } }),
        );
    }
    let facts = request.facts;
    // Attestation facts count only for an enrolled device.
    let attestation = request
        .device
        .and(facts)
        .and_then(|f| f.last_attestation.as_ref());
    context.insert(
        "boot_state".into(),
        json!(attestation.map_or("unknown", |a| a.boot_state.as_str())),
    );
    if let Some(attestation) = attestation {
        let age = if fresh {
            0
        } else {
            request.now_unix.saturating_sub(attestation.at_unix).max(0)
        };
        context.insert("attestation_age_secs".into(), json!(age));
    }
    let mut posture = Map::new();
    if let Some(report) = request.device.and(facts).and_then(|f| f.posture.as_ref()) {
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                posture.insert(name.into(), value);
            }
        };
        put("disk_encrypted", report.disk_encrypted.as_ref().map(fact));
        put("screen_lock", report.screen_lock.as_ref().map(fact));
        put("firmware_hsi", report.firmware_hsi.as_ref().map(fact));
        put("managed", report.managed.as_ref().map(fact));
        put("os_name", report.os_name.as_ref().map(fact));
        put("os_version", report.os_version.as_ref().map(fact));
        put("kernel", report.kernel.as_ref().map(fact));
        // A re-attestation brings a new report (the client library and the agent send one).
        let age = if fresh {
            0
        } else {
            request.now_unix.saturating_sub(report.received_unix).max(0)
        };
        context.insert("posture_age_secs".into(), json!(age));
    }
    context.insert("posture".into(), Value::Object(posture));
    Value::Object(context)
}

/// The Cedar request for `request` with the route spelled `path`; with `fresh`, as if the
/// device had just attested.
pub(super) fn build(
    schema: &Schema,
    request: &PolicyRequest<'_>,
    path: &str,
    fresh: bool,
) -> Result<CedarRequest, PolicyError> {
    // Methods are case-sensitive (RFC 9110): `get` is not GET, and is decided as `OTHER`.
    let action_name = if METHODS.contains(&request.method) {
        request.method
    } else {
        "OTHER"
    };
    let action = uid("Hws::Action", action_name)?;
    let principal = uid("Hws::Device", request.device_id())?;
    let resource = uid("Hws::Route", path)?;
    let mut entities = vec![device_entity(request)];
    entities.extend(route_entities(path));
    let entities = Entities::from_json_value(Value::Array(entities), Some(schema))
        .map_err(|e| PolicyError::Request(format!("entities: {e}")))?;
    let context = Context::from_json_value(context_json(request, fresh), Some((schema, &action)))
        .map_err(|e| PolicyError::Request(format!("context: {e}")))?;
    let request = Request::new(principal, action, resource, context, Some(schema))
        .map_err(|e| PolicyError::Request(e.to_string()))?;
    Ok(CedarRequest { request, entities })
}

/// `unix` seconds as `YYYY-MM-DDThh:mm:ssZ` (UTC), the form Cedar's `datetime` accepts.
pub fn format_rfc3339(unix: i64) -> String {
    hwsign_proto::SigningTime::from_unix(unix).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_981_800), "2026-11-29T19:50:00Z");
    }

    #[test]
    fn routes_nest_by_segment() {
        assert_eq!(ancestors("/v1/admin/keys"), ["/v1/admin", "/v1", "/"]);
        assert_eq!(ancestors("/v1/admin/"), ["/v1/admin", "/v1", "/"]);
        assert_eq!(ancestors("/v1"), ["/"]);
        assert!(ancestors("/").is_empty());
        let deep = "/a".repeat(MAX_ROUTE_DEPTH + 1);
        assert!(too_deep(&deep));
        assert!(!too_deep(&"/a".repeat(MAX_ROUTE_DEPTH)));
        assert_eq!(
            ancestors(&"/a".repeat(MAX_ROUTE_DEPTH)).len(),
            MAX_ROUTE_DEPTH
        );
    }
}
