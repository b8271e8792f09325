//! The `Authorization` header's bounds and character rules, each at its edge: the longest value,
//! key id, audience and signature accepted, one more refused, and the exact error a verifier
//! reports for each refusal.

use hwsign_proto::authorization::check_credential;
use hwsign_proto::limits::{MAX_AUDIENCE_LEN, MAX_AUTHORIZATION_LEN, MAX_SIGNATURE_LEN};
use hwsign_proto::{Authorization, HWS1, ProtoError};

const KEY_ID: &str = "hk1_00112233445566778899aabbccddeeff";
const DATE: &str = "20261123";
const AUDIENCE: &str = "payments";
const SIGNATURE: &str = "3006020101020101";

/// A header value with these parts, in the one spelling the parser accepts.
fn header(credential: &str, scope: &str, signed: &str, signature: &str) -> String {
    format!(
        "HWS1-ECDSA-P256-SHA256 Credential={credential}/{scope}, SignedHeaders={signed}, \
         Signature={signature}"
    )
}

fn scope(date: &str, audience: &str, terminator: &str) -> String {
    format!("{date}/{audience}/{terminator}")
}

fn with_credential(credential: &str) -> String {
    header(
        credential,
        &scope(DATE, AUDIENCE, "hws1_request"),
        "host",
        SIGNATURE,
    )
}

fn parse(value: &str) -> Result<Authorization, ProtoError> {
    Authorization::parse(value, &HWS1)
}

fn malformed(why: &'static str) -> Result<Authorization, ProtoError> {
    Err(ProtoError::MalformedAuthorization(why))
}

/// A well-formed header exactly `len` bytes long: the signed header names take up the slack.
fn header_of_len(len: usize) -> String {
    let base = header(
        KEY_ID,
        &scope(DATE, AUDIENCE, "hws1_request"),
        "host",
        SIGNATURE,
    );
    let mut remaining = len - base.len();
    let mut names = vec!["host".to_owned()];
    let mut i = 0;
    while remaining > 0 {
        // Each name costs its length plus one `;`; keep the last one at least `x00-` long.
        let cost = if remaining >= 210 { 205 } else { remaining };
        names.push(format!("x{i:02}-{}", "a".repeat(cost - 5)));
        remaining -= cost;
        i += 1;
    }
    let value = header(
        KEY_ID,
        &scope(DATE, AUDIENCE, "hws1_request"),
        &names.join(";"),
        SIGNATURE,
    );
    assert_eq!(value.len(), len);
    value
}

#[test]
fn the_longest_authorization_is_accepted_and_one_byte_more_is_too_large() {
    let longest = header_of_len(MAX_AUTHORIZATION_LEN);
    let parsed = parse(&longest).map(|a| a.credential);
    assert_eq!(parsed, Ok(KEY_ID.to_owned()));
    let too_long = header_of_len(MAX_AUTHORIZATION_LEN + 1);
    assert_eq!(
        parse(&too_long),
        Err(ProtoError::TooLarge {
            what: "Authorization header",
            limit: MAX_AUTHORIZATION_LEN,
        })
    );
}

#[test]
fn the_longest_signature_is_accepted_and_longer_ones_are_refused() {
    let scope = scope(DATE, AUDIENCE, "hws1_request");
    let longest = "ab".repeat(MAX_SIGNATURE_LEN);
    let parsed = parse(&header(KEY_ID, &scope, "host", &longest)).map(|a| a.signature);
    assert_eq!(parsed, Ok(vec![0xab; MAX_SIGNATURE_LEN]));
    let lower_case_hex = malformed("Signature must be lower-case hex");
    for signature in [
        "ab".repeat(MAX_SIGNATURE_LEN + 1),
        String::new(),
        "30060201010201AB".to_owned(),
        "30060201010201g1".to_owned(),
        "30 06".to_owned(),
    ] {
        assert_eq!(
            parse(&header(KEY_ID, &scope, "host", &signature)),
            lower_case_hex,
            "{signature}"
        );
    }
    assert_eq!(
        parse(&header(KEY_ID, &scope, "host", "abc")),
        malformed("Signature must be hex")
    );
}

#[test]
fn key_ids_are_1_to_128_printable_characters_without_separators() {
    let invalid = malformed("invalid key id in Credential");
    // Every printable ASCII character but the four separators, and the longest id.
    let printable: String = (b'!'..=b'~')
        .filter(|b| !matches!(b, b'/' | b',' | b';' | b'='))
        .map(char::from)
        .collect();
    for credential in [printable.clone(), "k".repeat(128)] {
        assert_eq!(check_credential(&credential), Ok(()), "{credential}");
        let parsed = parse(&with_credential(&credential)).map(|a| a.credential);
        assert_eq!(parsed, Ok(credential.clone()));
    }
    for credential in [
        "k".repeat(129),
        "key,id".to_owned(),
        "key;id".to_owned(),
        "key=id".to_owned(),
        "key id".to_owned(),
        "key\tid".to_owned(),
        "key\u{7f}id".to_owned(),
        "clé".to_owned(),
    ] {
        assert_eq!(
            check_credential(&credential),
            Err(ProtoError::InvalidKeyId),
            "{credential:?}"
        );
        assert_eq!(
            parse(&with_credential(&credential)),
            invalid,
            "{credential:?}"
        );
    }
    assert_eq!(check_credential(""), Err(ProtoError::InvalidKeyId));
    assert_eq!(parse(&with_credential("")), invalid);
    // A `/` in the key id makes a Credential of the wrong shape.
    assert_eq!(
        parse(&with_credential("key/id")),
        malformed("Credential must be <key>/<date>/<audience>/<terminator>")
    );
}

#[test]
fn the_scope_date_is_eight_digits_and_the_audience_follows_its_rules() {
    let date = malformed("invalid date in Credential");
    for bad in ["2026112", "202611230", "2026112a", "2026-11-"] {
        let value = header(
            KEY_ID,
            &scope(bad, AUDIENCE, "hws1_request"),
            "host",
            SIGNATURE,
        );
        assert_eq!(parse(&value), date, "{bad}");
    }
    let longest = "a".repeat(MAX_AUDIENCE_LEN);
    for good in ["a.b-c_9", longest.as_str()] {
        let value = header(
            KEY_ID,
            &scope(DATE, good, "hws1_request"),
            "host",
            SIGNATURE,
        );
        assert_eq!(parse(&value).map(|a| a.scope.audience), Ok(good.to_owned()));
    }
    let audience = malformed("invalid audience in Credential");
    let too_long = "a".repeat(MAX_AUDIENCE_LEN + 1);
    for bad in ["", "Payments", "pay ments", "pay/", too_long.as_str()] {
        let value = header(KEY_ID, &scope(DATE, bad, "hws1_request"), "host", SIGNATURE);
        let expected = if bad.contains('/') {
            malformed("Credential must be <key>/<date>/<audience>/<terminator>")
        } else {
            audience.clone()
        };
        assert_eq!(parse(&value), expected, "{bad:?}");
    }
    let value = header(
        KEY_ID,
        &scope(DATE, AUDIENCE, "aws4_request"),
        "host",
        SIGNATURE,
    );
    assert_eq!(parse(&value), malformed("wrong scope terminator"));
}

/// What the parser accepts, formatted again, is the same header value.
#[test]
fn a_parsed_header_formats_back_to_the_same_value() {
    let value = header_of_len(600);
    let parsed = parse(&value);
    assert_eq!(
        parsed.as_ref().map(|a| a.to_header_value(&HWS1)),
        Ok(value.clone())
    );
    assert_eq!(
        parsed.map(|a| a.scope.to_string()),
        Ok(scope(DATE, AUDIENCE, "hws1_request"))
    );
}
