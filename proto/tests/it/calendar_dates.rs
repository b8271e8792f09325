//! Dates in `X-Hws-Date`: February has 29 days only in leap years.

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
