//! Seconds since the Unix epoch: the verifier's one conversion from [`SystemTime`].

use std::time::{SystemTime, UNIX_EPOCH};

/// `time` in whole seconds since the epoch (saturating far in the future); `None` before 1970,
/// which only a broken clock reports.
pub(crate) fn seconds(time: SystemTime) -> Option<i64> {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .map(|since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

/// `time` in seconds since the epoch, 0 before 1970: for records and timestamps.
/// Decisions that depend on the time use [`seconds`] and refuse on `None`.
pub(crate) fn seconds_or_zero(time: SystemTime) -> i64 {
    seconds(time).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn before_the_epoch_is_none() {
        assert_eq!(seconds(UNIX_EPOCH + Duration::from_secs(42)), Some(42));
        assert_eq!(seconds(UNIX_EPOCH - Duration::from_secs(1)), None);
    }
}
