//! `client-js/` in a real browser: Debian's Chromium, headless, driven by Playwright
//! (`client-js/test/browser.mjs`) with Chromium's built-in virtual authenticator (CDP `WebAuthn`
//! domain), against the real verifier: an axum app on loopback serving the test page and
//! client-js, the FIDO2 registration routes (bound to an enrollment token), and an API behind
//! `HwsignLayer`. RP ID `localhost`, origin `http://localhost:<port>` (a secure context).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Result, ensure};
use axum::Router;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use hwsign_verifier::enrollment::{EnrollmentStore, create_token};
use hwsign_verifier::webauthn::registration::{AttestationTrust, Fido2Enrollment, router};
use hwsign_verifier::webauthn::{StepUp, WebAuthnSettings};
use hwsign_verifier::{
    HwsignLayer, KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RouteRule,
    VerifiedDevice, Verifier, VerifierConfig,
};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const PAGE: &str = "<!doctype html><meta charset=utf-8><title>hwsign webauthn test</title>\
<script type=module>import * as hwsign from '/client-js/index.js'; window.hwsign = hwsign;</script>";

async fn echo(VerifiedDevice(who): VerifiedDevice) -> axum::Json<Value> {
    axum::Json(json!({ "key_id": who.key_id, "level": who.level, "delegated": who.delegated }))
}

struct App {
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

async fn start_app() -> Result<App> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let authority = format!("localhost:{port}");
    let origin = format!("http://{authority}");
    let settings = WebAuthnSettings {
        rp_id: "localhost".into(),
        origins: vec![origin.clone()],
        require_user_verification: false,
        attestation_roots: Vec::new(),
        aaguids: Vec::new(),
    };
    let registry: Arc<dyn KeyRegistry> = Arc::new(MemoryRegistry::new());
    let mut config = VerifierConfig::new("payments", [authority.as_str()]);
    config.webauthn = Some(settings.clone());
    config.route_rules = vec![RouteRule {
        step_up: Some(StepUp {
            max_age_secs: 60,
            user_verification: true,
        }),
        ..RouteRule::new("/admin/", KeyLevel::Fido2Unattested)
    }];
    let verifier = Arc::new(Verifier::new(
        config,
        Arc::clone(&registry),
        Arc::new(MemoryReplayCache::new(10_000)),
    )?);
    let dir = tempfile::tempdir()?;
    let store = EnrollmentStore::open(&dir.path().join("enroll.db"))?;
    let (_, token) = create_token(&store, "browser passkey", 600, SystemTime::now())?;
    let fido2 = Fido2Enrollment::new(store, registry, settings, AttestationTrust::default());
    let script = std::fs::read_to_string(repo().join("client-js/index.js"))?;
    let api = Router::new()
        .route("/v1/echo", post(echo))
        .route("/admin/keys/new", post(echo))
        .layer(HwsignLayer::new(verifier));
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/client-js/index.js",
            get(move || {
                let script = script.clone();
                async move { ([("content-type", "text/javascript")], script).into_response() }
            }),
        )
        .merge(router(Arc::new(fido2)))
        .merge(api);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(App {
        base: origin,
        token: token.to_string(),
        _dir: dir,
    })
}

/// Runs one scenario of `client-js/test/browser.mjs` and returns its JSON report.
async fn scenario(name: &str, user_verified: bool) -> Result<Value> {
    let app = start_app().await?;
    let script = repo().join("client-js/test/browser.mjs");
    let report = hwsign_e2e::browser::run_script(
        &repo(),
        &script,
        &[&app.base, name],
        &[
            ("HWSIGN_TOKEN", app.token.clone()),
            (
                "HWSIGN_UV",
                if user_verified { "1" } else { "0" }.to_owned(),
            ),
        ],
    )
    .await?;
    let registered = &report["registered"];
    ensure!(
        registered["keyId"]
            .as_str()
            .is_some_and(|id| id.starts_with("hk1_")),
        "registration: {registered}"
    );
    // Chromium's virtual authenticator attests with a certificate no configured root issued.
    ensure!(registered["level"] == "fido2-unattested", "{registered}");
    Ok(report)
}

fn code(answer: &Value) -> &str {
    answer["body"]["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn webauthn_browser_register_and_signed_fetch_accepted() -> Result<()> {
    let report = scenario("signed_fetch", true).await?;
    let key_id = &report["registered"]["keyId"];
    for step in ["first", "second"] {
        let answer = &report[step];
        ensure!(answer["status"] == 200, "{step}: {answer}");
        ensure!(answer["body"]["key_id"] == *key_id, "{step}: {answer}");
        ensure!(
            answer["body"]["level"] == "fido2-unattested" && answer["body"]["delegated"] == false
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn webauthn_browser_tampered_body_refused() -> Result<()> {
    let report = scenario("tampered_body", true).await?;
    let answer = &report["tampered"];
    ensure!(
        answer["status"] == 401 && code(answer) == "body_hash_mismatch",
        "{answer}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn webauthn_browser_uv_route_refused_without_user_verification() -> Result<()> {
    let report = scenario("uv_required", false).await?;
    // Without UV, an ordinary route accepts (UP is there), the step-up route with UV refuses.
    ensure!(report["plain"]["status"] == 200, "{}", report["plain"]);
    let admin = &report["admin"];
    ensure!(
        admin["status"] == 401 && code(admin) == "webauthn_user_verification",
        "{admin}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn webauthn_browser_counter_regression_refused() -> Result<()> {
    let report = scenario("counter_regression", true).await?;
    ensure!(report["first"]["status"] == 200, "{}", report["first"]);
    ensure!(report["second"]["status"] == 200, "{}", report["second"]);
    ensure!(
        report["counter_before"].as_u64().is_some_and(|n| n >= 2),
        "{}",
        report["counter_before"]
    );
    let cloned = &report["cloned"];
    ensure!(
        cloned["status"] == 401 && code(cloned) == "webauthn_counter_regressed",
        "{cloned}"
    );
    Ok(())
}
