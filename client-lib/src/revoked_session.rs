//! Recognizing a verifier's `401 session_revoked` answer: an administrator ended the delegated
//! session a request was signed with (docs/ADMIN.md, "Sessions"). A client then has the agent
//! forget that session ([`crate::Signer::end_session`]) and signs again with a new one, which the
//! verifier accepts only while the device itself is allowed.

/// Whether a `401` answer's `WWW-Authenticate: HWS1` names `error="session_revoked"`.
pub fn session_revoked(status: http::StatusCode, headers: &http::HeaderMap) -> bool {
    status == http::StatusCode::UNAUTHORIZED
        && headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| {
                value.len() <= 1024
                    && value.trim().strip_prefix("HWS1 ").is_some_and(|rest| {
                        rest.split(',')
                            .any(|param| param.trim() == "error=\"session_revoked\"")
                    })
            })
}
