//! `hwsign-verifier admin …`: the admin API (docs/ADMIN.md) from the command line. Each request
//! is signed through the local agent (`hwsign-client`) with the administrator's key and sent to
//! the verifier's admin listener; the answer's JSON is printed. A refusal prints its JSON on
//! stderr and exits 1.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use http_body_util::{BodyExt as _, Full};
use hwsign_client::{AgentClient, Signer};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Longest admin answer read.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// Time for the whole exchange.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// The admin listener, `http://HOST:PORT` (its host must be in `[admin.api] hosts`);
    /// default: $HWSIGN_ADMIN_URL.
    #[arg(long)]
    url: Option<String>,
    /// The administrator's key id (hk1_…), held by the local agent; default: $HWSIGN_ADMIN_KEY.
    #[arg(long)]
    key: Option<String>,
    /// The host to sign (`Host` header) when it is not the URL's, e.g. the name the admin API
    /// knows itself by behind a tunnel.
    #[arg(long)]
    host: Option<String>,
    /// The admin API's audience.
    #[arg(long, default_value = hwsign_verifier::admin_api::DEFAULT_ADMIN_AUDIENCE)]
    audience: String,
    /// The agent's socket (default: $HWSIGN_AGENT_SOCKET or the user's runtime directory).
    #[arg(long)]
    agent_socket: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// The signing key's role.
    Whoami,
    /// Devices: list, show, revoke, force re-attestation, assign to a user.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Sessions: list, end (force logout).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Users (provisioned by SCIM).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Groups (provisioned by SCIM).
    Groups,
    /// Enrollment tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Issue a single-use recovery enrollment token bound to a user (role admin, a fresh
    /// signature by the hardware key itself).
    Recover {
        /// The user (id or user name).
        #[arg(long)]
        user: String,
    },
    /// The audit log: search (viewer) and export (admin).
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// What selects audit records.
#[derive(Debug, clap::Args)]
struct AuditSelection {
    /// From this time (seconds since the epoch, or YYYY-MM-DDTHH:MM:SSZ), inclusive.
    #[arg(long)]
    from: Option<String>,
    /// To this time, exclusive.
    #[arg(long)]
    to: Option<String>,
    /// FIELD=VALUE conditions (kind, outcome, code, key, claimed_key, device, user, route,
    /// method, actor, action, step), all of which must hold.
    #[arg(long, value_delimiter = ',')]
    filter: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// One page of matching records (JSON); `next_after_seq` is the next page's cursor.
    Search {
        #[command(flatten)]
        selection: AuditSelection,
        /// Records after this seq.
        #[arg(long)]
        after_seq: Option<u64>,
        /// Page size (1..=1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Stream an export to standard output (or --out): JSONL (verifiable with
    /// `hwsign-verifier audit verify --export`) or CSV.
    Export {
        #[command(flatten)]
        selection: AuditSelection,
        /// jsonl or csv.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

impl AuditSelection {
    fn query(&self) -> Vec<String> {
        let mut query = Vec::new();
        if let Some(from) = &self.from {
            query.push(format!("from={}", escape(from)));
        }
        if let Some(to) = &self.to {
            query.push(format!("to={}", escape(to)));
        }
        for condition in &self.filter {
            let (field, value) = condition.split_once('=').unwrap_or((condition, ""));
            query.push(format!("{}={}", escape(field), escape(value)));
        }
        query
    }
}

fn with_query(path: &str, query: &[String]) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Every device.
    List,
    /// One device with its attestation, posture, sessions and last-seen time.
    Show {
        /// Device id (or key id for a key without a device).
        device: String,
    },
    /// Revoke the device (every key of it) and end its sessions.
    Revoke {
        /// The device.
        device: String,
    },
    /// Mark the device's attestation stale: policies with an age limit ask it to re-attest.
    Reattest {
        /// The device.
        device: String,
    },
    /// Assign the device to a user.
    Assign {
        /// The device.
        device: String,
        /// The user (id or user name).
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// Live sessions, optionally of one user or device.
    List {
        /// Only this user's (id or user name).
        #[arg(long)]
        user: Option<String>,
        /// Only this device's.
        #[arg(long)]
        device: Option<String>,
    },
    /// End sessions: one (`--session`), a device's, a user's, or all issued before a time.
    End {
        /// One session id.
        #[arg(long, group = "scope")]
        session: Option<String>,
        /// Every session of this device.
        #[arg(long, group = "scope")]
        device: Option<String>,
        /// Every session of this user.
        #[arg(long, group = "scope")]
        user: Option<String>,
        /// Every session (issued at or before `--issued-before`, default now).
        #[arg(long, group = "scope")]
        all: bool,
        /// With `--all`: seconds since the epoch.
        #[arg(long, requires = "all")]
        issued_before: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Every user.
    List,
    /// One user (id or user name) with groups and devices.
    Show {
        /// The user.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Every token (never the secrets).
    List,
    /// Issue a token; prints it once.
    Issue {
        /// A label.
        #[arg(long)]
        label: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = hwsign_verifier::enrollment::DEFAULT_TOKEN_TTL_SECS)]
        ttl_secs: u64,
    },
    /// Revoke an unused token.
    Revoke {
        /// The token id.
        id: String,
    },
}

/// The method, path and JSON body of a command.
fn request_of(command: &AdminCommand) -> (&'static str, String, Option<Value>) {
    use AdminCommand as C;
    match command {
        C::Whoami => ("GET", "/admin/v1/whoami".into(), None),
        C::Devices(DevicesCommand::List) => ("GET", "/admin/v1/devices".into(), None),
        C::Devices(DevicesCommand::Show { device }) => {
            ("GET", format!("/admin/v1/devices/{}", escape(device)), None)
        }
        C::Devices(DevicesCommand::Revoke { device }) => (
            "POST",
            format!("/admin/v1/devices/{}/revoke", escape(device)),
            None,
        ),
        C::Devices(DevicesCommand::Reattest { device }) => (
            "POST",
            format!("/admin/v1/devices/{}/reattest", escape(device)),
            None,
        ),
        C::Devices(DevicesCommand::Assign { device, user }) => (
            "POST",
            format!("/admin/v1/devices/{}/assign", escape(device)),
            Some(json!({ "user": user })),
        ),
        C::Sessions(SessionsCommand::List { user, device }) => {
            let mut query = Vec::new();
            if let Some(user) = user {
                query.push(format!("user={}", escape(user)));
            }
            if let Some(device) = device {
                query.push(format!("device={}", escape(device)));
            }
            let path = if query.is_empty() {
                "/admin/v1/sessions".to_owned()
            } else {
                format!("/admin/v1/sessions?{}", query.join("&"))
            };
            ("GET", path, None)
        }
        C::Sessions(SessionsCommand::End {
            session,
            device,
            user,
            all: _,
            issued_before,
        }) => {
            let body = match (session, device, user) {
                (Some(id), _, _) => json!({ "scope": "session", "id": id }),
                (_, Some(id), _) => json!({ "scope": "device", "id": id }),
                (_, _, Some(id)) => json!({ "scope": "user", "id": id }),
                _ => json!({ "scope": "all", "issued_before_unix": issued_before }),
            };
            ("POST", "/admin/v1/sessions/end".into(), Some(body))
        }
        C::Users(UsersCommand::List) => ("GET", "/admin/v1/users".into(), None),
        C::Users(UsersCommand::Show { user }) => {
            ("GET", format!("/admin/v1/users/{}", escape(user)), None)
        }
        C::Groups => ("GET", "/admin/v1/groups".into(), None),
        C::Tokens(TokensCommand::List) => ("GET", "/admin/v1/enrollment-tokens".into(), None),
        C::Tokens(TokensCommand::Issue { label, ttl_secs }) => (
            "POST",
            "/admin/v1/enrollment-tokens".into(),
            Some(json!({ "label": label, "ttl_secs": ttl_secs })),
        ),
        C::Tokens(TokensCommand::Revoke { id }) => (
            "POST",
            format!("/admin/v1/enrollment-tokens/{}/revoke", escape(id)),
            None,
        ),
        C::Recover { user } => (
            "POST",
            "/admin/v1/recovery".into(),
            Some(json!({ "user": user })),
        ),
        C::Audit(AuditCommand::Search {
            selection,
            after_seq,
            limit,
        }) => {
            let mut query = selection.query();
            if let Some(after) = after_seq {
                query.push(format!("after_seq={after}"));
            }
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            ("GET", with_query("/admin/v1/audit", &query), None)
        }
        C::Audit(AuditCommand::Export {
            selection, format, ..
        }) => {
            let mut query = selection.query();
            query.push(format!("format={}", escape(format)));
            ("GET", with_query("/admin/v1/audit/export", &query), None)
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Runs one admin command.
pub(crate) fn run(args: AdminArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if let AdminCommand::Audit(AuditCommand::Export { out, .. }) = &args.command {
        return runtime.block_on(export(&args, out.as_deref()));
    }
    let (status, answer) = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, exchange(&args))
            .await
            .context("the admin API did not answer in time")?
    })?;
    let pretty = serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string());
    if (200..300).contains(&status) {
        println!("{pretty}");
        Ok(())
    } else {
        eprintln!("{pretty}");
        bail!("the admin API refused ({status})")
    }
}

/// Streams an export's body to `out` (or standard output) as it arrives.
async fn export(args: &AdminArgs, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let response = tokio::time::timeout(TIMEOUT, send(args))
        .await
        .context("the admin API did not answer in time")??;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    if !(200..300).contains(&status) {
        let bytes = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        eprintln!("{}", String::from_utf8_lossy(&bytes));
        bail!("the admin API refused ({status})");
    }
    // A command-line tool on a current-thread runtime: writing blocks only itself.
    let mut sink: Box<dyn std::io::Write> = match out {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut written = 0_u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the export was cut off")?;
        if let Ok(data) = frame.into_data() {
            sink.write_all(&data).context("writing the export")?;
            written += data.len() as u64;
        }
    }
    sink.flush().context("writing the export")?;
    eprintln!("exported {written} bytes");
    Ok(())
}

async fn exchange(args: &AdminArgs) -> anyhow::Result<(u16, Value)> {
    let response = send(args).await?;
    let status = response.status().as_u16();
    let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    let answer = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "status": status, "body": String::from_utf8_lossy(&bytes) }));
    Ok((status, answer))
}

/// Signs the command's request through the agent and sends it; the response, its body still
/// to be read (the connection is driven by a task of its own).
async fn send(args: &AdminArgs) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    let agent = match &args.agent_socket {
        Some(path) => AgentClient::new(path),
        None => AgentClient::from_env().context("finding the agent")?,
    };
    let key = match &args.key {
        Some(key) => key.clone(),
        None => std::env::var("HWSIGN_ADMIN_KEY").context("--key or $HWSIGN_ADMIN_KEY")?,
    };
    let url = match &args.url {
        Some(url) => url.clone(),
        None => std::env::var("HWSIGN_ADMIN_URL").context("--url or $HWSIGN_ADMIN_URL")?,
    };
    let signer = Signer::new(agent, key, args.audience.clone());
    let (method, path, body) = request_of(&args.command);
    let base = url.trim_end_matches('/');
    let uri: http::Uri = format!("{base}{path}").parse().context("--url")?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://HOST:PORT (the admin listener)");
    }
    let authority = uri.authority().context("--url has no host")?.clone();
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    // The signed URI names the host the admin API knows itself by (`--host`, else the URL's);
    // the connection goes to the URL's address.
    let signed_uri: http::Uri = match &args.host {
        Some(host) => format!("http://{host}{path}").parse().context("--host")?,
        None => uri.clone(),
    };
    let host = args.host.as_deref().unwrap_or(authority.as_str());
    let mut builder = http::Request::builder()
        .method(method)
        .uri(signed_uri)
        .header("host", host);
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    let mut request = builder.body(body).context("building the request")?;
    signer
        .sign_request(&mut request)
        .await
        .context("signing with the agent")?;
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let (parts, body) = request.into_parts();
    let mut request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
    // The request line carries the path only; the signed Host header names the authority.
    *request.uri_mut() = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .context("path")?;
    sender.send_request(request).await.context("sending")
}
