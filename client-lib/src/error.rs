//! Errors of the client library. An agent refusal keeps the agent's stable wire code
//! ([`AgentErrorCode`]); every other failure (no socket, broken connection, a reply that is not the
//! agent API, a request that cannot be signed) is a separate variant with its cause as `source()`
//! (not repeated in `Display`, so error reporters that print the chain show each cause once).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use hwsign_proto::AgentErrorCode;
use thiserror::Error;

/// Why a call to the agent, or the signing of a request, failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The agent answered with an error body `{"error":{"code","message"}}`.
    #[error("the agent refused the call ({code}, HTTP {status}): {message}")]
    Agent {
        /// The agent's stable error code.
        code: AgentErrorCode,
        /// The agent's explanation.
        message: String,
        /// The HTTP status it came with.
        status: u16,
    },
    /// The agent's socket could not be connected to (agent not running, wrong path, permissions).
    #[error("cannot connect to the hwsign agent at {}", path.display())]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The process listening on the agent's socket runs as a uid the client does not trust to
    /// be the agent (not the client's own uid, not root, not the configured agent uid): someone
    /// may have put their own socket in the agent's place. The connection is closed before
    /// anything is sent.
    #[error(
        "refusing the process listening on {}: it runs as uid {uid}, not as a trusted agent \
         uid {trusted:?} (set the agent's uid with AgentClient::builder(..).agent_uid or \
         HWSIGN_AGENT_UID)",
        path.display()
    )]
    UntrustedAgent {
        /// The socket path.
        path: PathBuf,
        /// The uid the kernel reports for the listening process (SO_PEERCRED).
        uid: u32,
        /// The uids the client accepts.
        trusted: Vec<u32>,
    },
    /// `HWSIGN_AGENT_UID` is set but is not a uid.
    #[error("HWSIGN_AGENT_UID is not a uid: {0:?}")]
    InvalidAgentUid(String),
    /// The connection failed while a request was in flight.
    #[error("connection to the hwsign agent failed")]
    Io(#[source] io::Error),
    /// The reply is not what the agent API defines (bad status without an error body, bad JSON).
    #[error("unexpected answer from the hwsign agent: {0}")]
    Protocol(String),
    /// The reply is larger than the client accepts.
    #[error("the agent's answer exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The agent did not answer in time.
    #[error("the hwsign agent did not answer within {0:?}")]
    Timeout(Duration),
    /// No socket path was given and none could be derived from the environment.
    #[error("no agent socket: set HWSIGN_AGENT_SOCK, XDG_RUNTIME_DIR or HOME, or pass a path")]
    NoSocketPath,
    /// The request to sign cannot be described to the agent unambiguously.
    #[error("cannot sign this request")]
    Request(#[from] RequestError),
    /// Reading the body to hash it failed.
    #[error("reading the request body failed")]
    Body(#[source] io::Error),
    /// The body is larger than the adapter buffers.
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The verifier asked for a fresh attestation and refused the evidence (or its attest
    /// endpoint failed); the request was not retried.
    #[error("the verifier refused the re-attestation (HTTP {status}, {code})")]
    AttestationRefused {
        /// The attest endpoint's status.
        status: u16,
        /// Its `error.code` (`evidence_invalid:<reason>`, `challenge_expired`, …), or empty.
        code: String,
    },
    /// A blocking client was used from inside an async runtime, where it would deadlock.
    #[error("the blocking hwsign client cannot be used inside an async runtime; use AgentClient")]
    BlockingInsideRuntime,
}

impl ClientError {
    /// The agent's error code, when the agent refused the call.
    pub fn agent_code(&self) -> Option<AgentErrorCode> {
        match self {
            Self::Agent { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Why a request cannot be turned into a signing request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Neither the URI nor a `Host` header names the server.
    #[error("the request has no authority: give an absolute URI or a Host header")]
    MissingAuthority,
    /// The URI's authority and the `Host` header name different servers.
    #[error("the URI authority {uri:?} and the Host header {host:?} disagree")]
    AuthorityMismatch {
        /// From the URI.
        uri: String,
        /// From the header.
        host: String,
    },
    /// More than one `Host` header.
    #[error("the request has more than one Host header")]
    DuplicateHost,
    /// `user@host` authorities are not signed: the user part never reaches the server as Host.
    #[error("the URI carries user information, which cannot be signed")]
    UserInfo,
    /// The authority (URI or `Host` header) is not `host[:port]` as the protocol defines it.
    #[error("the authority cannot be signed")]
    InvalidAuthority(#[source] hwsign_proto::ProtoError),
    /// A header value is not visible ASCII text, so it has no unambiguous canonical form.
    #[error("the value of header {0:?} is not visible ASCII text")]
    HeaderNotText(String),
    /// The agent answered with a header that is not a valid HTTP header.
    #[error("the agent returned an invalid header {0:?}")]
    InvalidSignatureHeader(String),
    /// The URL cannot be used (for the reqwest adapter: no host).
    #[error("the URL cannot be signed: {0}")]
    InvalidUrl(String),
    /// The body cannot be read without consuming it (a streaming reqwest body).
    #[error("the request body is a stream; sign it with Signer::sign_parts and a digest")]
    StreamingBody,
}
