//! Dates in `X-Hws-Date`: February has 29 days only in leap years, every accepted date maps to
//! the instant a plain day count gives, and each field is refused one past its last value.

use hwsign_proto::SigningTime;

#[test]
fn february_29_exists_only_in_leap_years() {
    // 2026 is not a leap year: the day after 2026-02-28 is 2026-03-01.
    assert!(SigningTime::parse_amz_date("20260229T000000Z").is_err());
    assert!(SigningTime::parse_rfc3339_utc("2026-02-29T00:00:00Z").is_err());
    assert!(SigningTime::parse_amz_date("21000229T000000Z").is_err());
    let march_first = SigningTime::parse_amz_date("20260301T000000Z").map(SigningTime::unix);
    assert_eq!(march_first, Ok(1_772_323_200));
    assert_eq!(
        SigningTime::from_unix(1_772_323_200).date_stamp(),
        "20260301"
    );
    // 2028 and 2000 are.
    assert!(SigningTime::parse_amz_date("20280229T000000Z").is_ok());
    assert!(SigningTime::parse_amz_date("20000229T000000Z").is_ok());
}

/// Days in `month` of `year`, counted the plain way (an oracle independent of the crate's
/// arithmetic).
fn month_length(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][(month - 1) as usize]
}

/// Every date the wire format accepts, 1970-01-01 to 9999-12-31, walked one day at a time from
/// the epoch: each date every 13th day (and every day of the years around the 400-year cycle
/// boundaries 2000 and 2400 and of the first and last years) parses to the instant the walk
/// counted, at a time of day that changes from day to day, and formats back to the same text.
#[test]
fn every_accepted_date_maps_to_the_instant_a_day_count_gives() {
    let (mut year, mut month, mut day) = (1970i64, 1i64, 1i64);
    let mut days = 0i64;
    let mut checked = 0u32;
    loop {
        let every_day = matches!(year, 1970 | 1999..=2001 | 2099..=2101 | 2399..=2401 | 9999);
        if every_day || days % 13 == 0 {
            let secs_of_day = (days * 7_919 + 3_601) % 86_400;
            let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
            let text = format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}Z");
            let parsed = SigningTime::parse_amz_date(&text);
            assert_eq!(
                parsed.map(SigningTime::unix),
                Ok(days * 86_400 + secs_of_day),
                "{text}"
            );
            let time = SigningTime::from_unix(days * 86_400 + secs_of_day);
            assert_eq!(time.to_amz_date(), text);
            assert_eq!(time.date_stamp(), text[..8]);
            assert_eq!(
                time.to_rfc3339(),
                format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
            );
            checked += 1;
        }
        if year == 9999 && month == 12 && day == 31 {
            break;
        }
        day += 1;
        days += 1;
        if day > month_length(year, month) {
            day = 1;
            month += 1;
            if month > 12 {
                month = 1;
                year += 1;
            }
        }
    }
    assert!(checked > 200_000, "{checked}");
}

/// The edges of each field of `YYYYMMDDTHHMMSSZ`: the last valid value passes, the next one is
/// refused, and so is anything before 1970 or after 9999.
#[test]
fn each_date_field_is_refused_one_past_its_last_value() {
    for good in [
        "19700101T000000Z",
        "99991231T235959Z",
        "20261231T235959Z",
        "20260131T000000Z",
        "20260430T000000Z",
        "20260228T000000Z",
        "20240229T000000Z",
        "24000229T000000Z",
    ] {
        assert!(SigningTime::parse_amz_date(good).is_ok(), "{good}");
    }
    for bad in [
        "19691231T235959Z",
        "00000101T000000Z",
        "20260001T000000Z",
        "20261301T000000Z",
        "20260100T000000Z",
        "20260132T000000Z",
        "20260431T000000Z",
        "20260229T000000Z",
        "21000229T000000Z",
        "20260101T240000Z",
        "20260101T006000Z",
        "20260101T000060Z",
        "20260101 000000Z",
        "20260101T000000 ",
        "2026010T1000000Z",
        "20260101T0000000Z",
        "2026a101T000000Z",
        "20260101T00000aZ",
    ] {
        assert!(SigningTime::parse_amz_date(bad).is_err(), "{bad}");
    }
    assert_eq!(
        SigningTime::parse_rfc3339_utc("2026-12-01T08:30:15Z").map(SigningTime::unix),
        SigningTime::parse_amz_date("20261201T083015Z").map(SigningTime::unix)
    );
    // Instants before the epoch still format (the verifier's clock arithmetic may produce them).
    assert_eq!(SigningTime::from_unix(-1).to_amz_date(), "19691231T235959Z");
}
