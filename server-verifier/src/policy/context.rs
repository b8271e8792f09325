//! Builds the Cedar request for one HTTP request: the principal (the device), the action (the
//! method), the resource (the route and its ancestors) and the context (docs/POLICY.md).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
    Schema,
};
use hwsign_proto::api::KeyLevel;

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
    /// The device's user and groups, when the registry knows them (the principal's parents).
    pub owner: Option<&'a DeviceOwner>,
    /// What the signature proves about a person (`context.signature`).
    pub signature: SignatureFacts,
}

/// What a request's signature proves about a person, for `context.signature` (step-up in a
/// policy, docs/WEBAUTHN.md). The default is an ECDSA signature: no touch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignatureFacts {
    /// An `HWS1-WEBAUTHN-ES256` assertion signed this request itself (not a delegation).
    pub webauthn: bool,
    /// That assertion had UP (false for ECDSA signatures and delegated session keys).
    pub user_present: bool,
    /// That assertion had UV.
    pub user_verified: bool,
    /// The request's signed date, seconds since the epoch (`age_secs` is measured from it).
    pub date_unix: i64,
}

impl SignatureFacts {
    /// A fresh touch now (with UV when `user_verified`): what a step-up retry brings.
    pub fn stepped_up(now_unix: i64, user_verified: bool) -> Self {
        Self {
            webauthn: true,
            user_present: true,
            user_verified,
            date_unix: now_unix,
        }
    }
}

/// Most groups a device's owner may be given to a decision.
pub const MAX_OWNER_GROUPS: usize = 256;

/// Who a device belongs to: `Hws::User::"…"` and `Hws::Group::"…"` parents of its principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceOwner {
    /// The user's id.
    pub user: Option<String>,
    /// The ids of the groups the device (through its user or directly) belongs to.
    pub groups: Vec<String>,
}

static NO_OWNER: DeviceOwner = DeviceOwner {
    user: None,
    groups: Vec::new(),
};

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

/// Most routes whose entities are kept between requests; the cache is emptied when full (paths
/// are chosen by clients, so it must be bounded).
pub(super) const MAX_CACHED_ROUTES: usize = 4096;

/// The attributes that may be absent, one bit each: with the Rust types of the values fixed by
/// the builder, which of them are present decides whether a request conforms to the schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Shape(u32);

/// Number of [`Shape`] bits.
const SHAPE_BITS: u32 = 15;

impl Shape {
    const ENROLLED: u32 = 0;
    const MANUFACTURER: u32 = 1;
    const MODEL: u32 = 2;
    const ATTESTATION: u32 = 3;
    const SOURCE_IP: u32 = 4;
    const POSTURE: u32 = 5;
    /// Bits 6..=12: the seven posture facts.
    const POSTURE_FACTS: u32 = 6;
    const USER: u32 = 13;
    const GROUPS: u32 = 14;

    fn set(&mut self, bit: u32, on: bool) {
        if on {
            self.0 |= 1 << bit;
        }
    }
}

/// Builds Cedar requests from typed values (no JSON, no schema-guided parsing per request).
///
/// Typing guarantee: every value put into an entity or the context has a Rust type that maps to
/// one Cedar type (`bool` → Bool, `i64` → Long, `&str` → String, [`IpAddr`] → ipaddr, the
/// clock → datetime), so two requests with the same [`Shape`] (the same optional attributes
/// present) have the same Cedar type. The first request of each shape is checked against the
/// schema in full (`Request::new` and `Entities::from_entities` with the schema) before it is
/// evaluated, and a failure refuses it (`PolicyError::Request`); later requests of a checked
/// shape skip the check. Route entities are always built through the schema (once per route,
/// then cached). So no request whose context or entities do not conform reaches evaluation.
pub(super) struct RequestFactory {
    schema: Schema,
    /// `Hws::Action::"GET"` … in [`METHODS`] order, then `OTHER`.
    actions: Vec<EntityUid>,
    device_type: EntityTypeName,
    route_type: EntityTypeName,
    user_type: EntityTypeName,
    group_type: EntityTypeName,
    /// Route path → the action entities and the route's chain of entities.
    routes: Mutex<HashMap<String, Arc<Entities>>>,
    /// One bit per [`Shape`] already checked against the schema.
    checked: Box<[AtomicU64]>,
    /// `datetime("…")` for the last second asked for: building one parses the extension
    /// function's name, which costs more than the rest of the context.
    now: Mutex<Option<(i64, RestrictedExpression)>>,
}

impl std::fmt::Debug for RequestFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestFactory").finish_non_exhaustive()
    }
}

fn type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name).map_err(|e| PolicyError::Request(e.to_string()))
}

fn request_error<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> PolicyError + '_ {
    move |e| PolicyError::Request(format!("{what}: {e}"))
}

impl RequestFactory {
    /// The factory for requests checked against `schema`.
    pub(super) fn new(schema: Schema) -> Result<Self, PolicyError> {
        let action_type = type_name("Hws::Action")?;
        let actions = METHODS
            .iter()
            .chain(std::iter::once(&"OTHER"))
            .map(|name| EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(name)))
            .collect();
        Ok(Self {
            schema,
            actions,
            device_type: type_name("Hws::Device")?,
            route_type: type_name("Hws::Route")?,
            user_type: type_name("Hws::User")?,
            group_type: type_name("Hws::Group")?,
            routes: Mutex::new(HashMap::new()),
            checked: (0..(1usize << SHAPE_BITS) / 64)
                .map(|_| AtomicU64::new(0))
                .collect(),
            now: Mutex::new(None),
        })
    }

    /// `datetime(now)`, reused within a second.
    fn now(&self, now_unix: i64) -> RestrictedExpression {
        let mut cached = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*cached {
            Some((at, expression)) if *at == now_unix => expression.clone(),
            _ => {
                let expression = RestrictedExpression::new_datetime(format_rfc3339(now_unix));
                *cached = Some((now_unix, expression.clone()));
                expression
            }
        }
    }

    fn action(&self, method: &str) -> &EntityUid {
        // Methods are case-sensitive (RFC 9110): `get` is not GET, and is decided as `OTHER`.
        let index = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len());
        &self.actions[index]
    }

    fn uid(&self, type_name: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
    }

    /// The action entities and `path`'s route chain, built through the schema once per route.
    fn routes(&self, path: &str) -> Result<Arc<Entities>, PolicyError> {
        let cache = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = cache.get(path) {
            return Ok(Arc::clone(found));
        }
        drop(cache);
        let mut chain = vec![path];
        chain.extend(ancestors(path));
        let mut entities = Vec::with_capacity(chain.len());
        for (i, route) in chain.iter().enumerate() {
            let parents = chain
                .get(i + 1)
                .map(|parent| self.uid(&self.route_type, parent))
                .into_iter()
                .collect();
            let attrs = HashMap::from([(
                "path".to_owned(),
                RestrictedExpression::new_string((*route).to_owned()),
            )]);
            entities.push(
                Entity::new(self.uid(&self.route_type, route), attrs, parents)
                    .map_err(request_error("route entity"))?,
            );
        }
        // With the schema: checked, and the schema's action entities added.
        let entities = Arc::new(
            Entities::from_entities(entities, Some(&self.schema))
                .map_err(request_error("route entities"))?,
        );
        let mut cache = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_ROUTES {
            cache.clear();
        }
        cache.insert(path.to_owned(), Arc::clone(&entities));
        Ok(entities)
    }

    fn is_checked(&self, shape: Shape) -> bool {
        let (word, bit) = (shape.0 as usize / 64, shape.0 % 64);
        self.checked
            .get(word)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << bit) != 0)
    }

    fn mark_checked(&self, shape: Shape) {
        let (word, bit) = (shape.0 as usize / 64, shape.0 % 64);
        if let Some(w) = self.checked.get(word) {
            w.fetch_or(1 << bit, Ordering::Relaxed);
        }
    }

    /// The principal entity and, when the facts name them, its user and groups.
    fn principal_entities(
        &self,
        principal: &EntityUid,
        request: &PolicyRequest<'_>,
        shape: &mut Shape,
    ) -> Result<Vec<Entity>, PolicyError> {
        let mut attrs = HashMap::from([
            (
                "key_id".to_owned(),
                RestrictedExpression::new_string(request.key.key_id.clone()),
            ),
            (
                "label".to_owned(),
                RestrictedExpression::new_string(request.key.label.clone()),
            ),
            (
                "enrolled".to_owned(),
                RestrictedExpression::new_bool(request.device.is_some()),
            ),
        ]);
        shape.set(Shape::ENROLLED, request.device.is_some());
        if let Some(device) = request.device {
            attrs.insert(
                "enrolled_unix".into(),
                RestrictedExpression::new_long(device.enrolled_unix),
            );
            // Firmware versions are u64 on the wire; Cedar longs are i64 (bit pattern kept).
            let mut tpm = vec![(
                "firmware_version".to_owned(),
                RestrictedExpression::new_long(device.firmware_version as i64),
            )];
            if let Some(facts) = request.facts {
                if let Some(m) = &facts.tpm_manufacturer {
                    tpm.push((
                        "manufacturer".into(),
                        RestrictedExpression::new_string(m.clone()),
                    ));
                }
                if let Some(m) = &facts.tpm_model {
                    tpm.push(("model".into(), RestrictedExpression::new_string(m.clone())));
                }
                shape.set(Shape::MANUFACTURER, facts.tpm_manufacturer.is_some());
                shape.set(Shape::MODEL, facts.tpm_model.is_some());
            }
            attrs.insert(
                "tpm".into(),
                RestrictedExpression::new_record(tpm).map_err(request_error("tpm"))?,
            );
        }
        let owner = request.owner.unwrap_or(&NO_OWNER);
        if owner.groups.len() > MAX_OWNER_GROUPS {
            return Err(PolicyError::Request(format!(
                "the device is in more than {MAX_OWNER_GROUPS} groups"
            )));
        }
        let groups: HashSet<EntityUid> = owner
            .groups
            .iter()
            .map(|g| self.uid(&self.group_type, g))
            .collect();
        let mut parents = groups.clone();
        let mut out = Vec::with_capacity(2 + groups.len());
        if let Some(user) = &owner.user {
            let user = self.uid(&self.user_type, user);
            parents.insert(user.clone());
            out.push(Entity::new_no_attrs(user, groups.clone()));
        }
        shape.set(Shape::USER, owner.user.is_some());
        shape.set(Shape::GROUPS, !groups.is_empty());
        out.extend(
            groups
                .into_iter()
                .map(|g| Entity::new_no_attrs(g, HashSet::new())),
        );
        out.push(Entity::new(principal.clone(), attrs, parents).map_err(request_error("device"))?);
        Ok(out)
    }

    /// The Cedar request for `request` with the route spelled `path`; with `fresh`, as if the
    /// device had just attested.
    pub(super) fn build(
        &self,
        request: &PolicyRequest<'_>,
        path: &str,
        fresh: bool,
    ) -> Result<CedarRequest, PolicyError> {
        let action = self.action(request.method);
        let principal = self.uid(&self.device_type, request.device_id());
        let resource = self.uid(&self.route_type, path);
        let mut shape = Shape::default();
        let principals = self.principal_entities(&principal, request, &mut shape)?;
        let context = context(request, self.now(request.now_unix), fresh, &mut shape)?;
        let routes = self.routes(path)?;
        if !self.is_checked(shape) {
            Entities::from_entities(principals.iter().cloned(), Some(&self.schema))
                .map_err(request_error("entities"))?;
            Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                context.clone(),
                Some(&self.schema),
            )
            .map_err(request_error("request"))?;
            self.mark_checked(shape);
        }
        let entities = Entities::clone(&routes)
            .add_entities(principals, None)
            .map_err(request_error("entities"))?;
        let request = Request::new(principal, action.clone(), resource, context, None)
            .map_err(request_error("request"))?;
        Ok(CedarRequest { request, entities })
    }
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

/// `/a/b/c` → `["/a/b", "/a", "/"]`; `/` → `[]`.
pub(super) fn ancestors(path: &str) -> Vec<&str> {
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

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

/// `{ value, attested }`.
fn fact(value: RestrictedExpression, attested: bool) -> Result<RestrictedExpression, PolicyError> {
    RestrictedExpression::new_record([
        ("value".to_owned(), value),
        (
            "attested".to_owned(),
            RestrictedExpression::new_bool(attested),
        ),
    ])
    .map_err(request_error("fact"))
}

/// The context; with `fresh`, as if the device had attested at `now` (its recorded boot state
/// and posture values kept, their ages 0): what a re-attestation could change.
fn context(
    request: &PolicyRequest<'_>,
    now: RestrictedExpression,
    fresh: bool,
    shape: &mut Shape,
) -> Result<Context, PolicyError> {
    let mut context: Vec<(String, RestrictedExpression)> = Vec::with_capacity(12);
    let mut put = |name: &str, value: RestrictedExpression| context.push((name.to_owned(), value));
    put("level", string(request.key.level.as_str()));
    put(
        "level_rank",
        RestrictedExpression::new_long(level_rank(request.key.level)),
    );
    put(
        "delegated",
        RestrictedExpression::new_bool(request.delegated),
    );
    put("strict", RestrictedExpression::new_bool(!request.delegated));
    let signature = request.signature;
    put(
        "signature",
        RestrictedExpression::new_record([
            (
                "webauthn".to_owned(),
                RestrictedExpression::new_bool(signature.webauthn),
            ),
            (
                "user_present".to_owned(),
                RestrictedExpression::new_bool(signature.user_present),
            ),
            (
                "user_verified".to_owned(),
                RestrictedExpression::new_bool(signature.user_verified),
            ),
            (
                "age_secs".to_owned(),
                RestrictedExpression::new_long(
                    request
                        .now_unix
                        .saturating_sub(signature.date_unix)
                        .saturating_abs(),
                ),
            ),
        ])
        .map_err(request_error("signature"))?,
    );
    put("now_unix", RestrictedExpression::new_long(request.now_unix));
    put("now", now);
    if let Some(ip) = request.source_ip {
        put("source_ip", RestrictedExpression::new_ip(ip.to_string()));
    }
    shape.set(Shape::SOURCE_IP, request.source_ip.is_some());
    let facts = request.facts;
    // Attestation facts count only for an enrolled device.
    let attestation = request
        .device
        .and(facts)
        .and_then(|f| f.last_attestation.as_ref());
    put(
        "boot_state",
        string(attestation.map_or("unknown", |a| a.boot_state.as_str())),
    );
    if let Some(attestation) = attestation {
        let age = if fresh {
            0
        } else {
            request.now_unix.saturating_sub(attestation.at_unix).max(0)
        };
        put("attestation_age_secs", RestrictedExpression::new_long(age));
    }
    shape.set(Shape::ATTESTATION, attestation.is_some());
    let mut posture = Vec::new();
    let report = request.device.and(facts).and_then(|f| f.posture.as_ref());
    if let Some(report) = report {
        let bool_fact = |f: &Fact<bool>| fact(RestrictedExpression::new_bool(f.value), f.attested);
        let long_fact = |f: &Fact<i64>| fact(RestrictedExpression::new_long(f.value), f.attested);
        let string_fact = |f: &Fact<String>| fact(string(&f.value), f.attested);
        let facts = [
            (
                "disk_encrypted",
                report.disk_encrypted.as_ref().map(bool_fact),
            ),
            ("screen_lock", report.screen_lock.as_ref().map(bool_fact)),
            ("firmware_hsi", report.firmware_hsi.as_ref().map(long_fact)),
            ("managed", report.managed.as_ref().map(bool_fact)),
            ("os_name", report.os_name.as_ref().map(string_fact)),
            ("os_version", report.os_version.as_ref().map(string_fact)),
            ("kernel", report.kernel.as_ref().map(string_fact)),
        ];
        for (bit, (name, value)) in (Shape::POSTURE_FACTS..).zip(facts) {
            shape.set(bit, value.is_some());
            if let Some(value) = value {
                posture.push((name.to_owned(), value?));
            }
        }
        // A re-attestation brings a new report (the client library and the agent send one).
        let age = if fresh {
            0
        } else {
            request.now_unix.saturating_sub(report.received_unix).max(0)
        };
        put("posture_age_secs", RestrictedExpression::new_long(age));
    }
    shape.set(Shape::POSTURE, report.is_some());
    put(
        "posture",
        RestrictedExpression::new_record(posture).map_err(request_error("posture"))?,
    );
    Context::from_pairs(context).map_err(request_error("context"))
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

    fn key() -> Result<RegisteredKey, Box<dyn std::error::Error>> {
        let signing = p256::ecdsa::SigningKey::from_slice(&[7u8; 32])?;
        let public = hwsign_proto::PublicKey::from_verifying_key(*signing.verifying_key())?;
        Ok(RegisteredKey::new(public, "laptop", KeyLevel::Tpm, 0))
    }

    fn request<'a>(
        key: &'a RegisteredKey,
        device: Option<&'a DeviceRecord>,
        facts: Option<&'a DeviceFacts>,
        owner: Option<&'a DeviceOwner>,
    ) -> PolicyRequest<'a> {
        PolicyRequest {
            key,
            device,
            facts,
            method: "POST",
            path: "/v1/admin/keys",
            delegated: false,
            now_unix: 1_800_000_000,
            source_ip: Some(IpAddr::from([10, 0, 0, 1])),
            owner,
            signature: Default::default(),
        }
    }

    fn every_fact() -> (DeviceRecord, DeviceFacts, DeviceOwner) {
        use crate::registry::{AttestationRecord, BootState, DeviceClock, PostureReport};
        let device = DeviceRecord {
            id: "tpm-1".into(),
            ek_cert_sha256: String::new(),
            ak_public: Vec::new(),
            clock: DeviceClock::default(),
            firmware_version: u64::MAX,
            pcr_baseline: Vec::new(),
            enrolled_unix: 1_700_000_000,
            revoked: false,
        };
        let facts = DeviceFacts {
            tpm_manufacturer: Some("id:49424D00".into()),
            tpm_model: Some("SW TPM".into()),
            last_attestation: Some(AttestationRecord {
                at_unix: 1_799_999_000,
                boot_state: BootState::Unchanged,
                quoted_pcrs: Vec::new(),
            }),
            posture: Some(PostureReport {
                received_unix: 1_799_999_000,
                disk_encrypted: Some(Fact::attested(true)),
                screen_lock: Some(Fact::claimed(false)),
                firmware_hsi: Some(Fact::claimed(2)),
                managed: Some(Fact::claimed(true)),
                os_name: Some(Fact::claimed("Debian".into())),
                os_version: Some(Fact::claimed("12".into())),
                kernel: Some(Fact::claimed("6.1".into())),
            }),
        };
        let owner = DeviceOwner {
            user: Some("alice".into()),
            groups: vec!["admins".into(), "staff".into()],
        };
        (device, facts, owner)
    }

    /// The typing guarantee: a request whose context does not conform to the schema is refused
    /// by the first-of-its-shape check, before the authorizer sees it, and stays refused
    /// (its shape is never marked checked). Shown with a schema in which `level_rank` is a
    /// String: the builder's Long no longer conforms.
    #[test]
    fn a_request_that_does_not_conform_never_reaches_evaluation()
    -> Result<(), Box<dyn std::error::Error>> {
        let altered = super::super::SCHEMA.replace("level_rank: Long", "level_rank: String");
        assert_ne!(altered, super::super::SCHEMA);
        let (schema, _) = Schema::from_cedarschema_str(&altered)?;
        let factory = RequestFactory::new(schema)?;
        let key = key()?;
        for _ in 0..2 {
            match factory.build(&request(&key, None, None, None), "/v1/admin/keys", false) {
                Err(PolicyError::Request(reason)) => {
                    assert!(reason.contains("level_rank"), "{reason}");
                }
                Err(other) => return Err(other.into()),
                Ok(_) => return Err("a non-conforming request was built".into()),
            }
        }
        assert!(!factory.is_checked(Shape::default()));
        Ok(())
    }

    /// With the shipped schema, the shapes with no optional fact and with every one conform
    /// (checked in full against the schema), and are then marked checked.
    #[test]
    fn requests_with_and_without_every_optional_fact_conform()
    -> Result<(), Box<dyn std::error::Error>> {
        let factory = RequestFactory::new(super::super::load::schema()?)?;
        let key = key()?;
        let (device, facts, owner) = every_fact();
        let mut shapes = Vec::new();
        for request in [
            request(&key, None, None, None),
            request(&key, Some(&device), Some(&facts), Some(&owner)),
        ] {
            let mut shape = Shape::default();
            factory.principal_entities(
                &factory.uid(&factory.device_type, "d"),
                &request,
                &mut shape,
            )?;
            context(&request, factory.now(request.now_unix), false, &mut shape)?;
            assert!(!factory.is_checked(shape));
            factory.build(&request, "/v1/admin/keys", false)?;
            factory.build(&request, "/v1/admin/keys", true)?;
            assert!(factory.is_checked(shape));
            shapes.push(shape);
        }
        // Every optional attribute but the source address (given in both) flips a bit.
        assert_eq!(
            shapes[0].0 ^ shapes[1].0,
            ((1 << SHAPE_BITS) - 1) & !(1 << Shape::SOURCE_IP)
        );
        Ok(())
    }

    /// The route cache never holds more than [`MAX_CACHED_ROUTES`] routes.
    #[test]
    fn the_route_cache_is_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let factory = RequestFactory::new(super::super::load::schema()?)?;
        for i in 0..=MAX_CACHED_ROUTES {
            factory.routes(&format!("/r/{i}"))?;
        }
        let cached = factory.routes.lock().map_err(|_| "poisoned")?.len();
        assert!((1..=MAX_CACHED_ROUTES).contains(&cached), "{cached}");
        Ok(())
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
