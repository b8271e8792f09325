//! The requirements W3C WebAuthn L3 §8.2.1 places on a `packed` attestation certificate (the
//! leaf of `x5c`): version 3, subject OU "Authenticator Attestation", basic constraints with
//! CA false, and — when the certificate carries id-fido-gen-ce-aaguid — that extension, not
//! critical, naming the AAGUID of the authenticator data. Each refusal has its own reason
//! (`evidence_invalid:<reason>`, docs/WEBAUTHN.md).

use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::der::asn1::{ObjectIdentifier, OctetString};
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::BasicConstraints;

use crate::enrollment::EnrollmentError;

/// `id-fido-gen-ce-aaguid`.
const ID_FIDO_GEN_CE_AAGUID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");
/// `id-at-organizationalUnitName`.
const ID_AT_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
/// `id-ce-basicConstraints`.
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
/// The OU the specification demands.
const ATTESTATION_OU: &[u8] = b"Authenticator Attestation";

/// Reason: the certificate is not X.509 version 3.
pub const REASON_VERSION: &str = "attestation_cert_version";
/// Reason: no subject OU "Authenticator Attestation".
pub const REASON_OU: &str = "attestation_cert_ou";
/// Reason: basic constraints say CA (or cannot be read).
pub const REASON_CA: &str = "attestation_cert_ca";
/// Reason: id-fido-gen-ce-aaguid is critical, unreadable, or names another AAGUID.
pub const REASON_AAGUID: &str = "attestation_cert_aaguid";

/// Checks `leaf` against §8.2.1 for an authenticator reporting `aaguid`.
pub(crate) fn check_attestation_certificate(
    leaf: &Certificate,
    aaguid: &[u8; 16],
) -> Result<(), EnrollmentError> {
    let tbs = leaf.tbs_certificate();
    if tbs.version() != Version::V3 {
        return Err(EnrollmentError::EvidenceMismatch(REASON_VERSION));
    }
    let has_ou = tbs.subject().iter().any(|attribute| {
        attribute.oid == ID_AT_OU
            && matches!(
                attribute.value.tag(),
                Tag::Utf8String | Tag::PrintableString
            )
            && attribute.value.value() == ATTESTATION_OU
    });
    if !has_ou {
        return Err(EnrollmentError::EvidenceMismatch(REASON_OU));
    }
    for extension in tbs.extensions().into_iter().flatten() {
        if extension.extn_id == ID_CE_BASIC_CONSTRAINTS {
            let constraints = BasicConstraints::from_der(extension.extn_value.as_bytes())
                .map_err(|_| EnrollmentError::EvidenceMismatch(REASON_CA))?;
            if constraints.ca {
                return Err(EnrollmentError::EvidenceMismatch(REASON_CA));
            }
        } else if extension.extn_id == ID_FIDO_GEN_CE_AAGUID {
            let named = OctetString::from_der(extension.extn_value.as_bytes())
                .map_err(|_| EnrollmentError::EvidenceMismatch(REASON_AAGUID))?;
            if extension.critical || named.as_bytes() != aaguid {
                return Err(EnrollmentError::EvidenceMismatch(REASON_AAGUID));
            }
        }
    }
    Ok(())
}
