//! Details a peer or an operator sees that the larger tests do not single out: each flag of
//! WebAuthn authenticator data read from its own bit, the agent API's sign request leaving the
//! default signature encoding out of its JSON (docs/PROTOCOL.md §10, §13), an error chain naming
//! each cause once and enrollment bodies logged without their secrets (what log lines show), and
//! the default ports of WebSocket URLs, the longest WebAuthn assertion header, and the RFC 9421
//! components a signer covers.

use anyhow::{Result, ensure};
use hwsign_proto::api::{SignEncoding, SignRequest};
use hwsign_proto::webauthn::{AuthenticatorData, AuthenticatorFlags, WebAuthnError};

fn authenticator_data(flags: u8, extensions: &[u8]) -> Vec<u8> {
    let mut bytes = vec![7u8; 32];
    bytes.push(flags);
    bytes.extend_from_slice(&41u32.to_be_bytes());
    bytes.extend_from_slice(extensions);
    bytes
}

#[test]
fn each_authenticator_flag_is_read_from_its_own_bit() -> Result<()> {
    let up = AuthenticatorFlags::UP;
    let uv = AuthenticatorFlags::UV;
    let be = AuthenticatorFlags::BE;
    let bs = AuthenticatorFlags::BS;
    // (flags byte, UP, UV, BE, BS)
    for (byte, present, verified, eligible, backed_up) in [
        (0, false, false, false, false),
        (up, true, false, false, false),
        (uv, false, true, false, false),
        (be, false, false, true, false),
        (be | bs, false, false, true, true),
        (up | uv | be | bs, true, true, true, true),
    ] {
        let data = AuthenticatorData::parse(&authenticator_data(byte, &[]))?;
        let flags = data.flags;
        ensure!(flags.user_present() == present, "UP of {byte:#04x}");
        ensure!(flags.user_verified() == verified, "UV of {byte:#04x}");
        ensure!(flags.backup_eligible() == eligible, "BE of {byte:#04x}");
        ensure!(flags.backed_up() == backed_up, "BS of {byte:#04x}");
        ensure!(!flags.extension_data(), "ED of {byte:#04x}");
        ensure!(data.sign_count == 41 && data.rp_id_hash == [7u8; 32]);
    }
    // Backed up but not backup eligible: the specification forbids it.
    ensure!(matches!(
        AuthenticatorData::parse(&authenticator_data(up | bs, &[])),
        Err(WebAuthnError::Malformed(_))
    ));
    // ED: an (empty) extensions map follows and is consumed; without ED it is trailing bytes.
    let ed = AuthenticatorFlags::ED;
    let data = AuthenticatorData::parse(&authenticator_data(up | ed, &[0xa0]))?;
    ensure!(data.flags.extension_data() && data.flags.user_present());
    ensure!(AuthenticatorData::parse(&authenticator_data(up, &[0xa0])).is_err());
    ensure!(AuthenticatorData::parse(&authenticator_data(up | ed, &[])).is_err());
    Ok(())
}

#[test]
fn a_sign_request_names_its_encoding_only_when_it_is_not_hws1() -> Result<()> {
    let mut request = SignRequest {
        key_id: "hk1_example".into(),
        audience: "payments".into(),
        method: "GET".into(),
        authority: "api.example.com".into(),
        path: "/".into(),
        query: String::new(),
        headers: Vec::new(),
        body_sha256: hwsign_proto::keys::EMPTY_SHA256.into(),
        signed_headers: Vec::new(),
        presign_expires_secs: None,
        encoding: SignEncoding::Hws1,
    };
    let json = serde_json::to_value(&request)?;
    ensure!(json.get("encoding").is_none(), "{json}");
    request.encoding = SignEncoding::Rfc9421;
    let json = serde_json::to_value(&request)?;
    ensure!(
        json.get("encoding") == Some(&serde_json::json!("rfc9421")),
        "{json}"
    );
    let back: SignRequest = serde_json::from_value(json)?;
    ensure!(back == request);
    Ok(())
}

/// An error with a message and an optional cause, as a crate's error type would be.
#[derive(Debug)]
struct Layer(&'static str, Option<Box<Layer>>);

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|e| e as _)
    }
}

#[test]
fn an_error_chain_shows_each_cause_once() {
    use hwsign_proto::error::ErrorChain;
    let io = Layer("Permission denied (os error 13)", None);
    let error = Layer(
        "cannot read configuration /etc/hwsign/agent.toml",
        Some(Box::new(io)),
    );
    assert_eq!(
        ErrorChain(&error).to_string(),
        "cannot read configuration /etc/hwsign/agent.toml: Permission denied (os error 13)"
    );
    // A message that already repeats its cause is not followed by it again; deeper causes are.
    let deepest = Layer("disk quota exceeded", None);
    let io = Layer("write failed", Some(Box::new(deepest)));
    let error = Layer("cannot save: write failed", Some(Box::new(io)));
    assert_eq!(
        ErrorChain(&error).to_string(),
        "cannot save: write failed: disk quota exceeded"
    );
    assert_eq!(ErrorChain(&Layer("alone", None)).to_string(), "alone");
}

/// WebSocket URLs sign the host as their HTTP counterparts do: the default port of `wss` is 443,
/// of `ws` 80 (docs/PROTOCOL.md §2, "Signed host").
#[test]
fn websocket_schemes_drop_their_default_ports() -> Result<()> {
    use hwsign_proto::host::{default_port, signed_host};
    ensure!(default_port("wss") == Some(443) && default_port("WSS") == Some(443));
    ensure!(default_port("ws") == Some(80) && default_port("Ws") == Some(80));
    ensure!(default_port("ftp").is_none());
    ensure!(signed_host(Some("wss"), "Chat.Example.com:443")? == "chat.example.com");
    ensure!(signed_host(Some("wss"), "chat.example.com:80")? == "chat.example.com:80");
    ensure!(signed_host(Some("ws"), "chat.example.com:80")? == "chat.example.com");
    ensure!(signed_host(Some("ws"), "chat.example.com:443")? == "chat.example.com:443");
    Ok(())
}

/// Enrollment bodies end up in logs through `Debug`: they name what the request is about (the
/// key, the challenge) and never carry the secret (the one-time token, the released secret).
#[test]
fn enrollment_requests_log_their_ids_and_never_their_secrets() {
    use hwsign_proto::enrollment::{ActivateRequest, StartRequest};
    let start = StartRequest {
        token: "hwt1_secret-token-value".into(),
        key_id: "hk1_0123456789abcdef0123456789abcdef".into(),
    };
    let logged = format!("{start:?}");
    assert!(logged.starts_with("StartRequest"), "{logged}");
    assert!(
        logged.contains("hk1_0123456789abcdef0123456789abcdef"),
        "{logged}"
    );
    assert!(
        logged.contains("<redacted>") && !logged.contains("secret-token"),
        "{logged}"
    );
    let activate = ActivateRequest {
        challenge_id: "chal-42".into(),
        secret: "c2VjcmV0LXJlbGVhc2VkLWJ5LXRoZS10cG0".into(),
    };
    let logged = format!("{activate:?}");
    assert!(logged.starts_with("ActivateRequest"), "{logged}");
    assert!(logged.contains("chal-42"), "{logged}");
    assert!(
        logged.contains("<redacted>") && !logged.contains("c2VjcmV0"),
        "{logged}"
    );
}

/// The longest `X-Hws-WebAuthn` header: 1024 bytes of authenticator data and 2048 of client
/// data, base64url, is accepted whole; one character more is refused before it is decoded.
#[test]
fn the_longest_webauthn_header_is_accepted_and_one_character_more_refused() -> Result<()> {
    use hwsign_proto::webauthn::Assertion;
    let assertion = Assertion {
        authenticator_data: vec![0xa5; 1024],
        client_data_json: vec![b'{'; 2048],
    };
    let header = assertion.to_header_value();
    ensure!(header.len() == 4105, "{}", header.len());
    ensure!(Assertion::parse_header_value(&header)? == assertion);
    ensure!(matches!(
        Assertion::parse_header_value(&format!("{header}A")),
        Err(WebAuthnError::TooLarge { limit: 4105, .. })
    ));
    Ok(())
}

/// The components an RFC 9421 signer covers: the required five, `content-type` and
/// `x-hws-delegation` when the request has them, then each extra header once, lower-cased.
#[test]
fn rfc9421_components_name_each_extra_header_once() {
    use hwsign_proto::RequestParts;
    use hwsign_proto::rfc9421_request::components_for;
    let headers = [
        ("host", "api.example.com"),
        ("Content-Type", "application/json"),
        ("x-custom", "1"),
    ];
    let parts = RequestParts {
        method: "POST",
        path: "/v1/responses",
        query: "",
        headers: &headers,
    };
    let components = components_for(&parts, &["X-Custom", "x-custom", "content-type", "X-Other"]);
    assert_eq!(
        components,
        [
            "@method",
            "@authority",
            "@path",
            "@query",
            "content-digest",
            "content-type",
            "x-custom",
            "x-other",
        ]
    );
}
