//! EK certificate chain validation against configured TPM manufacturer roots.

use std::path::Path;
use std::time::SystemTime;

use thiserror::Error;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

use super::certificate::{CertificateError, ParsedCertificate, SignatureAlgorithms};
use super::registered_ek::RegisteredEks;

/// Longest chain tried (leaf, intermediates, root); real EK chains have two or three links.
const MAX_CHAIN_DEPTH: usize = 6;

/// The roots a verifier trusts for EK certificates, and intermediates it may use to reach them.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    roots: Vec<ParsedCertificate>,
    intermediates: Vec<ParsedCertificate>,
    accepted: SignatureAlgorithms,
    registered_eks: Option<RegisteredEks>,
}

impl TrustAnchors {
    /// From PEM bundles of root and intermediate certificates (the intermediate bundle may be
    /// empty).
    pub fn from_pem(roots: &[u8], intermediates: &[u8]) -> Result<Self, ChainError> {
        let roots = ParsedCertificate::from_pem_bundle(roots)?;
        let intermediates = if intermediates.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            ParsedCertificate::from_pem_bundle(intermediates)?
        };
        Ok(Self {
            roots,
            intermediates,
            accepted: SignatureAlgorithms::default(),
            registered_eks: None,
        })
    }

    /// From certificate files, each a PEM bundle or one DER certificate: every file in `roots`
    /// holds roots, every one in `intermediates` intermediates. Certificates keep their original
    /// bytes.
    pub fn from_pem_files(
        roots: &[impl AsRef<Path>],
        intermediates: &[impl AsRef<Path>],
    ) -> Result<Self, ChainError> {
        let anchors = Self::load_files(roots, intermediates)?;
        if anchors.roots.is_empty() {
            return Err(ChainError::NoRoots);
        }
        Ok(anchors)
    }

    /// [`Self::from_pem_files`] without requiring a root (the caller adds more).
    pub(crate) fn load_files(
        roots: &[impl AsRef<Path>],
        intermediates: &[impl AsRef<Path>],
    ) -> Result<Self, ChainError> {
        let mut anchors = Self::default();
        for path in roots {
            anchors.roots.extend(from_file(path.as_ref())?);
        }
        for path in intermediates {
            anchors.intermediates.extend(from_file(path.as_ref())?);
        }
        Ok(anchors)
    }

    /// Adds roots and intermediates (e.g. the curated manufacturer set,
    /// [`super::manufacturer_roots`]).
    pub fn extend(&mut self, roots: Vec<ParsedCertificate>, intermediates: Vec<ParsedCertificate>) {
        self.roots.extend(roots);
        self.intermediates.extend(intermediates);
    }

    /// Whether chain links signed with SHA-1 are accepted (default: no).
    #[must_use]
    pub fn with_sha1_links(mut self, accept: bool) -> Self {
        self.accepted.sha1_links = accept;
        self
    }

    /// Where EKs without a certificate are registered ([`RegisteredEks`]); without it, evidence
    /// with no EK certificate is refused.
    #[must_use]
    pub fn with_registered_eks(mut self, registered: Option<RegisteredEks>) -> Self {
        self.registered_eks = registered;
        self
    }

    /// The registered EKs, if configured.
    pub fn registered_eks(&self) -> Option<&RegisteredEks> {
        self.registered_eks.as_ref()
    }

    /// The configured roots.
    pub fn roots(&self) -> &[ParsedCertificate] {
        &self.roots
    }

    /// The configured intermediates.
    pub fn intermediates(&self) -> &[ParsedCertificate] {
        &self.intermediates
    }
}

fn from_file(path: &Path) -> Result<Vec<ParsedCertificate>, ChainError> {
    let contents =
        std::fs::read(path).map_err(|e| ChainError::Io(format!("{}: {e}", path.display())))?;
    ParsedCertificate::from_file_contents(&contents).map_err(|source| ChainError::File {
        path: path.display().to_string(),
        source,
    })
}

/// Why a certificate chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChainError {
    /// No root is configured.
    #[error("no trust anchors configured")]
    NoRoots,
    /// A trust anchor file could not be read.
    #[error("cannot read trust anchors: {0}")]
    Io(String),
    /// A certificate could not be parsed or used.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// A trust anchor file holds something that is not a certificate.
    #[error("trust anchor file {path}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: CertificateError,
    },
    /// A link of the chain is signed with SHA-1 and `ek_sha1_links` is off.
    #[error(
        "{subject} is signed with SHA-1; set ek_sha1_links = true to accept SHA-1 chain links \
         (docs/ATTESTATION.md, field guide)"
    )]
    Sha1Link {
        /// Subject of the certificate.
        subject: String,
    },
    /// No configured root or known intermediate issued this certificate.
    #[error("no trusted issuer for {subject}")]
    UnknownIssuer {
        /// Subject of the certificate whose issuer was not found.
        subject: String,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("signature of {subject} does not verify with its issuer's key")]
    BadSignature {
        /// Subject of the certificate.
        subject: String,
    },
    /// A certificate in the chain is expired or not yet valid at `now`.
    #[error("{subject} is not valid at the verification time")]
    OutsideValidity {
        /// Subject of the certificate.
        subject: String,
    },
    /// An issuer is not a CA (basicConstraints), may not sign certificates (keyUsage), or its
    /// path length constraint is exceeded.
    #[error("{subject} may not issue certificates")]
    IssuerNotCa {
        /// Subject of the issuer.
        subject: String,
    },
    /// The chain is longer than this verifier follows.
    #[error("certificate chain too long")]
    TooLong,
}

/// Verifies that `leaf` chains to one of `anchors`' roots through `anchors`' intermediates or
/// `extra_intermediates` (those the device sent), every link signed by the next, every certificate
/// valid at `now`, every issuer a CA.
pub fn verify_chain(
    leaf: &ParsedCertificate,
    extra_intermediates: &[ParsedCertificate],
    anchors: &TrustAnchors,
    now: SystemTime,
) -> Result<(), ChainError> {
    if anchors.roots.is_empty() {
        return Err(ChainError::NoRoots);
    }
    if !leaf.is_valid_at(now) {
        return Err(ChainError::OutsideValidity {
            subject: subject_of(leaf),
        });
    }
    let intermediates: Vec<&ParsedCertificate> = anchors
        .intermediates
        .iter()
        .chain(extra_intermediates)
        .collect();
    let mut path = vec![leaf];
    extend_path(&mut path, &intermediates, anchors, now)
}

/// Depth-first search for an issuer of the last certificate in `path`. Returns the most specific
/// failure seen when no path works.
fn extend_path<'a>(
    path: &mut Vec<&'a ParsedCertificate>,
    intermediates: &[&'a ParsedCertificate],
    anchors: &'a TrustAnchors,
    now: SystemTime,
) -> Result<(), ChainError> {
    let Some(&child) = path.last() else {
        return Err(ChainError::TooLong);
    };
    if path.len() > MAX_CHAIN_DEPTH {
        return Err(ChainError::TooLong);
    }
    // CA certificates below the issuer, for its path length constraint.
    let cas_below = path.len() - 1;
    let issuer_name = child.certificate().tbs_certificate().issuer();
    let mut failure = ChainError::UnknownIssuer {
        subject: subject_of(child),
    };

    for root in &anchors.roots {
        if root.certificate().tbs_certificate().subject() != issuer_name {
            continue;
        }
        match check_link(child, root, cas_below, now, anchors.accepted) {
            Ok(()) => return Ok(()),
            Err(error) => failure = error,
        }
    }
    for &candidate in intermediates {
        if candidate.certificate().tbs_certificate().subject() != issuer_name
            || path.iter().any(|seen| seen.der() == candidate.der())
        {
            continue;
        }
        if let Err(error) = check_link(child, candidate, cas_below, now, anchors.accepted) {
            failure = error;
            continue;
        }
        path.push(candidate);
        match extend_path(path, intermediates, anchors, now) {
            Ok(()) => return Ok(()),
            Err(error) => failure = error,
        }
        path.pop();
    }
    Err(failure)
}

/// Checks that `issuer` may issue certificates, is valid now, and signed `child`.
fn check_link(
    child: &ParsedCertificate,
    issuer: &ParsedCertificate,
    cas_below: usize,
    now: SystemTime,
    accepted: SignatureAlgorithms,
) -> Result<(), ChainError> {
    let tbs = issuer.certificate().tbs_certificate();
    let not_ca = || ChainError::IssuerNotCa {
        subject: subject_of(issuer),
    };
    match tbs.get_extension::<BasicConstraints>() {
        Ok(Some((_, constraints))) if constraints.ca => {
            if let Some(limit) = constraints.path_len_constraint {
                if cas_below > usize::from(limit) {
                    return Err(not_ca());
                }
            }
        }
        _ => return Err(not_ca()),
    }
    match tbs.get_extension::<KeyUsage>() {
        Ok(None) => {}
        Ok(Some((_, usage))) if usage.key_cert_sign() => {}
        _ => return Err(not_ca()),
    }
    if !issuer.is_valid_at(now) {
        return Err(ChainError::OutsideValidity {
            subject: subject_of(issuer),
        });
    }
    let verified = match issuer.verifies(child, accepted) {
        Err(CertificateError::Sha1NotAccepted) => {
            return Err(ChainError::Sha1Link {
                subject: subject_of(child),
            });
        }
        other => other?,
    };
    if !verified {
        return Err(ChainError::BadSignature {
            subject: subject_of(child),
        });
    }
    Ok(())
}

fn subject_of(certificate: &ParsedCertificate) -> String {
    let subject = certificate.certificate().tbs_certificate().subject();
    if subject.is_empty() {
        "(empty subject)".to_owned()
    } else {
        subject.to_string()
    }
}
