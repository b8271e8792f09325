//! Signed policy bundles, reloads, `source_ip` and the principal's user and groups, through the
//! library: bundles are made with GNU `tar` and signed with `openssl dgst -sha256 -sign` on a
//! P-256 key, which writes the same DER ECDSA signature over SHA-256 that
//! `cosign sign-blob --key` writes (cosign base64-encodes it into the `.sig` file; so do we).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_verifier::policy::{
    BundleError, DeviceOwner, PolicyEngine, PolicyError, PolicyGate, PolicyRequest,
};
use hwsign_verifier::{MemoryRegistry, PolicySettings, RegisteredKey, RejectCode};

const ALLOW_ALL: &str = r#"
@id("allow-all")
permit(principal, action, resource);
"#;

const FORBID_ADMIN: &str = r#"
@id("forbid-admin")
forbid(principal, action, resource in Hws::Route::"/v1/admin");
"#;

/// Valid Cedar, invalid against the schema (`context.levle`).
const SCHEMA_INVALID: &str = r#"
@id("typo")
permit(principal, action, resource)
when { context.levle == "tpm" };
"#;

fn run(command: &mut Command) -> Result<Vec<u8>> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

/// A P-256 key pair made by openssl: (private key PEM, public key PEM).
fn openssl_key(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    run(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&private))?;
    run(Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public))?;
    Ok((private, public))
}

/// `tar -cf bundle -C src .` of `files` (GNU tar: `./name` entries and a `./` entry).
fn make_bundle(dir: &Path, bundle: &Path, files: &[(&str, &str)]) -> Result<()> {
    let src = tempfile::tempdir_in(dir)?;
    for (name, text) in files {
        std::fs::write(src.path().join(name), text)?;
    }
    // Written next to the target and renamed over it, as a deploy would.
    let staging = bundle.with_extension("tmp");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&staging)
        .arg("-C")
        .arg(src.path())
        .arg("."))?;
    std::fs::rename(&staging, bundle)?;
    Ok(())
}

/// `cosign sign-blob --key`'s signature, made with openssl: base64 of the DER ECDSA signature
/// over SHA-256 of the file.
fn sign_bundle(bundle: &Path, key: &Path) -> Result<()> {
    let der = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg(bundle))?;
    let signature = bundle.with_extension("tar.sig.tmp");
    std::fs::write(
        &signature,
        base64::engine::general_purpose::STANDARD.encode(der),
    )?;
    std::fs::rename(&signature, sig_path(bundle))?;
    Ok(())
}

fn sig_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

struct Fixture {
    dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
    bundle: PathBuf,
}

impl Fixture {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (key, public) = openssl_key(dir.path(), "cosign")?;
        let bundle = dir.path().join("policies.tar");
        Ok(Self {
            dir,
            key,
            public,
            bundle,
        })
    }

    /// Writes and signs a bundle of `files`.
    fn publish(&self, files: &[(&str, &str)]) -> Result<()> {
        make_bundle(self.dir.path(), &self.bundle, files)?;
        sign_bundle(&self.bundle, &self.key)
    }

    fn settings(&self) -> PolicySettings {
        PolicySettings::bundle(&self.bundle, &self.public)
    }
}

fn bundle_error(result: Result<PolicyEngine, PolicyError>) -> Result<BundleError> {
    match result {
        Err(PolicyError::Bundle(error)) => Ok(error),
        Err(other) => bail!("refused, but not as a bundle: {other}"),
        Ok(_) => bail!("a bad bundle was loaded"),
    }
}

fn software_key() -> Result<RegisteredKey> {
    let signing = p256::ecdsa::SigningKey::from_slice(&[7u8; 32])?;
    let public = PublicKey::from_verifying_key(*signing.verifying_key())?;
    Ok(RegisteredKey::new(public, "laptop", KeyLevel::Software, 0))
}

fn request<'a>(key: &'a RegisteredKey, method: &'a str, path: &'a str) -> PolicyRequest<'a> {
    PolicyRequest {
        key,
        device: None,
        facts: None,
        method,
        path,
        delegated: false,
        now_unix: 1_800_000_000,
        source_ip: None,
        owner: None,
        signature: Default::default(),
    }
}

/// Whether the gate lets `GET path` through for `key`; `Err` for any refusal other than
/// `policy_denied`.
fn gate_allows(gate: &PolicyGate, key: &RegisteredKey, path: &str) -> Result<bool> {
    let registry = MemoryRegistry::new();
    let Some(route) = gate.route("GET", path) else {
        bail!("{path} is not covered");
    };
    match gate.check(&registry, key, &route, false, 1_800_000_000, None) {
        Ok(()) => Ok(true),
        Err(rejection) if rejection.code() == RejectCode::PolicyDenied => Ok(false),
        Err(rejection) => bail!("{path}: refused with {}", rejection.code()),
    }
}

/// A bundle signed with the configured key loads, and its policies decide; an unsigned one,
/// one signed with another key, one changed after signing, one with a malformed signature and
/// one that is signed but invalid against the schema are each refused with their own error.
#[test]
fn policy_bundle_signed_like_cosign_loads_and_bad_bundles_are_refused() -> Result<()> {
    let fixture = Fixture::new()?;
    fixture.publish(&[
        ("00-all.cedar", ALLOW_ALL),
        ("10-admin.cedar", FORBID_ADMIN),
    ])?;
    let engine = PolicyEngine::load(&fixture.settings())?;
    assert_eq!(engine.policy_ids(), ["allow-all", "forbid-admin"]);
    let key = software_key()?;
    assert!(engine.decide(&request(&key, "GET", "/v1/items"))?.allowed);
    let admin = engine.decide(&request(&key, "GET", "/v1/admin/keys"))?;
    assert!(!admin.allowed);
    assert_eq!(admin.determining, ["forbid-admin"]);

    // Unsigned: no signature file.
    std::fs::remove_file(sig_path(&fixture.bundle))?;
    let error = bundle_error(PolicyEngine::load(&fixture.settings()))?;
    assert!(matches!(error, BundleError::Unsigned { .. }), "{error:?}");

    // Signed with another key.
    let (other_key, _) = openssl_key(fixture.dir.path(), "other")?;
    sign_bundle(&fixture.bundle, &other_key)?;
    let error = bundle_error(PolicyEngine::load(&fixture.settings()))?;
    assert!(matches!(error, BundleError::BadSignature), "{error:?}");

    // Changed after signing: a policy replaced, the old signature kept.
    fixture.publish(&[
        ("00-all.cedar", ALLOW_ALL),
        ("10-admin.cedar", FORBID_ADMIN),
    ])?;
    let signature = std::fs::read(sig_path(&fixture.bundle))?;
    make_bundle(
        fixture.dir.path(),
        &fixture.bundle,
        &[("00-all.cedar", ALLOW_ALL), ("10-admin.cedar", "")],
    )?;
    std::fs::write(sig_path(&fixture.bundle), &signature)?;
    let error = bundle_error(PolicyEngine::load(&fixture.settings()))?;
    assert!(matches!(error, BundleError::BadSignature), "{error:?}");
    // One byte appended.
    fixture.publish(&[("00-all.cedar", ALLOW_ALL)])?;
    let mut bytes = std::fs::read(&fixture.bundle)?;
    bytes.push(0);
    std::fs::write(&fixture.bundle, bytes)?;
    let error = bundle_error(PolicyEngine::load(&fixture.settings()))?;
    assert!(matches!(error, BundleError::BadSignature), "{error:?}");

    // A signature file that is not base64.
    fixture.publish(&[("00-all.cedar", ALLOW_ALL)])?;
    std::fs::write(sig_path(&fixture.bundle), "not a signature!")?;
    let error = bundle_error(PolicyEngine::load(&fixture.settings()))?;
    assert!(
        matches!(error, BundleError::MalformedSignature { .. }),
        "{error:?}"
    );

    // Signed, but invalid against the schema: the file, line and reason.
    fixture.publish(&[
        ("00-all.cedar", ALLOW_ALL),
        ("20-typo.cedar", SCHEMA_INVALID),
    ])?;
    match PolicyEngine::load(&fixture.settings()) {
        Err(PolicyError::Invalid(issues)) => {
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].file, "20-typo.cedar");
            assert_eq!(issues[0].line, Some(4));
            assert!(issues[0].reason.contains("levle"), "{}", issues[0].reason);
        }
        Err(other) => bail!("refused, but not as invalid: {other}"),
        Ok(_) => bail!("a schema-invalid bundle was loaded"),
    }

    // A key that is not a P-256 public key.
    std::fs::write(
        &fixture.public,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )?;
    let error = bundle_error(PolicyEngine::load(&fixture.settings()))?;
    assert!(matches!(error, BundleError::PublicKey { .. }), "{error:?}");
    Ok(())
}

/// A signed archive holding anything but plain top-level files is refused before a policy is
/// parsed; other regular files are ignored, as in a policy directory.
#[test]
fn policy_bundle_with_a_link_or_a_nested_file_is_refused() -> Result<()> {
    let fixture = Fixture::new()?;
    let src = tempfile::tempdir_in(fixture.dir.path())?;
    std::fs::write(src.path().join("00-all.cedar"), ALLOW_ALL)?;
    std::fs::write(src.path().join("README"), "not a policy")?;
    std::os::unix::fs::symlink("00-all.cedar", src.path().join("01-link.cedar"))?;
    run(Command::new("tar")
        .arg("-cf")
        .arg(&fixture.bundle)
        .arg("-C")
        .arg(src.path())
        .arg("."))?;
    sign_bundle(&fixture.bundle, &fixture.key)?;
    let error = bundle_error(PolicyEngine::load(&fixture.settings()))?;
    assert!(
        matches!(&error, BundleError::Entry { entry, .. } if entry.contains("01-link")),
        "{error:?}"
    );

    std::fs::remove_file(src.path().join("01-link.cedar"))?;
    std::fs::create_dir(src.path().join("nested"))?;
    std::fs::write(src.path().join("nested/02.cedar"), ALLOW_ALL)?;
    run(Command::new("tar")
        .arg("-cf")
        .arg(&fixture.bundle)
        .arg("-C")
        .arg(src.path())
        .arg("."))?;
    sign_bundle(&fixture.bundle, &fixture.key)?;
    let error = bundle_error(PolicyEngine::load(&fixture.settings()))?;
    assert!(matches!(error, BundleError::Entry { .. }), "{error:?}");

    std::fs::remove_dir_all(src.path().join("nested"))?;
    run(Command::new("tar")
        .arg("-cf")
        .arg(&fixture.bundle)
        .arg("-C")
        .arg(src.path())
        .arg("."))?;
    sign_bundle(&fixture.bundle, &fixture.key)?;
    let engine = PolicyEngine::load(&fixture.settings())?;
    assert_eq!(engine.policy_ids(), ["allow-all"]);
    Ok(())
}

/// Reloads while requests are decided on other threads: no request is refused for any other
/// reason than the policy (never `verifier_unavailable`), a bad bundle leaves the policies in
/// force (decisions unchanged, the status says the last reload failed), a good one takes
/// effect.
#[test]
fn policy_reload_keeps_answering_and_a_bad_bundle_keeps_the_last_good_policy() -> Result<()> {
    let fixture = Fixture::new()?;
    fixture.publish(&[("00-all.cedar", ALLOW_ALL)])?;
    let gate = Arc::new(PolicyGate::load(&fixture.settings())?);
    let key = Arc::new(software_key()?);
    assert!(gate_allows(&gate, &key, "/v1/admin/keys")?);

    let stop = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (gate, key, stop, decided) = (
                Arc::clone(&gate),
                Arc::clone(&key),
                Arc::clone(&stop),
                Arc::clone(&decided),
            );
            std::thread::spawn(move || -> Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    // Both good bundles allow /v1/items; a failure here is a dropped request.
                    ensure!(gate_allows(&gate, &key, "/v1/items")?, "/v1/items refused");
                    decided.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    const RELOADS: usize = 20;
    for round in 0..RELOADS {
        if round % 2 == 0 {
            fixture.publish(&[
                ("00-all.cedar", ALLOW_ALL),
                ("10-admin.cedar", FORBID_ADMIN),
            ])?;
        } else {
            fixture.publish(&[("00-all.cedar", ALLOW_ALL)])?;
        }
        gate.reload()?;
        assert_eq!(
            gate_allows(&gate, &key, "/v1/admin/keys")?,
            round % 2 == 1,
            "round {round}"
        );
    }
    // Let the workers overlap the reloads at least a little.
    let started = Instant::now();
    while decided.load(Ordering::Relaxed) < 100 && started.elapsed() < Duration::from_secs(30) {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    assert!(decided.load(Ordering::Relaxed) >= 100);
    let status = gate.reload_status();
    assert_eq!(status.reloads, RELOADS as u64);
    assert_eq!(status.generation, RELOADS as u64 + 1);
    assert!(!status.last_failed);

    // In force now: allow-all alone. A bundle signed with another key is refused…
    let (other_key, _) = openssl_key(fixture.dir.path(), "other")?;
    make_bundle(
        fixture.dir.path(),
        &fixture.bundle,
        &[
            ("00-all.cedar", ALLOW_ALL),
            ("10-admin.cedar", FORBID_ADMIN),
        ],
    )?;
    sign_bundle(&fixture.bundle, &other_key)?;
    assert!(matches!(
        gate.reload(),
        Err(PolicyError::Bundle(BundleError::BadSignature))
    ));
    // … and so is a schema-invalid one, properly signed; the old policy stays in force.
    fixture.publish(&[
        ("00-all.cedar", ALLOW_ALL),
        ("20-typo.cedar", SCHEMA_INVALID),
    ])?;
    assert!(matches!(gate.reload(), Err(PolicyError::Invalid(_))));
    assert!(gate_allows(&gate, &key, "/v1/admin/keys")?);
    let status = gate.reload_status();
    assert!(status.last_failed);
    assert_eq!(status.failed_reloads, 2);
    assert_eq!(status.generation, RELOADS as u64 + 1);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("levle")),
        "{status:?}"
    );

    // A good bundle takes effect.
    fixture.publish(&[
        ("00-all.cedar", ALLOW_ALL),
        ("10-admin.cedar", FORBID_ADMIN),
    ])?;
    gate.reload()?;
    assert!(!gate_allows(&gate, &key, "/v1/admin/keys")?);
    assert!(!gate.reload_status().last_failed);
    Ok(())
}

/// The file watch reloads a bundle replaced on disk, and ignores a bad one.
#[test]
fn policy_watch_reloads_a_replaced_bundle() -> Result<()> {
    let fixture = Fixture::new()?;
    fixture.publish(&[("00-all.cedar", ALLOW_ALL)])?;
    let gate = PolicyGate::load(&fixture.settings())?;
    let key = software_key()?;
    let _watch = gate.watch(Duration::from_millis(50))?;
    let wait_for = |generation: u64, failed: u64| -> Result<()> {
        let started = Instant::now();
        loop {
            let status = gate.reload_status();
            if status.generation >= generation && status.failed_reloads >= failed {
                return Ok(());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "no reload: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    fixture.publish(&[
        ("00-all.cedar", ALLOW_ALL),
        ("10-admin.cedar", FORBID_ADMIN),
    ])?;
    wait_for(2, 0)?;
    assert!(!gate_allows(&gate, &key, "/v1/admin/keys")?);

    // Unsigned now: refused, the forbid stays in force.
    make_bundle(
        fixture.dir.path(),
        &fixture.bundle,
        &[("00-all.cedar", ALLOW_ALL)],
    )?;
    std::fs::remove_file(sig_path(&fixture.bundle))?;
    wait_for(2, 1)?;
    assert!(gate.reload_status().last_failed);
    assert!(!gate_allows(&gate, &key, "/v1/admin/keys")?);
    Ok(())
}

const OFFICE_ONLY: &str = r#"
@id("office-network")
permit(principal, action, resource)
when { context has source_ip && context.source_ip.isInRange(ip("10.20.0.0/16")) };
"#;

/// `context.source_ip` holds the client's address when the server passes it.
#[test]
fn policy_source_ip_rule_decides_on_the_client_address() -> Result<()> {
    let engine = PolicyEngine::from_sources(&[("office.cedar".into(), OFFICE_ONLY.into())])?;
    let key = software_key()?;
    let decide = |ip: Option<&str>| -> Result<bool> {
        let mut req = request(&key, "GET", "/v1/items");
        req.source_ip = ip.map(str::parse::<IpAddr>).transpose()?;
        Ok(engine.decide(&req)?.allowed)
    };
    assert!(decide(Some("10.20.3.4"))?);
    assert!(!decide(Some("10.21.3.4"))?);
    assert!(!decide(Some("2001:db8::1"))?);
    assert!(!decide(None)?);
    Ok(())
}

const GROUP_RULES: &str = r#"
@id("admins-only")
permit(principal in Hws::Group::"admins", action, resource in Hws::Route::"/v1/admin");

@id("alice-reports")
permit(principal in Hws::User::"alice", action == Hws::Action::"GET", resource in Hws::Route::"/v1/reports");
"#;

/// The device's user and groups, when known, are the principal's parents.
#[test]
fn policy_principal_user_and_groups_come_from_the_owner() -> Result<()> {
    let engine = PolicyEngine::from_sources(&[("groups.cedar".into(), GROUP_RULES.into())])?;
    let key = software_key()?;
    let decide = |owner: Option<&DeviceOwner>, method: &str, path: &str| -> Result<bool> {
        let mut req = request(&key, method, path);
        req.owner = owner;
        Ok(engine.decide(&req)?.allowed)
    };
    let alice = DeviceOwner {
        user: Some("alice".into()),
        groups: vec!["staff".into()],
    };
    let admin = DeviceOwner {
        user: Some("bob".into()),
        groups: vec!["staff".into(), "admins".into()],
    };
    let group_only = DeviceOwner {
        user: None,
        groups: vec!["admins".into()],
    };
    assert!(!decide(None, "GET", "/v1/admin/keys")?);
    assert!(!decide(Some(&alice), "GET", "/v1/admin/keys")?);
    assert!(decide(Some(&admin), "GET", "/v1/admin/keys")?);
    assert!(decide(Some(&group_only), "POST", "/v1/admin/keys")?);
    assert!(decide(Some(&alice), "GET", "/v1/reports/q3")?);
    assert!(!decide(Some(&alice), "POST", "/v1/reports/q3")?);
    assert!(!decide(Some(&admin), "GET", "/v1/reports/q3")?);
    Ok(())
}
