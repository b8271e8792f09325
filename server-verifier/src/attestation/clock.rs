//! TPM clock state per device: a later attestation must not come from an earlier point in the
//! TPM's life, which is what restoring an old TPM state (or replaying an old quote) looks like.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::attest::ClockInfo;

/// The TPM clock values a verifier remembers per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClockState {
    /// TPM resets since the last TPM2_Clear.
    pub reset_count: u32,
    /// Restarts since the last reset.
    pub restart_count: u32,
    /// Milliseconds of TPM powered time.
    pub clock: u64,
}

/// A clock state that goes backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClockError {
    /// resetCount is lower than before.
    #[error("TPM resetCount went backwards ({previous} -> {presented})")]
    ResetCountRollback {
        /// Remembered value.
        previous: u32,
        /// Presented value.
        presented: u32,
    },
    /// Same resetCount, lower restartCount.
    #[error("TPM restartCount went backwards ({previous} -> {presented})")]
    RestartCountRollback {
        /// Remembered value.
        previous: u32,
        /// Presented value.
        presented: u32,
    },
    /// Same resetCount and restartCount, lower clock.
    #[error("TPM clock went backwards ({previous} -> {presented})")]
    ClockRollback {
        /// Remembered value.
        previous: u64,
        /// Presented value.
        presented: u64,
    },
}

impl From<&ClockInfo> for ClockState {
    fn from(info: &ClockInfo) -> Self {
        Self {
            reset_count: info.reset_count,
            restart_count: info.restart_count,
            clock: info.clock,
        }
    }
}

impl ClockState {
    /// Accepts `self` as following `previous`: resetCount never decreases; within one reset,
    /// restartCount never decreases; within one reset and restart, clock never decreases.
    pub fn check_after(&self, previous: &ClockState) -> Result<(), ClockError> {
        if self.reset_count < previous.reset_count {
            return Err(ClockError::ResetCountRollback {
                previous: previous.reset_count,
                presented: self.reset_count,
            });
        }
        if self.reset_count == previous.reset_count {
            if self.restart_count < previous.restart_count {
                return Err(ClockError::RestartCountRollback {
                    previous: previous.restart_count,
                    presented: self.restart_count,
                });
            }
            if self.restart_count == previous.restart_count && self.clock < previous.clock {
                return Err(ClockError::ClockRollback {
                    previous: previous.clock,
                    presented: self.clock,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: ClockState = ClockState {
        reset_count: 5,
        restart_count: 2,
        clock: 1000,
    };

    #[test]
    fn forward_states_pass() {
        for later in [
            BASE,
            ClockState {
                clock: 1001,
                ..BASE
            },
            ClockState {
                restart_count: 3,
                clock: 10,
                ..BASE
            },
            ClockState {
                reset_count: 6,
                restart_count: 0,
                clock: 0,
            },
        ] {
            assert_eq!(later.check_after(&BASE), Ok(()));
        }
    }

    #[test]
    fn backward_states_fail_with_their_reason() {
        assert!(matches!(
            ClockState {
                reset_count: 4,
                restart_count: 9,
                clock: 9999
            }
            .check_after(&BASE),
            Err(ClockError::ResetCountRollback {
                previous: 5,
                presented: 4
            })
        ));
        assert!(matches!(
            ClockState {
                restart_count: 1,
                clock: 9999,
                ..BASE
            }
            .check_after(&BASE),
            Err(ClockError::RestartCountRollback { .. })
        ));
        assert!(matches!(
            ClockState { clock: 999, ..BASE }.check_after(&BASE),
            Err(ClockError::ClockRollback { .. })
        ));
    }
}
