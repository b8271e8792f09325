//! The console's settings and its refusals before any passkey is involved, in process: the
//! origin and cookie settings it refuses, the security headers, the sign-in redirect, the
//! `Origin` check, and unknown challenges, tokens and sessions. (The browser flows are the e2e
//! `console_*` tests.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use axum::Router;
use axum::body::Body;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hwsign_verifier::MemoryRegistry;
use hwsign_verifier::console::{CSP, Console, ConsoleConfig, ConsoleParts};
use hwsign_verifier::directory::open_directory;
use serde_json::Value;
use tower_service::Service as _;

const ORIGIN: &str = "https://admin.example.com";

fn config(toml_text: &str) -> Result<ConsoleConfig> {
    Ok(toml::from_str(toml_text)?)
}

fn parts(listen: &str) -> Result<ConsoleParts> {
    Ok(ConsoleParts {
        listen: listen.parse::<SocketAddr>()?,
        directory: open_directory("memory")?,
        registry: Arc::new(MemoryRegistry::new()),
        role_groups: BTreeMap::new(),
        audit: None,
        audit_dir: None,
        route_rules: Vec::new(),
        policy: None,
    })
}

fn console() -> Result<Router> {
    let config = config(&format!(
        "origin = {ORIGIN:?}\nbootstrap_user = \"alice\"\nbootstrap_token_sha256 = \"{}\"\n",
        "ab".repeat(32)
    ))?;
    Ok(Console::new(config, parts("127.0.0.1:9443")?)?.router())
}

async fn call(router: &Router, request: Request<Body>) -> Result<(Response<Body>, Vec<u8>)> {
    let response = router.clone().call(request).await?;
    let (head, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes().to_vec();
    Ok((Response::from_parts(head, Body::empty()), bytes))
}

fn post_json(path: &str, origin: Option<&str>, body: &str) -> Result<Request<Body>> {
    let mut builder = Request::post(path).header("content-type", "application/json");
    if let Some(origin) = origin {
        builder = builder.header("origin", origin);
    }
    Ok(builder.body(Body::from(body.to_owned()))?)
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn console_settings_refuse_insecure_or_incomplete_origins() -> Result<()> {
    let refused = |text: &str, listen: &str| -> Result<bool> {
        Ok(Console::new(config(text)?, parts(listen)?).is_err())
    };
    ensure!(refused(
        "insecure_cookies_on_loopback = true",
        "0.0.0.0:9443"
    )?);
    ensure!(refused("", "127.0.0.1:9443")?, "an origin is required");
    ensure!(refused(
        "origin = \"http://admin.example.com\"",
        "127.0.0.1:9443"
    )?);
    ensure!(refused(
        "origin = \"https://admin.example.com/console\"",
        "127.0.0.1:9443"
    )?);
    ensure!(
        refused(
            &format!(
                "origin = {ORIGIN:?}\nbootstrap_token_sha256 = \"{}\"",
                "ab".repeat(32)
            ),
            "127.0.0.1:9443"
        )?,
        "a bootstrap token needs its user"
    );
    ensure!(refused(
        &format!("origin = {ORIGIN:?}\nidle_timeout_secs = 0"),
        "127.0.0.1:9443"
    )?);
    let loopback = Console::new(
        config("insecure_cookies_on_loopback = true")?,
        parts("127.0.0.1:9443")?,
    )?;
    ensure!(loopback.origin() == "http://localhost:9443");
    Ok(())
}

#[tokio::test]
async fn console_pages_send_the_anonymous_to_sign_in_with_a_strict_csp() -> Result<()> {
    let router = console()?;
    let (response, _) = call(
        &router,
        Request::get("/console/devices").body(Body::empty())?,
    )
    .await?;
    ensure!(
        response.status() == StatusCode::SEE_OTHER,
        "{}",
        response.status()
    );
    ensure!(response.headers()["location"] == "/console/sign-in");
    ensure!(response.headers()["content-security-policy"] == CSP);
    ensure!(response.headers()["x-frame-options"] == "DENY");
    let (page, body) = call(
        &router,
        Request::get("/console/sign-in").body(Body::empty())?,
    )
    .await?;
    ensure!(page.status() == StatusCode::OK);
    let html = String::from_utf8(body)?;
    ensure!(
        !html.contains("<script>") && html.contains("src=\"/console/static/console.js\""),
        "no inline script: {html}"
    );
    let (script, _) = call(
        &router,
        Request::get("/console/static/console.js").body(Body::empty())?,
    )
    .await?;
    ensure!(
        script.headers()["content-type"]
            .to_str()?
            .starts_with("text/javascript")
    );
    Ok(())
}

#[tokio::test]
async fn console_ceremonies_check_origin_challenge_and_token() -> Result<()> {
    let router = console()?;
    // No Origin, or another origin: refused.
    for origin in [None, Some("https://evil.example")] {
        let (response, body) = call(
            &router,
            post_json("/console/api/sign-in/options", origin, "{}")?,
        )
        .await?;
        ensure!(response.status() == StatusCode::FORBIDDEN && error_code(&body) == "csrf_origin");
    }
    let (response, body) = call(
        &router,
        post_json("/console/api/sign-in/options", Some(ORIGIN), "{}")?,
    )
    .await?;
    ensure!(response.status() == StatusCode::OK);
    let options: Value = serde_json::from_slice(&body)?;
    ensure!(
        options["public_key"]["rpId"] == "admin.example.com",
        "{options}"
    );
    ensure!(options["public_key"]["userVerification"] == "required");
    // An unknown challenge, an unknown registration token.
    let (response, body) = call(
        &router,
        post_json(
            "/console/api/sign-in",
            Some(ORIGIN),
            r#"{"challenge_id":"nope","credential_id":"AA","client_data_json":"AA","authenticator_data":"AA","signature":"AA"}"#,
        )?,
    )
    .await?;
    ensure!(
        response.status() == StatusCode::UNAUTHORIZED && error_code(&body) == "challenge_unknown"
    );
    let (response, body) = call(
        &router,
        post_json(
            "/console/api/register/options",
            Some(ORIGIN),
            r#"{"token":"guess"}"#,
        )?,
    )
    .await?;
    ensure!(response.status() == StatusCode::FORBIDDEN && error_code(&body) == "token_invalid");
    // A form POST without a session.
    let request = Request::post("/console/devices/revoke")
        .header("origin", ORIGIN)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", "hwsign_console=forged")
        .body(Body::from("csrf=x&device=d"))?;
    let (response, body) = call(&router, request).await?;
    let html = String::from_utf8(body).context("html")?;
    ensure!(
        response.status() == StatusCode::UNAUTHORIZED
            && html.contains("data-code=\"not_signed_in\""),
        "{html}"
    );
    Ok(())
}
