//! The nonces the verifier issued for re-attestation: single use, short lived, bound to the key
//! and device they were issued for, bounded in total and per device — separately for nonces
//! handed out with an `attestation_required` refusal (to a request whose signature verified)
//! and nonces anyone may ask for at `POST /hws/v1/attest/challenge`, so strangers asking for
//! nonces cannot evict or crowd out the ones signed requests were given.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::enrollment::{EnrollmentError, NONCE_LEN};

/// A nonce waiting for evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNonce {
    /// The nonce's bytes (what the quote's qualifying data must be).
    pub nonce: [u8; NONCE_LEN],
    /// The key the evidence must certify.
    pub key_id: String,
    /// The device the key belongs to.
    pub device_id: String,
    /// Last second the nonce may be redeemed.
    pub expires_unix: i64,
}

/// Who a nonce was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceOrigin {
    /// With an `attestation_required` refusal, to a request the device's key signed.
    Refusal,
    /// At the unauthenticated challenge endpoint (a device attesting on its own schedule).
    Challenge,
}

impl NonceOrigin {
    fn index(self) -> usize {
        match self {
            Self::Refusal => 0,
            Self::Challenge => 1,
        }
    }
}

/// A nonce just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedNonce {
    /// base64url without padding.
    pub nonce: String,
    /// Last second it may be redeemed.
    pub expires_unix: i64,
}

#[derive(Debug, Default)]
struct Table {
    by_nonce: HashMap<[u8; NONCE_LEN], PendingNonce>,
    /// Per device, its pending nonces oldest first.
    by_device: HashMap<String, VecDeque<[u8; NONCE_LEN]>>,
}

impl Table {
    fn remove(&mut self, nonce: &[u8; NONCE_LEN]) -> Option<PendingNonce> {
        let pending = self.by_nonce.remove(nonce)?;
        if let Some(queue) = self.by_device.get_mut(&pending.device_id) {
            queue.retain(|n| n != nonce);
            if queue.is_empty() {
                self.by_device.remove(&pending.device_id);
            }
        }
        Some(pending)
    }

    fn purge_expired(&mut self, now_unix: i64) {
        let expired: Vec<[u8; NONCE_LEN]> = self
            .by_nonce
            .iter()
            .filter(|(_, p)| p.expires_unix < now_unix)
            .map(|(n, _)| *n)
            .collect();
        for nonce in expired {
            self.remove(&nonce);
        }
    }
}

/// Issued re-attestation nonces, in memory. Shared by the verifier (which hands one out with
/// `attestation_required`) and the attest endpoint (which redeems it). A nonce is redeemable
/// only at the verifier process that issued it: behind a load balancer, route
/// `/hws/v1/attest*` and the signed API to the same instance per device, or retry (a lost
/// nonce only costs another `attestation_required`).
#[derive(Debug)]
pub struct AttestationChallenges {
    /// One table per [`NonceOrigin`].
    tables: [Mutex<Table>; 2],
    ttl_secs: i64,
    max_pending: usize,
    max_per_device: usize,
}

impl AttestationChallenges {
    /// Tables whose nonces live `ttl_secs`, at most `max_pending` at once and `max_per_device`
    /// per device, for each origin.
    pub fn new(ttl_secs: u64, max_pending: usize, max_per_device: usize) -> Self {
        Self {
            tables: [Mutex::new(Table::default()), Mutex::new(Table::default())],
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
            max_pending: max_pending.max(1),
            max_per_device: max_per_device.max(1),
        }
    }

    /// Issues a nonce for `key_id` of `device_id`. The device's oldest pending nonce of the
    /// same origin makes way when it holds its quota; `too_many_challenges` when that origin's
    /// table is full of live nonces.
    pub fn issue(
        &self,
        key_id: &str,
        device_id: &str,
        origin: NonceOrigin,
        now_unix: i64,
    ) -> Result<IssuedNonce, EnrollmentError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| EnrollmentError::Store(format!("no randomness for a nonce: {e}")))?;
        let expires_unix = now_unix.saturating_add(self.ttl_secs);
        let mut table = self.tables[origin.index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let oldest = table
            .by_device
            .get(device_id)
            .filter(|queue| queue.len() >= self.max_per_device)
            .and_then(|queue| queue.front().copied());
        if let Some(oldest) = oldest {
            table.remove(&oldest);
        }
        if table.by_nonce.len() >= self.max_pending {
            table.purge_expired(now_unix);
            if table.by_nonce.len() >= self.max_pending {
                return Err(EnrollmentError::TooManyChallenges);
            }
        }
        table.by_nonce.insert(
            nonce,
            PendingNonce {
                nonce,
                key_id: key_id.to_owned(),
                device_id: device_id.to_owned(),
                expires_unix,
            },
        );
        table
            .by_device
            .entry(device_id.to_owned())
            .or_default()
            .push_back(nonce);
        Ok(IssuedNonce {
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            expires_unix,
        })
    }

    /// Redeems `nonce` (base64url): it is gone afterwards, whatever the evidence turns out to
    /// be. `challenge_unknown` for a nonce never issued or already redeemed,
    /// `challenge_expired` for one past its lifetime.
    pub fn take(&self, nonce: &str, now_unix: i64) -> Result<PendingNonce, EnrollmentError> {
        if nonce.len() > 2 * NONCE_LEN {
            return Err(EnrollmentError::ChallengeUnknown);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|b| <[u8; NONCE_LEN]>::try_from(b).ok())
            .ok_or(EnrollmentError::ChallengeUnknown)?;
        let pending = self
            .tables
            .iter()
            .find_map(|table| {
                table
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&bytes)
            })
            .ok_or(EnrollmentError::ChallengeUnknown)?;
        if pending.expires_unix < now_unix {
            return Err(EnrollmentError::ChallengeExpired);
        }
        Ok(pending)
    }

    /// Nonces pending now, of every origin (expired ones included until purged).
    pub fn pending(&self) -> usize {
        self.tables
            .iter()
            .map(|table| {
                table
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .by_nonce
                    .len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: NonceOrigin = NonceOrigin::Challenge;

    #[test]
    fn nonces_are_single_use_and_expire() {
        let table = AttestationChallenges::new(10, 8, 2);
        let issued = table.issue("hk1_a", "tpm-a", CHALLENGE, 100).unwrap();
        assert_eq!(issued.expires_unix, 110);
        let taken = table.take(&issued.nonce, 105);
        assert!(matches!(taken, Ok(ref p) if p.key_id == "hk1_a" && p.device_id == "tpm-a"));
        assert!(matches!(
            table.take(&issued.nonce, 105),
            Err(EnrollmentError::ChallengeUnknown)
        ));
        let late = table.issue("hk1_a", "tpm-a", CHALLENGE, 100).unwrap();
        assert!(matches!(
            table.take(&late.nonce, 111),
            Err(EnrollmentError::ChallengeExpired)
        ));
        assert!(matches!(
            table.take("not base64!", 100),
            Err(EnrollmentError::ChallengeUnknown)
        ));
    }

    #[test]
    fn one_device_cannot_hold_every_slot() {
        let table = AttestationChallenges::new(10, 3, 2);
        let first = table.issue("hk1_a", "tpm-a", CHALLENGE, 0).unwrap();
        table.issue("hk1_a", "tpm-a", CHALLENGE, 0).unwrap();
        table.issue("hk1_a", "tpm-a", CHALLENGE, 0).unwrap();
        // The device's oldest nonce made way; the table still has room for another device.
        assert_eq!(table.pending(), 2);
        assert!(matches!(
            table.take(&first.nonce, 0),
            Err(EnrollmentError::ChallengeUnknown)
        ));
        table.issue("hk1_b", "tpm-b", CHALLENGE, 0).unwrap();
        assert!(matches!(
            table.issue("hk1_c", "tpm-c", CHALLENGE, 0),
            Err(EnrollmentError::TooManyChallenges)
        ));
        // Expired nonces are purged when the table is full.
        assert!(table.issue("hk1_c", "tpm-c", CHALLENGE, 11).is_ok());
        assert_eq!(table.pending(), 1);
    }

    #[test]
    fn strangers_asking_for_nonces_cannot_evict_a_refusal_nonce() {
        let table = AttestationChallenges::new(10, 2, 1);
        let refusal = table
            .issue("hk1_a", "tpm-a", NonceOrigin::Refusal, 0)
            .unwrap();
        // The challenge endpoint's quota for the device and its whole table, used up.
        table.issue("hk1_a", "tpm-a", CHALLENGE, 0).unwrap();
        table.issue("hk1_a", "tpm-a", CHALLENGE, 0).unwrap();
        table.issue("hk1_b", "tpm-b", CHALLENGE, 0).unwrap();
        assert!(matches!(
            table.issue("hk1_c", "tpm-c", CHALLENGE, 0),
            Err(EnrollmentError::TooManyChallenges)
        ));
        assert!(
            table
                .issue("hk1_c", "tpm-c", NonceOrigin::Refusal, 0)
                .is_ok()
        );
        assert!(table.take(&refusal.nonce, 1).is_ok());
    }
}
