//! The EK certificate: TPM-specific extensions (the manufacturer attributes in a critical
//! SubjectAltName directoryName, usually with an empty subject), and the match between the
//! certified key and the EK public area the device presents.

use thiserror::Error;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Tag, Tagged as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};

use super::certificate::{CertificateError, ParsedCertificate};
use super::public::TpmPublic;
use super::registered_ek::certified_key_of;

/// tcg-at-tpmManufacturer.
const OID_TPM_MANUFACTURER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.1");
/// tcg-at-tpmModel.
const OID_TPM_MODEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.2");
/// tcg-at-tpmVersion.
const OID_TPM_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.3");
/// tcg-kp-EKCertificate.
const OID_EK_CERTIFICATE_KP: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.1");

/// Extensions this code understands; any other critical extension makes the certificate unusable
/// (RFC 5280 §4.2).
const KNOWN_EXTENSIONS: [ObjectIdentifier; 10] = [
    ObjectIdentifier::new_unwrap("2.5.29.9"),
    ObjectIdentifier::new_unwrap("2.5.29.14"),
    ObjectIdentifier::new_unwrap("2.5.29.15"),
    ObjectIdentifier::new_unwrap("2.5.29.17"),
    ObjectIdentifier::new_unwrap("2.5.29.19"),
    ObjectIdentifier::new_unwrap("2.5.29.31"),
    ObjectIdentifier::new_unwrap("2.5.29.32"),
    ObjectIdentifier::new_unwrap("2.5.29.35"),
    ObjectIdentifier::new_unwrap("2.5.29.37"),
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1"),
];

/// TPM manufacturer attributes from the EK certificate (TCG EK Credential Profile). Values are
/// as written, such as `id:49465800`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TpmManufacturerInfo {
    /// tcg-at-tpmManufacturer.
    pub manufacturer: Option<String>,
    /// tcg-at-tpmModel.
    pub model: Option<String>,
    /// tcg-at-tpmVersion.
    pub version: Option<String>,
}

/// Why an EK certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EkCertificateError {
    /// Not a usable certificate.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// A critical extension this code does not understand.
    #[error("unknown critical extension {0}")]
    UnknownCriticalExtension(String),
    /// The extended key usage is present and lacks tcg-kp-EKCertificate.
    #[error("certificate is not an EK certificate (extended key usage)")]
    NotEkCertificate,
    /// The SubjectAltName could not be decoded.
    #[error("malformed SubjectAltName")]
    MalformedSubjectAltName,
    /// The certified key is not the EK public area's key.
    #[error("the EK certificate does not certify the presented EK")]
    KeyMismatch,
}

/// A parsed EK certificate.
#[derive(Debug, Clone)]
pub struct EkCertificate {
    certificate: ParsedCertificate,
    info: TpmManufacturerInfo,
}

impl EkCertificate {
    /// Parses and checks the EK-specific parts of a DER certificate (not its chain).
    pub fn from_der(der: &[u8]) -> Result<Self, EkCertificateError> {
        let certificate = ParsedCertificate::from_der(der)?;
        let tbs = certificate.certificate().tbs_certificate();
        for extension in tbs.extensions().into_iter().flatten() {
            if extension.critical && !KNOWN_EXTENSIONS.contains(&extension.extn_id) {
                return Err(EkCertificateError::UnknownCriticalExtension(
                    extension.extn_id.to_string(),
                ));
            }
        }
        match tbs.get_extension::<ExtendedKeyUsage>() {
            Ok(None) => {}
            Ok(Some((_, usage))) if usage.0.contains(&OID_EK_CERTIFICATE_KP) => {}
            _ => return Err(EkCertificateError::NotEkCertificate),
        }
        let info = match tbs.get_extension::<SubjectAltName>() {
            Ok(Some((_, names))) => manufacturer_info(&names),
            Ok(None) => TpmManufacturerInfo::default(),
            Err(_) => return Err(EkCertificateError::MalformedSubjectAltName),
        };
        Ok(Self { certificate, info })
    }

    /// The certificate.
    pub fn certificate(&self) -> &ParsedCertificate {
        &self.certificate
    }

    /// Manufacturer, model and firmware version from the SubjectAltName.
    pub fn manufacturer_info(&self) -> &TpmManufacturerInfo {
        &self.info
    }

    /// Checks that the certificate certifies exactly the key in `ek_public`.
    pub fn check_certifies(&self, ek_public: &TpmPublic) -> Result<(), EkCertificateError> {
        let certified = self.certificate.certified_key()?;
        let matches = certified_key_of(ek_public).is_some_and(|key| key == certified);
        if matches {
            Ok(())
        } else {
            Err(EkCertificateError::KeyMismatch)
        }
    }
}

fn manufacturer_info(names: &SubjectAltName) -> TpmManufacturerInfo {
    let mut info = TpmManufacturerInfo::default();
    for name in &names.0 {
        let GeneralName::DirectoryName(directory) = name else {
            continue;
        };
        for attribute in directory.iter() {
            let slot = match attribute.oid {
                OID_TPM_MANUFACTURER => &mut info.manufacturer,
                OID_TPM_MODEL => &mut info.model,
                OID_TPM_VERSION => &mut info.version,
                _ => continue,
            };
            if matches!(
                attribute.value.tag(),
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String
            ) {
                *slot = String::from_utf8(attribute.value.value().to_vec()).ok();
            }
        }
    }
    info
}
