//! From an `http` request head to the [`RequestParts`] the verifier reads, refusing what two
//! parties could read differently: two Host headers, a Host that disagrees with the URI's
//! authority, and non-UTF-8 values in headers that are (or must be) signed.

use http::header::HOST;
use http::request::Parts;
use hwsign_proto::{HWS1, RejectCode};

use crate::rejection::Rejection;
use crate::verify::SignatureChecked;

/// Header fields of a request as strings, plus the names of fields left out because their value
/// is not UTF-8.
#[derive(Debug)]
pub(crate) struct HeaderFields<'a> {
    pub(crate) fields: Vec<(&'a str, &'a str)>,
    pub(crate) non_utf8: Vec<&'a str>,
}

fn malformed(detail: &str) -> Rejection {
    Rejection::new(RejectCode::MalformedRequest, detail)
}

impl<'a> HeaderFields<'a> {
    /// Collects the head's header fields, with `host` taken from the URI's authority when an
    /// HTTP/2 request carries no Host header.
    pub(crate) fn collect(head: &'a Parts) -> Result<Self, Rejection> {
        let mut hosts = head.headers.get_all(HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(malformed("more than one Host header"));
        }
        let authority = head.uri.authority().map(|a| a.as_str());
        let mut fields = Vec::with_capacity(head.headers.len() + 1);
        match (host, authority) {
            (Some(host), Some(authority))
                if !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) =>
            {
                return Err(malformed("Host header and request authority disagree"));
            }
            (None, Some(authority)) => fields.push(("host", authority)),
            _ => {}
        }
        let mut non_utf8 = Vec::new();
        for (name, value) in &head.headers {
            let name = name.as_str();
            match std::str::from_utf8(value.as_bytes()) {
                Ok(value) => fields.push((name, value)),
                Err(_) => {
                    if name == "authorization"
                        || HWS1.always_signed.contains(&name)
                        || HWS1.signed_when_present.contains(&name)
                    {
                        return Err(malformed("a signed header value is not UTF-8"));
                    }
                    non_utf8.push(name);
                }
            }
        }
        Ok(Self { fields, non_utf8 })
    }

    /// Refuses the request if a header left out for not being UTF-8 is one the signature covers
    /// (another, UTF-8 copy of it may have been signed while the application reads both).
    pub(crate) fn check_signed(&self, checked: &SignatureChecked) -> Result<(), Rejection> {
        if self.non_utf8.iter().any(|name| checked.signs_header(name)) {
            return Err(malformed("a signed header value is not UTF-8"));
        }
        Ok(())
    }
}
