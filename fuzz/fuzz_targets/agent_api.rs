//! JSON decoding of every agent API body (proto/src/api.rs, proto/src/attestation.rs) and of the
//! verifier's enrollment API (proto/src/enrollment.rs).
//!
//! Invariants: decoding never panics; a body that decodes re-encodes to JSON that decodes to the
//! identical value, and that re-encoding is stable.
#![no_main]

use std::fmt::Debug;

use hwsign_proto::api::{
    BackendStatus, CreateKeyRequest, ErrorResponse, HeaderField, KeyInfo, KeyLevel, KeyList,
    SignRequest, SignResponse, StatusResponse,
};
use hwsign_proto::attestation::{
    ActivateCredentialRequest, ActivateCredentialResponse, Evidence, KeyAttestation, TokenClaims,
    TpmEvidence,
};
use hwsign_proto::enrollment::{
    ActivateRequest, ActivateResponse, EnrollErrorResponse, EvidenceRequest, EvidenceResponse,
    StartRequest, StartResponse,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let encoded = match serde_json::to_vec(&value) {
        Ok(encoded) => encoded,
        Err(e) => panic!(
            "a decoded {} does not encode: {e}",
            std::any::type_name::<T>()
        ),
    };
    let decoded: T = match serde_json::from_slice(&encoded) {
        Ok(decoded) => decoded,
        Err(e) => panic!(
            "re-encoded {} does not decode: {e}",
            std::any::type_name::<T>()
        ),
    };
    assert_eq!(decoded, value);
    assert_eq!(serde_json::to_vec(&decoded).ok(), Some(encoded));
}

fuzz_target!(|data: &[u8]| {
    // Requests the agent decodes.
    round_trip::<SignRequest>(data);
    round_trip::<CreateKeyRequest>(data);
    round_trip::<ActivateCredentialRequest>(data);
    // Responses the client library and the verifier decode.
    round_trip::<SignResponse>(data);
    round_trip::<StatusResponse>(data);
    round_trip::<BackendStatus>(data);
    round_trip::<KeyInfo>(data);
    round_trip::<KeyList>(data);
    round_trip::<ErrorResponse>(data);
    round_trip::<HeaderField>(data);
    round_trip::<KeyLevel>(data);
    round_trip::<KeyAttestation>(data);
    round_trip::<Evidence>(data);
    round_trip::<TpmEvidence>(data);
    round_trip::<TokenClaims>(data);
    round_trip::<ActivateCredentialResponse>(data);
    // The verifier's enrollment API: requests arrive from the network.
    round_trip::<StartRequest>(data);
    round_trip::<EvidenceRequest>(data);
    round_trip::<ActivateRequest>(data);
    round_trip::<StartResponse>(data);
    round_trip::<EvidenceResponse>(data);
    round_trip::<ActivateResponse>(data);
    round_trip::<EnrollErrorResponse>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(level) = text.parse::<KeyLevel>() {
            assert_eq!(level.as_str(), text);
        }
    }
});
