//! Clock info across TPM restarts and a rollback of the TPM state (restoring an old copy, as an
//! attacker with the disk image of a software TPM could).

use crate::attestation_support;

use std::time::SystemTime;

use anyhow::Result;
use attestation_support::{TpmRig, nonce};
use hwsign_verifier::attestation::clock::ClockError;
use hwsign_verifier::attestation::{AttestationError, AttestedKey, ClockState, verify_evidence};

fn attest(
    rig: &TpmRig,
    previous: Option<ClockState>,
) -> Result<Result<AttestedKey, AttestationError>> {
    let nonce = nonce()?;
    let evidence = rig.evidence(&nonce)?;
    Ok(verify_evidence(
        &evidence,
        &nonce,
        &rig.anchors()?,
        SystemTime::now(),
        previous,
    ))
}

#[test]
fn restarts_move_forward_and_a_restored_state_is_refused() -> Result<()> {
    let mut rig = TpmRig::new()?;
    let first = attest(&rig, None)??.clock;

    // Same boot: clock moves on.
    let again = attest(&rig, Some(first))??.clock;
    assert_eq!(again.reset_count, first.reset_count);
    assert!(again.clock >= first.clock);

    let snapshot = rig.tpm.snapshot_state()?;
    rig.tpm.restart()?;
    rig.tpm.restart()?;
    let after_reboots = attest(&rig, Some(again))??.clock;
    assert!(after_reboots.reset_count > again.reset_count);

    // Back to the copy taken before the reboots: resetCount is lower than recorded.
    rig.tpm.restore_state(&snapshot)?;
    let rolled_back = attest(&rig, Some(after_reboots))?;
    assert!(
        matches!(
            rolled_back,
            Err(AttestationError::Clock(
                ClockError::ResetCountRollback { .. }
            ))
        ),
        "{rolled_back:?}"
    );
    // A verifier that never saw the later state sees nothing backwards, but the copy was taken
    // from a running TPM (like a disk image of a live software TPM), so the clock is not safe.
    let result = attest(&rig, Some(first))?;
    assert!(
        matches!(result, Err(AttestationError::ClockNotSafe)),
        "{result:?}"
    );
    Ok(())
}
