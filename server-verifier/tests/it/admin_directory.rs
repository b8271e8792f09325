//! The `Directory` trait's contract, run on every implementation (memory, SQLite in a temp
//! file opened twice, and with the `postgres` feature a real PostgreSQL connected to twice, the
//! way two replicas share them): users and groups, device owners, bounded
//! sessions, force-logout records by scope, single-use recovery grants.

use std::sync::Arc;

use anyhow::{Result, ensure};
use hwsign_verifier::directory::{
    Directory, DirectoryError, Group, MemoryDirectory, RecoveryGrant, Session, SessionEnd,
    SessionLimits, SessionRef, SessionScope, SqliteDirectory, User, principal_of,
};

/// One implementation under test: its name, a writer, a reader (for SQLite and PostgreSQL a
/// second connection to the same store, as another replica would hold), and what to keep alive
/// (the temp dir, the database server).
type UnderTest = (
    &'static str,
    Arc<dyn Directory>,
    Arc<dyn Directory>,
    Option<Box<dyn std::any::Any>>,
);

/// Each implementation.
fn directories() -> Result<Vec<UnderTest>> {
    let memory: Arc<dyn Directory> = Arc::new(MemoryDirectory::default());
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("verifier.db");
    let sqlite: Arc<dyn Directory> = Arc::new(SqliteDirectory::open(&path)?);
    let sqlite_other: Arc<dyn Directory> = Arc::new(SqliteDirectory::open(&path)?);
    #[allow(unused_mut)]
    let mut all: Vec<UnderTest> = vec![
        ("memory", Arc::clone(&memory), memory, None),
        ("sqlite", sqlite, sqlite_other, Some(Box::new(dir))),
    ];
    #[cfg(feature = "postgres")]
    {
        use hwsign_verifier::directory::PostgresDirectory;
        let pg = hwsign_test_support::postgres::Postgres::start()?;
        let url = pg.url();
        let postgres: Arc<dyn Directory> = Arc::new(PostgresDirectory::connect(&url)?);
        let postgres_other: Arc<dyn Directory> = Arc::new(PostgresDirectory::connect(&url)?);
        all.push(("postgres", postgres, postgres_other, Some(Box::new(pg))));
    }
    Ok(all)
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

fn session(id: &str, device: &str, user: Option<&str>, issued: i64, seen: i64) -> Session {
    Session {
        id: id.to_owned(),
        key_id: format!("hk1_{device}"),
        device: device.to_owned(),
        user_id: user.map(str::to_owned),
        audience: "api".to_owned(),
        delegated: true,
        issued_unix: issued,
        expires_unix: issued + 900,
        last_seen_unix: seen,
        source_address: Some("127.0.0.1".to_owned()),
        user_agent: Some("test/1".to_owned()),
    }
}

fn ids(sessions: &[Session]) -> Vec<&str> {
    let mut ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn admin_directory_users_groups_and_device_owners() -> Result<()> {
    for (name, dir, other, _keep) in directories()? {
        dir.create_user(&user("u1", "alice@example.com"))?;
        dir.create_user(&user("u2", "bob@example.com"))?;
        // Names are unique case-insensitively; ids are unique.
        let dup = dir.create_user(&user("u3", "ALICE@example.com"));
        ensure!(
            matches!(dup, Err(DirectoryError::Conflict(_))),
            "{name}: {dup:?}"
        );
        ensure!(matches!(
            dir.create_user(&user("u1", "carol")),
            Err(DirectoryError::Conflict(_))
        ));
        ensure!(
            other.user_by_name("Alice@Example.com")?.map(|u| u.id) == Some("u1".into()),
            "{name}"
        );
        let mut bob = other
            .user("u2")?
            .ok_or_else(|| anyhow::anyhow!("{name}: no bob"))?;
        bob.active = false;
        other.replace_user(&bob)?;
        ensure!(dir.user("u2")?.is_some_and(|u| !u.active), "{name}");
        ensure!(matches!(
            dir.replace_user(&user("nobody", "x")),
            Err(DirectoryError::NotFound(_))
        ));
        ensure!(
            dir.list_users()?
                .iter()
                .map(|u| u.id.as_str())
                .collect::<Vec<_>>()
                == ["u1", "u2"],
            "{name}: users in creation order"
        );

        let group = Group {
            id: "g1".into(),
            display_name: "hwsign-operators".into(),
            external_id: None,
            members: vec!["u2".into(), "u1".into()],
            created_unix: 1,
            updated_unix: 1,
        };
        dir.create_group(&group)?;
        let mut unknown = group.clone();
        unknown.id = "g2".into();
        unknown.display_name = "other".into();
        unknown.members = vec!["ghost".into()];
        ensure!(
            matches!(dir.create_group(&unknown), Err(DirectoryError::NotFound(_))),
            "{name}"
        );
        ensure!(other.groups_of("u1")? == ["hwsign-operators"], "{name}");
        ensure!(
            other
                .group("g1")?
                .is_some_and(|g| g.members == ["u1", "u2"]),
            "{name}"
        );

        dir.assign_device("dev-1", "u1")?;
        dir.assign_device("dev-2", "u1")?;
        ensure!(matches!(
            dir.assign_device("dev-3", "ghost"),
            Err(DirectoryError::NotFound(_))
        ));
        ensure!(other.devices_of("u1")? == ["dev-1", "dev-2"], "{name}");
        dir.assign_device("dev-2", "u2")?;
        ensure!(
            other.device_owner("dev-2")?.as_deref() == Some("u2"),
            "{name}"
        );
        // What policies take: the device's active user and their groups.
        let (owner, groups) = principal_of(other.as_ref(), "dev-1")?
            .ok_or_else(|| anyhow::anyhow!("{name}: dev-1 has no principal"))?;
        ensure!(owner.id == "u1" && groups == ["hwsign-operators"], "{name}");
        ensure!(
            principal_of(other.as_ref(), "dev-2")?.is_none(),
            "{name}: bob is inactive"
        );
        ensure!(
            principal_of(other.as_ref(), "dev-9")?.is_none(),
            "{name}: no owner"
        );

        // Deleting a user drops their memberships and device assignments.
        ensure!(dir.delete_user("u1")?, "{name}");
        ensure!(!dir.delete_user("u1")?, "{name}");
        ensure!(other.device_owner("dev-1")?.is_none(), "{name}");
        ensure!(
            other.group("g1")?.is_some_and(|g| g.members == ["u2"]),
            "{name}"
        );
        ensure!(
            dir.delete_group("g1")? && other.groups_of("u2")?.is_empty(),
            "{name}"
        );
    }
    Ok(())
}

#[test]
fn admin_directory_sessions_are_bounded_per_device_and_in_all() -> Result<()> {
    let limits = SessionLimits {
        max_per_device: 2,
        max_sessions: 3,
        touch_interval_secs: 60,
    };
    for (name, dir, other, _keep) in directories()? {
        dir.touch_session(&session("s1", "d1", None, 100, 100), &limits)?;
        dir.touch_session(&session("s2", "d1", None, 100, 101), &limits)?;
        // A third session of d1 drops d1's least recently seen.
        dir.touch_session(&session("s3", "d1", None, 100, 102), &limits)?;
        ensure!(ids(&other.sessions(0)?) == ["s2", "s3"], "{name}");
        // Updating a known session adds nothing.
        dir.touch_session(&session("s2", "d1", None, 100, 110), &limits)?;
        ensure!(other.sessions(0)?.len() == 2, "{name}");
        // The table is full at 3: a new one drops the least recently seen overall (s3).
        dir.touch_session(&session("s4", "d2", None, 100, 103), &limits)?;
        dir.touch_session(&session("s5", "d3", None, 100, 104), &limits)?;
        ensure!(ids(&other.sessions(0)?) == ["s2", "s4", "s5"], "{name}");
        // Most recently seen first; expired ones are not listed.
        ensure!(other.sessions(0)?[0].id == "s2", "{name}");
        ensure!(other.sessions(100 + 901)?.is_empty(), "{name}");
    }
    Ok(())
}

#[test]
fn admin_directory_force_logout_ends_sessions_by_scope() -> Result<()> {
    let limits = SessionLimits::default();
    for (name, dir, other, _keep) in directories()? {
        let refs = [
            ("s1", "d1", Some("u1"), 100),
            ("s2", "d1", Some("u1"), 200),
            ("s3", "d2", Some("u1"), 100),
            ("s4", "d3", Some("u2"), 100),
        ];
        for (id, device, user, issued) in refs {
            dir.touch_session(&session(id, device, user, issued, issued), &limits)?;
        }
        let ended = |id: &str| -> Result<bool> {
            let (id, device, user, issued) = refs
                .iter()
                .copied()
                .find(|r| r.0 == id)
                .ok_or_else(|| anyhow::anyhow!("no {id}"))?;
            Ok(other.session_ended(&SessionRef {
                id,
                device,
                user_id: user,
                issued_unix: issued,
            })?)
        };
        let end = |scope: SessionScope, at: i64| SessionEnd {
            scope,
            ended_unix: at,
            keep_until_unix: at + 3600,
        };
        ensure!(!ended("s1")? && !ended("s4")?, "{name}");
        ensure!(dir.end_sessions(&end(SessionScope::Session("s1".into()), 150), 150)? == 1);
        ensure!(ended("s1")? && !ended("s2")?, "{name}: one session");
        // A device's sessions issued up to the time; a later one survives.
        dir.end_sessions(&end(SessionScope::Device("d1".into()), 150), 150)?;
        ensure!(
            !ended("s2")?,
            "{name}: s2 was issued after the device logout"
        );
        // A user's sessions on every device.
        dir.end_sessions(&end(SessionScope::User("u1".into()), 250), 250)?;
        ensure!(
            ended("s2")? && ended("s3")? && !ended("s4")?,
            "{name}: user"
        );
        ensure!(
            ids(&other.sessions(0)?) == ["s4"],
            "{name}: ended sessions are unlisted"
        );
        // Everything issued before a time.
        dir.end_sessions(&end(SessionScope::All, 99), 260)?;
        ensure!(!ended("s4")?, "{name}: issued after the cut");
        dir.end_sessions(&end(SessionScope::All, 100), 260)?;
        ensure!(ended("s4")?, "{name}: all");
        // Records are forgotten once every session they end has expired.
        dir.end_sessions(&end(SessionScope::Session("zz".into()), 10_000), 10_000)?;
        ensure!(!ended("s4")?, "{name}: old records dropped");
    }
    Ok(())
}

#[test]
fn admin_directory_recovery_grants_are_single_use() -> Result<()> {
    for (name, dir, other, _keep) in directories()? {
        dir.create_user(&user("u1", "alice"))?;
        let grant = RecoveryGrant {
            token_id: "tok1".into(),
            user_id: "u1".into(),
            issued_by: "hk1_admin".into(),
            issued_unix: 100,
            expires_unix: 1000,
            used_by_device: None,
        };
        dir.put_recovery(&grant)?;
        ensure!(
            matches!(dir.put_recovery(&grant), Err(DirectoryError::Conflict(_))),
            "{name}"
        );
        ensure!(other.recovery("tok1")? == Some(grant.clone()), "{name}");
        ensure!(other.use_recovery("tok1", "dev-1")?, "{name}: first use");
        ensure!(
            !dir.use_recovery("tok1", "dev-2")?,
            "{name}: second use refused"
        );
        ensure!(
            dir.recovery("tok1")?
                .and_then(|g| g.used_by_device)
                .as_deref()
                == Some("dev-1"),
            "{name}"
        );
        ensure!(matches!(
            dir.use_recovery("nope", "d"),
            Err(DirectoryError::NotFound(_))
        ));
    }
    Ok(())
}
