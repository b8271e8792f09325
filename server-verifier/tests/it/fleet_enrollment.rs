//! Enrollment state shared by a fleet: the store's steps behave the same on SQLite and on a real
//! PostgreSQL, and on PostgreSQL a ceremony may move between replicas (each step on another
//! store object with its own connections); a token is spent once even when two replicas race.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use hwsign_verifier::enrollment::token::parse;
use hwsign_verifier::enrollment::{
    ChallengeState, EnrollmentError, EnrollmentStore, create_token, open_enrollment_store,
};

/// Seconds since the epoch of `time`.
fn unix(time: SystemTime) -> Result<i64> {
    Ok(i64::try_from(time.duration_since(UNIX_EPOCH)?.as_secs())?)
}

/// One ceremony whose steps alternate between `a` and `b` (the same store, or two replicas).
fn ceremony(a: &EnrollmentStore, b: &EnrollmentStore) -> Result<()> {
    let issued_at = SystemTime::now();
    let now = unix(issued_at)?;
    let (token_id, token) = create_token(a, "fleet laptop", 600, issued_at)?;
    let presented = parse(&token)?;
    assert_eq!(b.token_label(&token_id)?, "fleet laptop");
    assert!(b.list_tokens()?.iter().any(|t| t.id == token_id));

    // Another secret that still decodes: the last base64 digit of 32 bytes carries 4 bits and
    // two zero bits, so swap it between 'A' (0) and 'E' (4); 'B' would not decode at all
    // (parse refuses it), which made this test fail whenever a token ended in 'A'.
    let mut wrong = token.to_string();
    wrong.pop();
    wrong.push(if token.ends_with('A') { 'E' } else { 'A' });
    assert!(matches!(
        b.create_challenge(&parse(&wrong)?, "hk1_x", now, 60, 10, 2),
        Err(EnrollmentError::InvalidToken)
    ));

    let challenge = b.create_challenge(&presented, "hk1_x", now, 60, 10, 2)?;
    assert_eq!(challenge.state, ChallengeState::Started);
    assert_eq!(a.pending_challenges()?, 1);
    let verifying = a.begin_evidence(&challenge.id, now)?;
    assert_eq!(verifying.nonce, challenge.nonce);
    assert!(matches!(
        b.begin_evidence(&challenge.id, now),
        Err(EnrollmentError::ChallengeState)
    ));
    // The token is spent: a new start with it is refused.
    assert!(matches!(
        a.create_challenge(&presented, "hk1_x", now, 60, 10, 2),
        Err(EnrollmentError::TokenUsed)
    ));
    b.credential_issued(&challenge.id, &[7u8; 32], b"ak name", "{}")?;
    let taken = a.take_for_activation(&challenge.id, now)?;
    assert_eq!(taken.secret_sha256.as_deref(), Some(&[7u8; 32][..]));
    assert_eq!(taken.ak_name.as_deref(), Some(&b"ak name"[..]));
    assert!(matches!(
        b.take_for_activation(&challenge.id, now),
        Err(EnrollmentError::ChallengeUnknown)
    ));

    // Expired challenges are refused and forgotten; revoked tokens are invalid.
    let (_, late) = create_token(a, "late", 600, issued_at)?;
    let late = b.create_challenge(&parse(&late)?, "hk1_y", now, 1, 10, 2)?;
    assert!(matches!(
        a.begin_evidence(&late.id, now + 5),
        Err(EnrollmentError::ChallengeExpired)
    ));
    let (revoked_id, revoked) = create_token(a, "revoked", 600, issued_at)?;
    b.revoke_token(&revoked_id)?;
    assert!(matches!(
        a.create_challenge(&parse(&revoked)?, "hk1_z", now, 60, 10, 2),
        Err(EnrollmentError::InvalidToken)
    ));
    assert_eq!(a.pending_challenges()?, 0);
    Ok(())
}

#[test]
fn fleet_enrollment_store_steps_on_sqlite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("keys.db").display());
    ceremony(&open_enrollment_store(&url)?, &open_enrollment_store(&url)?)
}

#[cfg(feature = "postgres")]
#[test]
fn fleet_enrollment_store_steps_move_between_postgres_replicas() -> Result<()> {
    use std::sync::{Arc, Barrier};

    use hwsign_test_support::postgres::Postgres;

    let pg = Postgres::start()?;
    let a = Arc::new(open_enrollment_store(&pg.url())?);
    let b = Arc::new(EnrollmentStore::connect(&pg.url())?);
    ceremony(&a, &b)?;

    // Two challenges of one token, their evidence sent to two replicas at once: one ceremony
    // spends the token, the other is refused.
    let issued_at = SystemTime::now();
    let now = unix(issued_at)?;
    let (_, token) = create_token(a.as_ref(), "race", 600, issued_at)?;
    let presented = parse(&token)?;
    let first = a.create_challenge(&presented, "hk1_r", now, 60, 10, 2)?;
    let second = b.create_challenge(&presented, "hk1_r", now, 60, 10, 2)?;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [(Arc::clone(&a), first.id), (Arc::clone(&b), second.id)]
        .into_iter()
        .map(|(store, id)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                store.begin_evidence(&id, now).map(|_| ())
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.join() {
            Ok(Ok(())) => won += 1,
            Ok(Err(EnrollmentError::TokenUsed)) => {}
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
    Ok(())
}
