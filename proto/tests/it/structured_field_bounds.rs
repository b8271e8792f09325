//! RFC 9421 `Signature-Input` parameters as RFC 8941 bare items: integers of at most 15 digits
//! and the booleans `?1` / `?0`.

use hwsign_proto::rfc9421::{ParamValue, parse_signature_input};

fn params(value: &str) -> Option<Vec<(String, ParamValue)>> {
    parse_signature_input(value)
        .ok()
        .and_then(|mut labels| labels.pop())
        .map(|(_, params)| params.params)
}

#[test]
fn integers_have_at_most_15_digits_and_booleans_are_read() {
    let parsed = params(r#"sig1=("@method");created=999999999999999;flag=?1;off=?0;n=-7"#);
    assert_eq!(
        parsed,
        Some(vec![
            (
                "created".to_owned(),
                ParamValue::Integer(999_999_999_999_999)
            ),
            ("flag".to_owned(), ParamValue::Boolean(true)),
            ("off".to_owned(), ParamValue::Boolean(false)),
            ("n".to_owned(), ParamValue::Integer(-7)),
        ])
    );
    for value in [
        r#"sig1=("@method");created=1000000000000000"#,
        r#"sig1=("@method");created=-1000000000000000"#,
        r#"sig1=("@method");created=-"#,
        r#"sig1=("@method");flag=?2"#,
    ] {
        assert!(parse_signature_input(value).is_err(), "{value}");
    }
}
