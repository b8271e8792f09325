//! Signing time: the compact ISO 8601 form SigV4 uses (`20150830T123600Z`), converted without a
//! calendar dependency so that `proto` stays free of I/O and of the system clock.

use std::fmt;

use crate::error::ProtoError;

/// A UTC instant with one-second resolution, as carried in the date header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SigningTime {
    unix_seconds: i64,
}

/// Latest year the wire format accepts; keeps the arithmetic far from overflow.
const MAX_YEAR: i64 = 9999;

impl SigningTime {
    /// The instant `unix_seconds` after 1970-01-01T00:00:00Z.
    pub const fn from_unix(unix_seconds: i64) -> Self {
        Self { unix_seconds }
    }

    /// Seconds since the Unix epoch.
    pub const fn unix(self) -> i64 {
        self.unix_seconds
    }

    /// `YYYYMMDD`, the date part of the credential scope.
    pub fn date_stamp(self) -> String {
        match self.amz_date_bytes() {
            Some(bytes) => ascii_string(&bytes[..8]),
            None => {
                let (y, m, d) = civil_from_days(self.unix_seconds.div_euclid(86_400));
                format!("{y:04}{m:02}{d:02}")
            }
        }
    }

    /// Whether `stamp` is this instant's [`SigningTime::date_stamp`], without building it.
    pub(crate) fn date_stamp_is(self, stamp: &str) -> bool {
        match self.amz_date_bytes() {
            Some(bytes) => stamp.as_bytes() == &bytes[..8],
            None => stamp == self.date_stamp(),
        }
    }

    /// Appends [`SigningTime::to_amz_date`] to `out`, without a temporary string.
    pub(crate) fn push_amz_date(self, out: &mut String) {
        match self.amz_date_bytes() {
            Some(bytes) => bytes.iter().for_each(|b| out.push(char::from(*b))),
            None => out.push_str(&self.to_amz_date()),
        }
    }

    /// `YYYYMMDDTHHMMSSZ` as ASCII digits, for the years the wire format carries (0–9999);
    /// `None` outside them (the `format!` paths print those).
    fn amz_date_bytes(self) -> Option<[u8; 16]> {
        let (y, m, d) = civil_from_days(self.unix_seconds.div_euclid(86_400));
        if !(0..=MAX_YEAR).contains(&y) {
            return None;
        }
        let secs_of_day = self.unix_seconds.rem_euclid(86_400);
        let mut out = *b"00000000T000000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                // 0..=9 after the remainder: the cast cannot truncate.
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, y);
        put(4, 2, m);
        put(6, 2, d);
        put(9, 2, secs_of_day / 3600);
        put(11, 2, (secs_of_day / 60) % 60);
        put(13, 2, secs_of_day % 60);
        Some(out)
    }

    /// `YYYY-MM-DDThh:mm:ssZ` (RFC 3339, UTC), for humans and for policy engines.
    pub fn to_rfc3339(self) -> String {
        let (y, m, d) = civil_from_days(self.unix_seconds.div_euclid(86_400));
        let secs_of_day = self.unix_seconds.rem_euclid(86_400);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs_of_day / 3600,
            (secs_of_day / 60) % 60,
            secs_of_day % 60
        )
    }

    /// `YYYYMMDDTHHMMSSZ`, the value of the date header.
    pub fn to_amz_date(self) -> String {
        if let Some(bytes) = self.amz_date_bytes() {
            return ascii_string(&bytes);
        }
        let secs_of_day = self.unix_seconds.rem_euclid(86_400);
        format!(
            "{}T{:02}{:02}{:02}Z",
            self.date_stamp(),
            secs_of_day / 3600,
            (secs_of_day / 60) % 60,
            secs_of_day % 60
        )
    }

    /// Parses exactly `YYYYMMDDTHHMMSSZ`; anything else (other separators, fractional seconds,
    /// time zones, impossible dates) is refused rather than interpreted.
    pub fn parse_amz_date(text: &str) -> Result<Self, ProtoError> {
        let bytes = text.as_bytes();
        let bad = || ProtoError::InvalidDate(text.chars().take(32).collect());
        if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
            return Err(bad());
        }
        let digits = |range: std::ops::Range<usize>| -> Result<i64, ProtoError> {
            let part = &bytes[range];
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            Ok(part
                .iter()
                .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0')))
        };
        let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
        let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
        if !(1970..=MAX_YEAR).contains(&year)
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(bad());
        }
        let days = days_from_civil(year, month, day);
        Ok(Self::from_unix(
            days * 86_400 + hour * 3600 + minute * 60 + second,
        ))
    }

    /// Parses RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` (the form used by test-vector contexts).
    pub fn parse_rfc3339_utc(text: &str) -> Result<Self, ProtoError> {
        let compact: String = text.chars().filter(|c| *c != '-' && *c != ':').collect();
        Self::parse_amz_date(&compact)
    }
}

impl fmt::Display for SigningTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_amz_date())
    }
}

/// A string of ASCII bytes (digits and letters here).
fn ascii_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| char::from(*b)).collect()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days/civil conversions (proleptic Gregorian calendar).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_known_instant() -> Result<(), ProtoError> {
        let t = SigningTime::parse_amz_date("20150830T123600Z")?;
        assert_eq!(t.unix(), 1_440_938_160);
        assert_eq!(t.to_amz_date(), "20150830T123600Z");
        assert_eq!(t.date_stamp(), "20150830");
        Ok(())
    }

    #[test]
    fn refuses_impossible_dates() {
        for bad in [
            "20150230T000000Z",
            "20150830T240000Z",
            "20150830T123600",
            "2015-08-30T12:36:00Z",
            "20150830t123600z",
            "+0150830T123600Z",
            "",
        ] {
            assert!(SigningTime::parse_amz_date(bad).is_err(), "{bad}");
        }
    }

    /// The digit writer and the `format!` fallback agree, years 0–9999 and outside them.
    #[test]
    fn fast_formatting_matches_format() {
        for unix in [
            -62_167_219_200, // 0000-01-01T00:00:00Z
            -62_167_219_201, // the year -1: the fallback
            -1,
            0,
            951_782_400, // 2000-02-29
            1_440_938_160,
            1_764_547_199,
            253_402_300_799, // 9999-12-31T23:59:59Z
            253_402_300_800, // 10000-01-01: the fallback
        ] {
            let t = SigningTime::from_unix(unix);
            let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
            let secs = unix.rem_euclid(86_400);
            let stamp = format!("{y:04}{m:02}{d:02}");
            let full = format!(
                "{stamp}T{:02}{:02}{:02}Z",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            );
            assert_eq!(t.date_stamp(), stamp, "{unix}");
            assert_eq!(t.to_amz_date(), full, "{unix}");
            assert!(t.date_stamp_is(&stamp), "{unix}");
            assert!(!t.date_stamp_is("20150831"), "{unix}");
            let mut pushed = String::from("x");
            t.push_amz_date(&mut pushed);
            assert_eq!(pushed, format!("x{full}"), "{unix}");
        }
    }

    #[test]
    fn leap_day_is_accepted() -> Result<(), ProtoError> {
        let t = SigningTime::parse_amz_date("20240229T235959Z")?;
        assert_eq!(t.to_amz_date(), "20240229T235959Z");
        Ok(())
    }
}
