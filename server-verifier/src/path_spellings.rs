//! The spellings of a request path that rules are matched against, so that an encoded,
//! doubled-slash or dot-segment spelling cannot reach a protected route under a weaker rule.

use std::borrow::Cow;

use hwsign_proto::encoding;

/// The distinct spellings of `path` that rules are matched against: as sent, percent-decoded,
/// and dot-segment-resolved with slashes collapsed (route rules and the device policy decide each one).
pub(crate) fn path_spellings(path: &str) -> Vec<String> {
    let decoded: Cow<'_, str> = match encoding::decode(path) {
        Ok(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        // An undecodable path was already refused by canonicalization; match it as sent.
        Err(_) => Cow::Borrowed(path),
    };
    let normalized = normalize(&decoded);
    let mut forms = vec![path.to_owned()];
    for form in [decoded.into_owned(), normalized] {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// Removes `.` and `..` segments and empty segments, keeping a trailing slash.
pub(crate) fn normalize(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || (path.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    out
}
