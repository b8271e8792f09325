//! The agent's diagnostic log (stderr, journald under systemd): plain text lines, or one JSON
//! object per line (`--log-format json`) for journald field extraction and SIEMs.
//!
//! Log lines carry values that callers chose (paths, hosts, audiences, labels, error messages
//! that quote what was refused). So that no caller can forge a log line or hijack a terminal,
//! every field value is escaped before it is written, in both formats: control characters
//! (newlines, carriage returns, ANSI escape sequences, C1 controls) and the Unicode characters
//! that reorder or break lines (bidirectional overrides, line and paragraph separators) become
//! visible `\n`, `\u{1b}` style escapes. Handlers additionally log request fields only once they
//! have been validated.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{MakeExt as _, RecordFields};
use tracing_subscriber::fmt::format::{Writer, debug_fn};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `tracing`'s human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`, `fields` (an
    /// object), `spans` (outermost first, each `{name, fields}`).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}; use text or json")),
        }
    }
}

/// Whether `c` must not reach a log line as itself.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every character that could forge or disguise a log line escaped (`\n`, `\r`,
/// `\t`, `\u{1b}`, ...). A backslash is escaped too, so an escape cannot be faked either.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| needs_escape(c) || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) || c == '\\' {
            // `char::escape_default` never fails to write into a String.
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), stderr, `format`;
/// colours only when `ansi` (stderr is a terminal) and only in text.
pub fn init(format: LogFormat, ansi: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).fmt_fields(text_fields()).init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(JsonFields)
            .event_format(JsonEvent)
            .init(),
    }
}

/// Text fields as `name=value`, values escaped.
fn text_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(
        |writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
            let text = format!("{value:?}");
            if field.name() == "message" {
                write!(writer, "{}", escape(&text))
            } else {
                write!(writer, "{}={}", field.name(), escape(&text))
            }
        },
    )
    .delimited(" ")
}

/// Collects fields into a JSON object, strings escaped like text values.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.0.insert(
            field.name().to_owned(),
            Value::String(escape(&text).into_owned()),
        );
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(
            field.name().to_owned(),
            Value::String(escape(value).into_owned()),
        );
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

/// Span fields kept as a JSON object text (merged when a span records more fields).
struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut map = Map::new();
        fields.record(&mut JsonVisitor(&mut map));
        write!(writer, "{}", Value::Object(map))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut map = match serde_json::from_str::<Value>(&current.fields) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        fields.record(&mut JsonVisitor(&mut map));
        current.fields = Value::Object(map).to_string();
        Ok(())
    }
}

/// One JSON object per event.
struct JsonEvent;

impl<S, N> FormatEvent<S, N> for JsonEvent
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::from(metadata.level().as_str()));
        line.insert("target".into(), Value::from(metadata.target()));
        if let Some(message) = fields.remove("message") {
            line.insert("message".into(), message);
        }
        line.insert("fields".into(), Value::Object(fields));
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let mut entry = Map::new();
                entry.insert("name".into(), Value::from(span.name()));
                let extensions = span.extensions();
                let fields = extensions
                    .get::<FormattedFields<N>>()
                    .and_then(|formatted| serde_json::from_str::<Value>(&formatted.fields).ok())
                    .filter(Value::is_object)
                    .unwrap_or_else(|| Value::Object(Map::new()));
                entry.insert("fields".into(), fields);
                spans.push(Value::Object(entry));
            }
        }
        line.insert("spans".into(), Value::Array(spans));
        writeln!(writer, "{}", Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_and_reordering_characters_are_escaped() {
        assert_eq!(escape("/v1/plain"), "/v1/plain");
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("x\r\u{2028}\u{202e}y"), "x\\r\\u{2028}\\u{202e}y");
        assert_eq!(escape("a\\nb"), "a\\\\nb");
        assert_eq!(escape("\u{9b}"), "\\u{9b}");
    }
}
