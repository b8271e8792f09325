//! `/admin/v1/audit`: search (one bounded page, role `viewer`) and export (JSONL or CSV,
//! streamed, role `admin`) of this verifier's audit log, and the admin API's own records.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use http_body::Frame;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{AdminApi, ApiError, Role};
use crate::VerifiedDevice;
use crate::audit::{AuditEvent, AuditLog, ExportFormat, ExportQuery};

/// The default page size of a search.
pub(crate) const DEFAULT_PAGE: usize = 100;
/// Bytes an export hands to the connection at a time.
const EXPORT_CHUNK: usize = 64 * 1024;
/// Chunks an export may run ahead of the connection.
const EXPORT_QUEUE: usize = 4;

/// Where the admin API finds the audit log: the directory of this process's chain files, and
/// the open log it records admin actions in (and syncs before reading).
#[derive(Debug, Clone)]
pub struct AuditAccess {
    /// `[audit] dir`.
    pub dir: PathBuf,
    /// The open log, if this process writes it.
    pub log: Option<Arc<AuditLog>>,
}

/// Search and export parameters (query string). Filters compare the record's top-level field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// From this time, inclusive: seconds since the epoch or `YYYY-MM-DDTHH:MM:SSZ`.
    pub from: Option<String>,
    /// To this time, exclusive.
    pub to: Option<String>,
    /// `decision`, `admin`, `enrollment`, `recovery`, `checkpoint`, …
    pub kind: Option<String>,
    /// `accepted`, `refused`, `ok`, or a code.
    pub outcome: Option<String>,
    /// A decision's wire code (`ok`, `stale_date`, …).
    pub code: Option<String>,
    /// The key that signed (accepted decisions, enrollment).
    pub key: Option<String>,
    /// The key a refused request named.
    pub claimed_key: Option<String>,
    /// The device.
    pub device: Option<String>,
    /// The user (id).
    pub user: Option<String>,
    /// The route (path).
    pub route: Option<String>,
    /// The method.
    pub method: Option<String>,
    /// The admin (key id) who acted.
    pub actor: Option<String>,
    /// An admin action (`device_revoke`, `sessions_end`, `audit_export`, …).
    pub action: Option<String>,
    /// An enrollment or recovery step (`token_issued`, `activated`, `grant_spent`, …).
    pub step: Option<String>,
    /// Search: records after this seq (the previous page's `next_after_seq`).
    pub after_seq: Option<u64>,
    /// Search: page size (1..=1000, default 100).
    pub limit: Option<usize>,
    /// Export: `jsonl` (default) or `csv`.
    pub format: Option<String>,
}

impl AuditParams {
    /// The export query these parameters give.
    pub(crate) fn query(&self) -> Result<ExportQuery, ApiError> {
        let time = |name: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    crate::audit::parse_time(t).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "{name}: seconds since the epoch or YYYY-MM-DDTHH:MM:SSZ"
                        ))
                    })
                })
                .transpose()
        };
        let mut filter = Vec::new();
        for (field, value) in [
            ("kind", &self.kind),
            ("outcome", &self.outcome),
            ("code", &self.code),
            ("key", &self.key),
            ("claimed_key", &self.claimed_key),
            ("device", &self.device),
            ("user", &self.user),
            ("route", &self.route),
            ("method", &self.method),
            ("actor", &self.actor),
            ("action", &self.action),
            ("step", &self.step),
        ] {
            if let Some(value) = value {
                filter.push((field.to_owned(), value.clone()));
            }
        }
        Ok(ExportQuery {
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
            filter,
        })
    }

    /// The export format.
    pub(crate) fn format(&self) -> Result<ExportFormat, ApiError> {
        match self.format.as_deref() {
            None | Some("jsonl") => Ok(ExportFormat::Jsonl),
            Some("csv") => Ok(ExportFormat::Csv),
            Some(_) => Err(ApiError::invalid("format is jsonl or csv")),
        }
    }
}

impl AdminApi {
    /// Records an admin action (best effort: the action is done; a record the log cannot take
    /// is logged as an error).
    pub(crate) fn record(&self, event: AuditEvent) {
        if let Some(log) = self.audit.as_ref().and_then(|audit| audit.log.as_ref())
            && log.record(event).is_err()
        {
            tracing::error!("the audit log cannot take an admin record");
        }
    }

    /// Records `action` on `target` by `actor`, outcome `ok`.
    pub(crate) fn record_admin(&self, actor: &str, action: &str, target: Option<&str>) {
        self.record(AuditEvent::admin(actor, action, target, "ok"));
    }

    fn audit_access(&self) -> Result<AuditAccess, ApiError> {
        self.audit.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "audit_not_configured",
                "this verifier has no [audit] log",
            )
        })
    }

    /// One page of the audit records `params` select (what `GET /admin/v1/audit` answers).
    pub(crate) async fn audit_search(
        &self,
        params: &AuditParams,
    ) -> Result<serde_json::Value, ApiError> {
        if params.format.is_some() {
            return Err(ApiError::invalid("format is for the export"));
        }
        let query = params.query()?;
        let access = self.audit_access()?;
        let after = params.after_seq;
        let limit = params.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > crate::audit::MAX_PAGE {
            return Err(ApiError::invalid("limit must be 1..=1000"));
        }
        let page = tokio::task::spawn_blocking(move || {
            sync_log(&access);
            let files = crate::audit::files_after(&access.dir, after)
                .map_err(|e| ApiError::unavailable(&e))?;
            let inputs = open_all(&files)?;
            crate::audit::search(inputs, &query, after, limit)
                .map_err(|e| ApiError::unavailable(&e))
        })
        .await
        .map_err(|e| ApiError::unavailable(&e))??;
        Ok(json!({
            "records": page.records,
            "next_after_seq": page.next_after_seq,
        }))
    }

    /// The export `params` select, streamed as the response body (what
    /// `GET /admin/v1/audit/export` answers).
    pub(crate) fn audit_export(&self, params: &AuditParams) -> Result<Response, ApiError> {
        if params.after_seq.is_some() || params.limit.is_some() {
            return Err(ApiError::invalid("after_seq and limit are for the search"));
        }
        let query = params.query()?;
        let format = params.format()?;
        let access = self.audit_access()?;
        let (sender, receiver) = mpsc::channel(EXPORT_QUEUE);
        let stream = ChannelWriter(sender.clone());
        tokio::task::spawn_blocking(move || {
            sync_log(&access);
            let result = crate::audit::chain_files(&access.dir)
                .map_err(|e| e.to_string())
                .and_then(|files| open_all(&files).map_err(|_| "cannot open".to_owned()))
                .and_then(|inputs| {
                    let mut out = BufWriter::with_capacity(EXPORT_CHUNK, stream);
                    crate::audit::export(inputs, &query, format, &mut out)
                        .map_err(|e| crate::ErrorChain(&e).to_string())
                });
            if let Err(error) = result {
                tracing::error!(%error, "admin API: audit export failed");
                // The body ends with an error: the client sees a cut connection, not a short
                // export that looks complete.
                let _ = sender.blocking_send(Err(io::Error::other(error)));
            }
        });
        let content_type = match format {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        };
        let name = match format {
            ExportFormat::Jsonl => "attachment; filename=\"audit-export.jsonl\"",
            ExportFormat::Csv => "attachment; filename=\"audit-export.csv\"",
        };
        let mut response = Body::new(ChannelBody(receiver)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(name));
        Ok(response)
    }
}

/// Writes what is queued, so a search or export sees every record made before it.
fn sync_log(access: &AuditAccess) {
    if let Some(log) = &access.log
        && log.sync().is_err()
    {
        tracing::warn!("admin API: the audit log could not be synced before reading");
    }
}

fn open_all(files: &[PathBuf]) -> Result<Vec<(String, BufReader<File>)>, ApiError> {
    files
        .iter()
        .map(|path: &PathBuf| {
            let file = File::open(Path::new(path)).map_err(|e| ApiError::unavailable(&e))?;
            Ok((path.display().to_string(), BufReader::new(file)))
        })
        .collect()
}

/// An `io::Write` handing each buffer to the response body (blocking while the connection is
/// [`EXPORT_QUEUE`] chunks behind: the export never runs further ahead than that).
struct ChannelWriter(mpsc::Sender<Result<Bytes, io::Error>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The response body: the chunks the export thread sends.
struct ChannelBody(mpsc::Receiver<Result<Bytes, io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }
}

type Api = State<Arc<AdminApi>>;

pub(super) async fn search(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    Query(params): Query<AuditParams>,
) -> Result<Response, ApiError> {
    api.authorize(&who, Role::Viewer)?;
    let page = api.audit_search(&params).await?;
    Ok((StatusCode::OK, axum::Json(page)).into_response())
}

pub(super) async fn export(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    Query(params): Query<AuditParams>,
) -> Result<Response, ApiError> {
    api.authorize(&who, Role::Admin)?;
    let response = api.audit_export(&params)?;
    api.record_admin(&who.key_id, "audit_export", None);
    Ok(response)
}
