//! The peer: AWS SigV4a as the `aws-sigv4` crate signs it, for the same request with the body
//! hash precomputed and signed in `x-amz-content-sha256` (as hwsign signs its body hash header).

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4a;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::BenchError;
use crate::fixtures::{AUDIENCE, BenchRequest, T0};

/// aws-sigv4's SigV4a signer with fixed example credentials.
#[derive(Debug)]
pub struct Sigv4aSigner {
    identity: Identity,
    uri: String,
}

impl Sigv4aSigner {
    /// A signer for `request` (its URI is built once, as an SDK holds it already).
    pub fn new(request: &BenchRequest) -> Self {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "hwsign-bench",
        );
        Self {
            identity: credentials.into(),
            uri: format!(
                "https://{}{}?{}",
                request.authority, request.path, request.query
            ),
        }
    }

    /// Signs `request`; returns the headers to add.
    pub fn sign(
        &self,
        request: &BenchRequest,
        body_sha256_hex: &str,
    ) -> Result<Vec<(String, String)>, BenchError> {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let time = UNIX_EPOCH + Duration::from_secs(T0.unsigned_abs());
        let params = v4a::SigningParams::builder()
            .identity(&self.identity)
            .region_set("*")
            .name(AUDIENCE)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| BenchError::Sigv4a(e.to_string()))?
            .into();
        let headers = request.headers_with_host();
        let signable = SignableRequest::new(
            request.method,
            self.uri.as_str(),
            headers.iter().copied(),
            SignableBody::Precomputed(body_sha256_hex.to_owned()),
        )
        .map_err(|e| BenchError::Sigv4a(e.to_string()))?;
        let output = sign(signable, &params).map_err(|e| BenchError::Sigv4a(e.to_string()))?;
        let (instructions, _signature) = output.into_parts();
        let (added, _query) = instructions.into_parts();
        Ok(added
            .into_iter()
            .map(|h| (h.name().to_owned(), h.value().to_owned()))
            .collect())
    }
}
