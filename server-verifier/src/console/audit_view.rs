//! Audit search (the last matching records, shown) and the JSONL export download (streamed,
//! verifiable with `hwsign-verifier audit verify --export`), both over this replica's chain
//! files with [`crate::audit::export`].

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::html::{esc, page, time};
use super::pages::require;
use super::{Console, Refusal, html_headers, now_unix};
use crate::audit::{AuditError, ExportFormat, ExportQuery, chain_files, export};
use hwsign_audit_chain::checkpoint::KIND as CHECKPOINT;

type Shared = State<Arc<Console>>;

/// Records shown on the search page at most (the latest).
pub(crate) const MAX_SHOWN: usize = 200;
/// Bytes of export read for the search page at most.
const MAX_SEARCH_BYTES: usize = 4 * 1024 * 1024;
/// The filters the search form offers (top-level record fields).
const FILTERS: [&str; 7] = ["kind", "outcome", "code", "action", "device", "user", "key"];

/// The search form's fields.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SearchForm {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

impl SearchForm {
    fn value(&self, name: &str) -> Option<&str> {
        let value = match name {
            "from" => &self.from,
            "to" => &self.to,
            "kind" => &self.kind,
            "outcome" => &self.outcome,
            "code" => &self.code,
            "action" => &self.action,
            "device" => &self.device,
            "user" => &self.user,
            "key" => &self.key,
            _ => &None,
        };
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    fn query(&self) -> Result<ExportQuery, Refusal> {
        let time = |name: &str| {
            self.value(name)
                .map(|text| {
                    parse_time(text).ok_or_else(|| {
                        Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            format!("{name} is not seconds since the epoch, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"),
                        )
                    })
                })
                .transpose()
        };
        Ok(ExportQuery {
            from: time("from")?,
            to: time("to")?,
            filter: FILTERS
                .iter()
                .filter_map(|name| {
                    self.value(name)
                        .map(|v| ((*name).to_owned(), v.chars().take(1024).collect()))
                })
                .collect(),
        })
    }

    /// The query string that gives this search (for the download link).
    fn query_string(&self) -> String {
        ["from", "to"]
            .iter()
            .chain(FILTERS.iter())
            .filter_map(|name| {
                self.value(name)
                    .map(|v| format!("{name}={}", percent_encode(v)))
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Seconds since the epoch, `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(seconds);
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    hwsign_proto::SigningTime::parse_rfc3339_utc(&full)
        .ok()
        .map(hwsign_proto::SigningTime::unix)
}

fn chain_inputs(dir: &Path) -> Result<Vec<(String, BufReader<File>)>, AuditError> {
    let io = |source| AuditError::Io {
        path: dir.to_owned(),
        source,
    };
    chain_files(dir)
        .map_err(io)?
        .into_iter()
        .map(|path| {
            let file = File::open(&path).map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
            Ok((path.display().to_string(), BufReader::new(file)))
        })
        .collect()
}

/// A writer that keeps at most `limit` bytes and then refuses more.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(data.len()) > self.limit {
            return Err(std::io::Error::other("search result too large"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn not_configured() -> Refusal {
    Refusal::new(
        StatusCode::NOT_IMPLEMENTED,
        "audit_not_configured",
        "this verifier has no [audit] log",
    )
}

/// The signed-in user and the query of a search or export.
fn start(
    console: &Console,
    headers: &HeaderMap,
    form: &SearchForm,
) -> Result<(super::SignedIn, ExportQuery), Box<Response>> {
    let signed_in = require(console, headers)?;
    let query = form
        .query()
        .map_err(|refusal| Box::new(refusal.into_response()))?;
    Ok((signed_in, query))
}

/// `GET /console/audit?...`: the search form and the latest matching records.
pub(super) async fn search(
    State(console): Shared,
    headers: HeaderMap,
    Query(form): Query<SearchForm>,
) -> Response {
    let (signed_in, query) = match start(&console, &headers, &form) {
        Ok(started) => started,
        Err(response) => return *response,
    };
    let mut out =
        String::from("<form method=get action=\"/console/audit\" id=audit-search class=search>");
    for name in ["from", "to"].iter().chain(FILTERS.iter()) {
        let _ = write!(
            out,
            "<label>{name} <input name={name} value=\"{}\" size=14></label> ",
            esc(form.value(name).unwrap_or(""))
        );
    }
    out.push_str("<button class=primary>Search</button></form>");
    let Some(dir) = console.parts.audit_dir.clone() else {
        out.push_str("<p>This verifier keeps no audit log ([audit] is not configured).</p>");
        return (
            html_headers(),
            page("Audit", "audit", Some(&signed_in.viewer()), &out),
        )
            .into_response();
    };
    let _ = write!(
        out,
        "<p><a id=download-export class=button href=\"/console/audit/export?{}\" download>\
Download the JSONL export</a> <small>verifiable: <code>hwsign-verifier audit verify --key \
checkpoint.pub --export FILE</code></small></p>",
        esc(&form.query_string())
    );
    let audit = console.parts.audit.clone();
    let found = tokio::task::spawn_blocking(move || {
        if let Some(audit) = audit {
            let _ = audit.sync();
        }
        let mut sink = Bounded {
            bytes: Vec::new(),
            limit: MAX_SEARCH_BYTES,
        };
        let complete = match export(chain_inputs(&dir)?, &query, ExportFormat::Jsonl, &mut sink) {
            Ok(_) => true,
            Err(AuditError::Io { .. }) if sink.bytes.len() + 65_536 > MAX_SEARCH_BYTES => false,
            Err(error) => return Err(error),
        };
        Ok((sink.bytes, complete))
    })
    .await;
    let (bytes, complete) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => return Refusal::unavailable(&error).into_response(),
        Err(_) => {
            return Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unavailable",
                "search failed",
            )
            .into_response();
        }
    };
    let records: Vec<Value> = bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|record| record.get("omitted").is_none())
        // Checkpoints only when asked for (`kind=checkpoint`): they are the chain's, not events.
        .filter(|record| {
            form.value("kind") == Some(CHECKPOINT)
                || record.get("kind").and_then(Value::as_str) != Some(CHECKPOINT)
        })
        .collect();
    let shown = records.iter().rev().take(MAX_SHOWN);
    let _ = write!(
        out,
        "<p>{} record{} matched{}; the latest {} shown, newest first.</p>",
        records.len(),
        if records.len() == 1 { "" } else { "s" },
        if complete {
            ""
        } else {
            " (search cut short: narrow it)"
        },
        records.len().min(MAX_SHOWN)
    );
    out.push_str(
        "<table id=audit><thead><tr><th>Seq</th><th>Time</th><th>Kind</th><th>Outcome</th>\
<th>Who / what</th><th>Details</th></tr></thead><tbody>",
    );
    for record in shown {
        let text = |name: &str| {
            record
                .get(name)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default()
        };
        let who = ["actor", "action", "target", "key", "device", "user"]
            .iter()
            .filter(|n| record.get(**n).is_some())
            .map(|n| format!("{n}={}", text(n)))
            .collect::<Vec<_>>()
            .join(" ");
        let details = ["method", "route", "code", "source", "detail"]
            .iter()
            .filter(|n| record.get(**n).is_some())
            .map(|n| format!("{n}={}", text(n)))
            .collect::<Vec<_>>()
            .join(" ");
        let outcome = if record.get("outcome").is_some() {
            text("outcome")
        } else {
            text("code")
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text("seq")),
            esc(&time(record.get("ts").and_then(Value::as_i64))),
            esc(&text("kind")),
            esc(&outcome),
            esc(&who),
            esc(&details),
        );
    }
    out.push_str("</tbody></table>");
    (
        html_headers(),
        page("Audit", "audit", Some(&signed_in.viewer()), &out),
    )
        .into_response()
}

/// The response body of a streamed export: chunks from the exporting thread.
struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }
}

/// A writer sending 64 KiB chunks to a [`ChannelBody`] (blocking while the client is slow).
struct ChannelWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

const CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `GET /console/audit/export?...`: the matching records as a verifiable JSONL export,
/// streamed.
pub(super) async fn download(
    State(console): Shared,
    headers: HeaderMap,
    Query(form): Query<SearchForm>,
) -> Response {
    let (signed_in, query) = match start(&console, &headers, &form) {
        Ok(started) => started,
        Err(response) => return *response,
    };
    let Some(dir) = console.parts.audit_dir.clone() else {
        return not_configured().into_response();
    };
    console.record(
        &signed_in.actor(),
        "audit_export",
        Some(&form.query_string()),
        "ok",
    );
    let audit = console.parts.audit.clone();
    let (sender, receiver) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        if let Some(audit) = audit {
            let _ = audit.sync();
        }
        let failed = sender.clone();
        let mut writer = ChannelWriter {
            buffer: Vec::with_capacity(CHUNK),
            sender,
        };
        let result = chain_inputs(&dir)
            .and_then(|inputs| export(inputs, &query, ExportFormat::Jsonl, &mut writer))
            .map_err(|error| std::io::Error::other(error.to_string()))
            .and_then(|_| writer.flush());
        if let Err(error) = result {
            tracing::error!(%error, "console: audit export failed");
            // The client sees a cut response, never a silently short export.
            let _ = failed.blocking_send(Err(error));
        }
    });
    let name = format!("hwsign-audit-{}.jsonl", now_unix());
    (
        [
            (CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::new(ChannelBody(receiver)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_seconds_or_dates() {
        assert_eq!(parse_time("12345"), Some(12_345));
        assert_eq!(parse_time("1970-01-02"), Some(86_400));
        assert_eq!(parse_time("2027-01-01"), Some(1_798_761_600));
        assert_eq!(parse_time("2027-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
