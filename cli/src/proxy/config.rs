//! The proxy's configuration: a TOML file (`deny_unknown_fields`) or the command line, checked
//! into a [`ProxySettings`] before anything listens. Upstreams come only from here: a caller
//! picks a route by path prefix among the configured ones, never a server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::{HeaderName, Uri};
use serde::Deserialize;

use super::ProxyArgs;
use crate::https::is_loopback_host;

/// Default bound on a request body (413 beyond).
pub(crate) const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Default size up to which a request body is held in memory; larger ones go to a temp file.
pub(crate) const DEFAULT_MEMORY_BODY_BYTES: usize = 1024 * 1024;
/// Default bound on open client connections.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// The file format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProxyFile {
    /// `127.0.0.1:8787`, `[::1]:8787` or `unix:/path/to/socket`.
    pub listen: Option<String>,
    /// On a Unix socket: the uids allowed to connect (default: the proxy's own uid only).
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Request bodies larger than this are refused (413).
    pub max_body_bytes: Option<u64>,
    /// Request bodies up to this size are held in memory, larger ones in a temp file.
    pub memory_body_bytes: Option<usize>,
    /// Open client connections at most; further callers wait.
    pub max_connections: Option<usize>,
    /// Extra CA certificates (PEM files) trusted for https upstreams, beside the webpki roots.
    #[serde(default)]
    pub cacert: Vec<PathBuf>,
    /// The allowlisted upstreams.
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamFile>,
}

/// One `[[upstream]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamFile {
    /// Requests whose path starts with this prefix go here, the prefix removed (default `/`).
    pub prefix: Option<String>,
    /// `https://host[:port][/base]`, or `http://` for a loopback host.
    pub url: String,
    /// The agent key that signs (`hk1_…`).
    pub key: String,
    /// The audience the upstream's verifier expects.
    pub audience: String,
    /// Headers signed beyond those HWS1 always signs.
    #[serde(default)]
    pub signed_headers: Vec<String>,
    /// Forward the caller's own `Authorization` under this header name (default: dropped; the
    /// signature takes `Authorization`).
    pub forward_authorization_as: Option<String>,
}

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// One checked upstream.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    /// Path prefix, `/` or `/name` without a trailing slash.
    pub prefix: String,
    /// `scheme://authority`.
    pub origin: Uri,
    /// The upstream URL's path without a trailing slash (`""` for none).
    pub base_path: String,
    /// Key id.
    pub key: String,
    /// Audience.
    pub audience: String,
    /// Extra signed headers.
    pub signed_headers: Vec<String>,
    /// Where the caller's `Authorization` goes, if anywhere.
    pub forward_authorization_as: Option<HeaderName>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct ProxySettings {
    /// Where to listen.
    pub listen: ListenAddr,
    /// Unix socket callers allowed (empty: the proxy's own uid).
    pub allowed_uids: Vec<u32>,
    /// Body bound.
    pub max_body_bytes: u64,
    /// In-memory body threshold.
    pub memory_body_bytes: usize,
    /// Connection bound.
    pub max_connections: usize,
    /// Extra CA files.
    pub cacert: Vec<PathBuf>,
    /// Upstreams, longest prefix first.
    pub upstreams: Vec<Upstream>,
}

/// A configuration the proxy refuses to start with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file cannot be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid proxy configuration.
    #[error("parsing {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// No listen address.
    #[error("no listen address: pass --listen or set `listen` in the config")]
    NoListen,
    /// The listen address is neither `host:port` nor `unix:/path`.
    #[error("--listen {0:?}: expected 127.0.0.1:PORT, [::1]:PORT or unix:/path")]
    BadListen(String),
    /// The listen address is not loopback.
    #[error(
        "--listen {0}: the proxy signs with your key for whoever connects, so it listens only on loopback (127.0.0.1, ::1) or a Unix socket"
    )]
    NotLoopback(SocketAddr),
    /// No upstream.
    #[error(
        "no upstream: pass --upstream URL --key KEY_ID --audience NAME, or [[upstream]] in the config"
    )]
    NoUpstream,
    /// An upstream URL is unusable.
    #[error("upstream {0:?}: expected https://host[:port][/path] without query or user info")]
    BadUpstream(String),
    /// Plain HTTP to a host that is not loopback.
    #[error("upstream {0:?}: plain http:// is allowed only to a loopback host; use https://")]
    PlainHttp(String),
    /// A prefix is not `/` or `/segment…`.
    #[error("upstream prefix {0:?}: expected / or /name")]
    BadPrefix(String),
    /// Two upstreams share a prefix.
    #[error("two upstreams have the prefix {0:?}")]
    DuplicatePrefix(String),
    /// `forward_authorization_as` is not a header name, or one the proxy sets itself.
    #[error("forward_authorization_as {0:?}: not a header name the proxy can forward")]
    BadHeaderName(String),
    /// A bound of zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl ProxySettings {
    /// The settings from the command line and, if given, its config file (command-line values
    /// win; `--cacert` and `--allow-uid` add to the file's).
    pub(crate) fn from_args(args: &ProxyArgs) -> Result<Self, ConfigError> {
        let mut file = match &args.config {
            Some(path) => read_file(path)?,
            None => ProxyFile {
                listen: None,
                allowed_uids: Vec::new(),
                max_body_bytes: None,
                memory_body_bytes: None,
                max_connections: None,
                cacert: Vec::new(),
                upstreams: Vec::new(),
            },
        };
        if let Some(url) = &args.upstream {
            // clap requires --key and --audience with --upstream.
            file.upstreams.push(UpstreamFile {
                prefix: None,
                url: url.clone(),
                key: args.key.clone().unwrap_or_default(),
                audience: args.audience.clone().unwrap_or_default(),
                signed_headers: args.sign_headers.clone(),
                forward_authorization_as: None,
            });
        }
        if args.listen.is_some() {
            file.listen.clone_from(&args.listen);
        }
        if args.max_body_bytes.is_some() {
            file.max_body_bytes = args.max_body_bytes;
        }
        file.cacert.extend(args.cacert.iter().cloned());
        file.allowed_uids.extend(args.allow_uids.iter().copied());
        Self::check(file)
    }

    /// Checks a parsed file.
    pub(crate) fn check(file: ProxyFile) -> Result<Self, ConfigError> {
        let listen = parse_listen(file.listen.as_deref().ok_or(ConfigError::NoListen)?)?;
        if file.upstreams.is_empty() {
            return Err(ConfigError::NoUpstream);
        }
        let mut upstreams = file
            .upstreams
            .into_iter()
            .map(check_upstream)
            .collect::<Result<Vec<_>, _>>()?;
        upstreams.sort_by_key(|upstream| std::cmp::Reverse(upstream.prefix.len()));
        for pair in upstreams.windows(2) {
            if pair[0].prefix == pair[1].prefix {
                return Err(ConfigError::DuplicatePrefix(pair[0].prefix.clone()));
            }
        }
        let nonzero = |value: Option<u64>, default: u64, name| match value.unwrap_or(default) {
            0 => Err(ConfigError::Zero(name)),
            value => Ok(value),
        };
        let max_body_bytes = nonzero(
            file.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
            "max_body_bytes",
        )?;
        let memory = nonzero(
            file.memory_body_bytes.map(|v| v as u64),
            DEFAULT_MEMORY_BODY_BYTES as u64,
            "memory_body_bytes",
        )?;
        let max_connections = nonzero(
            file.max_connections.map(|v| v as u64),
            DEFAULT_MAX_CONNECTIONS as u64,
            "max_connections",
        )?;
        Ok(Self {
            listen,
            allowed_uids: file.allowed_uids,
            max_body_bytes,
            memory_body_bytes: usize::try_from(memory).unwrap_or(usize::MAX),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            cacert: file.cacert,
            upstreams,
        })
    }

    /// The upstream serving `path` (longest matching prefix), if any.
    pub(crate) fn route(&self, path: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|upstream| {
            upstream.prefix == "/"
                || path == upstream.prefix
                || path
                    .strip_prefix(&upstream.prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

fn read_file(path: &Path) -> Result<ProxyFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// `host:port` (loopback only) or `unix:/path`.
pub(crate) fn parse_listen(text: &str) -> Result<ListenAddr, ConfigError> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(ConfigError::BadListen(text.to_owned()));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match text.strip_prefix("localhost:").map(str::parse::<u16>) {
            Some(Ok(port)) => SocketAddr::from(([127, 0, 0, 1], port)),
            _ => return Err(ConfigError::BadListen(text.to_owned())),
        },
    };
    if !addr.ip().is_loopback() {
        return Err(ConfigError::NotLoopback(addr));
    }
    Ok(ListenAddr::Tcp(addr))
}

fn check_upstream(file: UpstreamFile) -> Result<Upstream, ConfigError> {
    let bad = || ConfigError::BadUpstream(file.url.clone());
    let uri: Uri = file.url.parse().map_err(|_| bad())?;
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.as_str().contains('@') || uri.query().is_some() {
        return Err(bad());
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback_host(authority.host()) => {}
        Some("http") => return Err(ConfigError::PlainHttp(file.url.clone())),
        _ => return Err(bad()),
    }
    let origin = Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority.as_str())
        .path_and_query("/")
        .build()
        .map_err(|_| bad())?;
    let prefix = match file.prefix.as_deref().unwrap_or("/").trim_end_matches('/') {
        "" => "/".to_owned(),
        prefix if prefix.starts_with('/') && !prefix.contains(['?', '#']) => prefix.to_owned(),
        _ => return Err(ConfigError::BadPrefix(file.prefix.unwrap_or_default())),
    };
    let forward_authorization_as = match file.forward_authorization_as {
        None => None,
        Some(name) => {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::BadHeaderName(name.clone()))?;
            if header == http::header::AUTHORIZATION
                || header == http::header::HOST
                || header.as_str().starts_with("x-hws-")
                || super::forward::is_hop_by_hop(&header)
            {
                return Err(ConfigError::BadHeaderName(name));
            }
            Some(header)
        }
    };
    Ok(Upstream {
        prefix,
        origin,
        base_path: uri.path().trim_end_matches('/').to_owned(),
        key: file.key,
        audience: file.audience,
        signed_headers: file.signed_headers,
        forward_authorization_as,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<ProxySettings, ConfigError> {
        ProxySettings::check(toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("test.toml"),
            source,
        })?)
    }

    #[test]
    fn listen_is_loopback_or_unix() {
        assert!(matches!(
            parse_listen("0.0.0.0:8787"),
            Err(ConfigError::NotLoopback(_))
        ));
        assert!(matches!(
            parse_listen("192.168.1.2:8787"),
            Err(ConfigError::NotLoopback(_))
        ));
        assert!(matches!(
            parse_listen("example.com:80"),
            Err(ConfigError::BadListen(_))
        ));
        assert!(matches!(parse_listen("[::1]:1"), Ok(ListenAddr::Tcp(_))));
        assert!(matches!(
            parse_listen("localhost:1"),
            Ok(ListenAddr::Tcp(_))
        ));
        assert!(matches!(
            parse_listen("unix:/tmp/p.sock"),
            Ok(ListenAddr::Unix(_))
        ));
    }

    #[test]
    fn upstreams_are_checked_and_routed_by_longest_prefix() -> Result<(), ConfigError> {
        let settings = file(
            r#"
listen = "127.0.0.1:8787"
[[upstream]]
url = "https://api.example.com/base/"
key = "hk1_a"
audience = "a"
[[upstream]]
prefix = "/local"
url = "http://127.0.0.1:9000"
key = "hk1_b"
audience = "b"
forward_authorization_as = "x-upstream-authorization"
"#,
        )?;
        let local = settings.route("/local/v1/x").map(|u| u.audience.as_str());
        assert_eq!(local, Some("b"));
        let other = settings.route("/localx/v1").map(|u| u.audience.as_str());
        assert_eq!(other, Some("a"));
        assert_eq!(settings.upstreams[1].base_path, "/base");
        Ok(())
    }

    #[test]
    fn bad_configs_are_refused() {
        let upstream = |extra: &str| {
            format!(
                "listen = \"127.0.0.1:1\"\n[[upstream]]\nkey = \"k\"\naudience = \"a\"\n{extra}\n"
            )
        };
        assert!(matches!(
            file(&upstream("url = \"http://api.example.com\"")),
            Err(ConfigError::PlainHttp(_))
        ));
        assert!(matches!(
            file(&upstream("url = \"https://u@api.example.com\"")),
            Err(ConfigError::BadUpstream(_))
        ));
        assert!(matches!(
            file(&upstream(
                "url = \"https://api.example.com\"\nforward_authorization_as = \"x-hws-date\""
            )),
            Err(ConfigError::BadHeaderName(_))
        ));
        assert!(matches!(
            file(&upstream("url = \"https://api.example.com\"\nsurprise = 1")),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            file("listen = \"127.0.0.1:1\""),
            Err(ConfigError::NoUpstream)
        ));
    }
}
