//! Users and groups on the request path (docs/ADMIN.md "Users and groups in rules and
//! policies"): a route rule naming `groups`/`users`, and a Cedar policy on
//! `principal in Hws::Group::"sre"`, each letting a member through and refusing a non-member, a
//! deprovisioned user and a device with no user (`policy_denied` naming the rule or policy).

use std::sync::Arc;

use anyhow::{Result, ensure};
use hwsign_verifier::directory::{
    Directory, Group, MemoryDirectory, SessionGuard, SessionLimits, User,
};
use hwsign_verifier::{
    KeyLevel, KeyRegistry as _, MemoryRegistry, MemoryReplayCache, PolicySettings, RejectCode,
    RouteRule, Verifier, VerifierConfig,
};

use crate::verify_support::{self, SignOptions, TestKey, TestRequest, at, sign};

const HOST: &str = "api.example.com";

const POLICIES: &[(&str, &str)] = &[
    (
        "00-baseline.cedar",
        "@id(\"baseline\")\npermit(principal, action, resource);\n",
    ),
    (
        "ops.cedar",
        "@id(\"ops-sre-only\")\nforbid(principal, action, resource in Hws::Route::\"/cedar-ops\")\nunless { principal in Hws::Group::\"sre\" };\n",
    ),
];

struct People {
    verifier: Verifier,
    directory: Arc<MemoryDirectory>,
    alice: TestKey,
    bob: TestKey,
    carol: TestKey,
    dave: TestKey,
    nobody: TestKey,
    _policies: tempfile::TempDir,
}

fn user(id: &str, name: &str) -> User {
    User {
        id: id.to_owned(),
        user_name: name.to_owned(),
        display_name: None,
        external_id: None,
        active: true,
        created_unix: 1,
        updated_unix: 1,
    }
}

/// Alice and Carol in `sre`, Bob in `sales`, Dave listed by name, and a key with no user; route
/// rules on `/ops/` (group sre or user dave), `/sre-only/` (group sre), `/dave-only/` (Dave by
/// id) and `/ops/status/` (no people), and a policy on `/cedar-ops` (group sre).
fn people() -> Result<People> {
    let registry = Arc::new(MemoryRegistry::new());
    let directory = Arc::new(MemoryDirectory::default());
    let mut keys = Vec::new();
    for (seed, id, name) in [
        ("alice", Some("u-alice"), "alice@example.com"),
        ("bob", Some("u-bob"), "bob@example.com"),
        ("carol", Some("u-carol"), "carol@example.com"),
        ("dave", Some("u-dave"), "Dave@Example.com"),
        ("nobody", None, ""),
    ] {
        let key = TestKey::from_seed(seed)?;
        registry.add(key.registered(seed, KeyLevel::Software))?;
        if let Some(id) = id {
            directory.create_user(&user(id, name))?;
            // A key without a device is its own device.
            directory.assign_device(&key.id, id)?;
        }
        keys.push(key);
    }
    for (id, name, members) in [
        (
            "g-sre",
            "sre",
            vec!["u-alice".to_owned(), "u-carol".to_owned()],
        ),
        ("g-sales", "sales", vec!["u-bob".to_owned()]),
    ] {
        directory.create_group(&Group {
            id: id.into(),
            display_name: name.into(),
            external_id: None,
            members,
            created_unix: 1,
            updated_unix: 1,
        })?;
    }
    let policies = tempfile::tempdir()?;
    for (name, text) in POLICIES {
        std::fs::write(policies.path().join(name), text)?;
    }
    let mut config = VerifierConfig::new(verify_support::AUDIENCE, [HOST]);
    config.route_rules = vec![
        RouteRule {
            groups: vec!["sre".into()],
            users: vec!["dave@example.com".into()],
            ..RouteRule::new("/ops/", KeyLevel::Software)
        },
        RouteRule {
            groups: vec!["sre".into()],
            ..RouteRule::new("/sre-only/", KeyLevel::Software)
        },
        RouteRule {
            users: vec!["u-dave".into()],
            ..RouteRule::new("/dave-only/", KeyLevel::Software)
        },
        // A longer prefix without people: it decides its paths, and admits everyone.
        RouteRule::new("/ops/status/", KeyLevel::Software),
    ];
    let mut policy = PolicySettings::new(policies.path());
    policy.covers = vec!["/cedar-ops".into()];
    config.policy = Some(policy);
    let guard = Arc::new(SessionGuard::new(
        Arc::clone(&directory) as Arc<dyn Directory>,
        SessionLimits::default(),
    ));
    let verifier = Verifier::new(config, registry, Arc::new(MemoryReplayCache::new(1_000)))?
        .with_sessions(guard);
    let [alice, bob, carol, dave, nobody] =
        <[TestKey; 5]>::try_from(keys).map_err(|_| anyhow::anyhow!("five keys"))?;
    Ok(People {
        verifier,
        directory,
        alice,
        bob,
        carol,
        dave,
        nobody,
        _policies: policies,
    })
}

impl People {
    /// The verdict on a GET of `path` signed by `key`: `Ok` or the refusal's code and detail.
    fn get(&self, key: &TestKey, path: &str) -> Result<Result<(), (RejectCode, String)>> {
        let request = sign(
            key,
            &TestRequest::new("GET", path, "", HOST),
            &SignOptions::default(),
        )?;
        Ok(request
            .with_parts(|parts| self.verifier.verify(parts, &request.body_sha256(), at(0)))
            .map(|_| ())
            .map_err(|refusal| (refusal.code(), refusal.detail().into_owned())))
    }
}

fn denied(verdict: Result<(), (RejectCode, String)>, names: &str) -> Result<()> {
    match verdict {
        Err((RejectCode::PolicyDenied, detail)) if detail.contains(names) => Ok(()),
        other => anyhow::bail!("expected policy_denied naming {names:?}, got {other:?}"),
    }
}

#[test]
fn admin_people_route_rule_admits_group_members_and_listed_users_only() -> Result<()> {
    let p = people()?;
    ensure!(p.get(&p.alice, "/ops/restart")?.is_ok(), "a member of sre");
    ensure!(
        p.get(&p.dave, "/ops/restart")?.is_ok(),
        "a listed user (name case-insensitive)"
    );
    denied(p.get(&p.bob, "/ops/restart")?, "/ops/")?;
    denied(p.get(&p.nobody, "/ops/restart")?, "no active user")?;
    // Every spelling of the path is the rule's.
    denied(p.get(&p.bob, "/x/../ops/restart")?, "/ops/")?;
    // Other routes are anyone's.
    ensure!(p.get(&p.bob, "/orders")?.is_ok());
    ensure!(p.get(&p.nobody, "/orders")?.is_ok());

    // Carol is let in until she is deprovisioned, then refused at her next request.
    ensure!(p.get(&p.carol, "/ops/restart")?.is_ok());
    let mut carol = p
        .directory
        .user("u-carol")?
        .ok_or_else(|| anyhow::anyhow!("carol"))?;
    carol.active = false;
    p.directory.replace_user(&carol)?;
    denied(p.get(&p.carol, "/ops/restart")?, "no active user")?;
    // Bob joins sre: admitted at once.
    let mut sre = p
        .directory
        .group("g-sre")?
        .ok_or_else(|| anyhow::anyhow!("sre"))?;
    sre.members.push("u-bob".into());
    p.directory.replace_group(&sre)?;
    ensure!(p.get(&p.bob, "/ops/restart")?.is_ok());
    Ok(())
}

#[test]
fn admin_people_cedar_principal_is_in_its_users_groups() -> Result<()> {
    let p = people()?;
    ensure!(p.get(&p.alice, "/cedar-ops/deploy")?.is_ok(), "sre member");
    denied(p.get(&p.bob, "/cedar-ops/deploy")?, "device policy")?;
    // Dave is listed by the route rule, not in the group the policy names.
    denied(p.get(&p.dave, "/cedar-ops/deploy")?, "device policy")?;
    denied(p.get(&p.nobody, "/cedar-ops/deploy")?, "device policy")?;
    let mut carol = p
        .directory
        .user("u-carol")?
        .ok_or_else(|| anyhow::anyhow!("carol"))?;
    ensure!(p.get(&p.carol, "/cedar-ops/deploy")?.is_ok());
    carol.active = false;
    p.directory.replace_user(&carol)?;
    denied(p.get(&p.carol, "/cedar-ops/deploy")?, "device policy")?;
    Ok(())
}

/// A rule naming only groups, or only users, admits just those; a longer rule naming nobody
/// takes its paths out of the shorter rule's (the longest matching prefix decides).
#[test]
fn admin_people_rules_naming_only_groups_or_only_users_admit_just_those() -> Result<()> {
    let p = people()?;
    ensure!(p.get(&p.alice, "/sre-only/x")?.is_ok(), "sre member");
    ensure!(p.get(&p.carol, "/sre-only/x")?.is_ok(), "sre member");
    denied(p.get(&p.bob, "/sre-only/x")?, "/sre-only/")?;
    denied(p.get(&p.dave, "/sre-only/x")?, "/sre-only/")?;
    ensure!(p.get(&p.dave, "/dave-only/x")?.is_ok(), "listed by id");
    denied(p.get(&p.alice, "/dave-only/x")?, "/dave-only/")?;
    denied(p.get(&p.nobody, "/dave-only/x")?, "no active user")?;
    for key in [&p.alice, &p.bob, &p.dave, &p.nobody] {
        ensure!(p.get(key, "/ops/status/health")?.is_ok(), "{}", key.id);
    }
    denied(p.get(&p.bob, "/ops/status")?, "/ops/")?;
    // A path whose spellings fall under two rules naming people must be admitted by both.
    denied(p.get(&p.alice, "/sre-only/../dave-only/x")?, "/dave-only/")?;
    denied(p.get(&p.dave, "/sre-only/../dave-only/x")?, "/sre-only/")?;
    Ok(())
}
