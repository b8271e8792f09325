//! What is recorded: a kind and its fields; the writer adds `ts`, `seq`, `prev` and `hash`.

use serde_json::{Map, Value};

/// Longest string kept in a record field; longer values are cut at a character boundary.
const MAX_FIELD_BYTES: usize = 1024;

/// One event for the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub(crate) fields: Map<String, Value>,
}

impl AuditEvent {
    /// An event of `kind` (`decision`, `admin`, `enrollment`, `recovery`, ...) with no fields.
    pub fn new(kind: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("kind".to_owned(), Value::from(kind));
        Self { fields }
    }

    /// Sets a string field (cut to 1 KiB); `None` leaves it out.
    pub fn with(mut self, name: &str, value: Option<&str>) -> Self {
        if let Some(value) = value {
            self.fields
                .insert(name.to_owned(), Value::from(bounded(value)));
        }
        self
    }

    /// Sets an integer or boolean field.
    pub fn with_value(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// An admin action: who did what to what, and the outcome (`ok` or a code).
    pub fn admin(actor: &str, action: &str, target: Option<&str>, outcome: &str) -> Self {
        Self::new("admin")
            .with("actor", Some(actor))
            .with("action", Some(action))
            .with("target", target)
            .with("outcome", Some(outcome))
    }

    /// An enrollment: the device and key enrolled (or refused, with the code as outcome).
    pub fn enrollment(device: Option<&str>, key: Option<&str>, outcome: &str) -> Self {
        Self::new("enrollment")
            .with("device", device)
            .with("key", key)
            .with("outcome", Some(outcome))
    }

    /// A recovery step (`token_issued`, `token_used`, `token_refused`, ...) for a user.
    pub fn recovery(user: &str, step: &str, actor: Option<&str>, outcome: &str) -> Self {
        Self::new("recovery")
            .with("user", Some(user))
            .with("step", Some(step))
            .with("actor", actor)
            .with("outcome", Some(outcome))
    }

    /// The event's kind.
    pub fn kind(&self) -> &str {
        self.fields
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

fn bounded(value: &str) -> &str {
    if value.len() <= MAX_FIELD_BYTES {
        return value;
    }
    let mut end = MAX_FIELD_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}
