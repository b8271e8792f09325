//! TPMS_ATTEST: what TPM2_Certify and TPM2_Quote sign.

use super::alg::MAX_DIGEST_SIZE;
use super::reader::{ParseError, ParseFailure, Reader};

/// TPM_GENERATED_VALUE: the TPM puts it in front of everything it signs itself, so a restricted
/// key never signs outside data that could pass for an attestation.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_CERTIFY.
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
/// TPM_ST_ATTEST_QUOTE.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

/// Bound for a TPM2B_NAME (hash id + largest digest).
const MAX_NAME_SIZE: usize = 2 + MAX_DIGEST_SIZE;
/// Bound for TPM2B_DATA (qualifying data).
const MAX_EXTRA_DATA_SIZE: usize = 64;
/// Largest number of PCR selections in a quote (one per bank; TPMs have at most a handful).
const MAX_PCR_SELECTIONS: u32 = 16;
/// Largest pcrSelect bitmap (PCR_SELECT_MAX).
const MAX_PCR_SELECT_BYTES: u8 = 4;
/// Largest TPMS_ATTEST accepted (TPM2B_ATTEST is bounded by the TPM's buffer size).
pub const MAX_ATTEST_SIZE: usize = 2048;

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since manufacture (never goes back).
    pub clock: u64,
    /// TPM resets (power cycles, Startup(CLEAR)) since the last TPM2_Clear.
    pub reset_count: u32,
    /// Restarts/resumes since the last reset.
    pub restart_count: u32,
    /// True when `clock` was saved to NV so it cannot have been rolled back.
    pub safe: bool,
}

/// One TPMS_PCR_SELECTION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// Bank hash (TPM_ALG_ID).
    pub hash: u16,
    /// Bitmap: bit `i % 8` of byte `i / 8` selects PCR `i`.
    pub select: Vec<u8>,
}

/// The type-specific part of an attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    /// TPMS_CERTIFY_INFO.
    Certify {
        /// Name of the certified object.
        name: Vec<u8>,
        /// Its qualified name.
        qualified_name: Vec<u8>,
    },
    /// TPMS_QUOTE_INFO.
    Quote {
        /// Which PCRs were quoted.
        pcr_select: Vec<PcrSelection>,
        /// Digest of the selected PCR values, in selection order.
        pcr_digest: Vec<u8>,
    },
}

/// A parsed TPMS_ATTEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmAttest {
    /// Must be [`TPM_GENERATED_VALUE`]; kept so checks can report it.
    pub magic: u32,
    /// TPMI_ST_ATTEST.
    pub attest_type: u16,
    /// Qualified name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (the verifier's nonce).
    pub extra_data: Vec<u8>,
    /// Clock state at signing.
    pub clock_info: ClockInfo,
    /// Vendor firmware version.
    pub firmware_version: u64,
    /// Certify or quote details.
    pub attested: Attested,
}

impl TpmAttest {
    /// Parses a marshalled TPMS_ATTEST; the whole buffer must be that one structure. The magic
    /// value is returned as found (the checks refuse a wrong one with their own error).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseFailure> {
        if bytes.len() > MAX_ATTEST_SIZE {
            return Err(ParseFailure::at(
                0,
                ParseError::SizeTooLarge {
                    what: "TPMS_ATTEST",
                    size: bytes.len(),
                    max: MAX_ATTEST_SIZE,
                },
            ));
        }
        let mut reader = Reader::new(bytes);
        Self::read(&mut reader).map_err(|error| reader.locate(error))
    }

    fn read(reader: &mut Reader<'_>) -> Result<Self, ParseError> {
        let magic = reader.u32("TPMS_ATTEST.magic")?;
        let attest_type = reader.u16("TPMS_ATTEST.type")?;
        let qualified_signer = reader
            .tpm2b(MAX_NAME_SIZE, "TPMS_ATTEST.qualifiedSigner")?
            .to_vec();
        let extra_data = reader
            .tpm2b(MAX_EXTRA_DATA_SIZE, "TPMS_ATTEST.extraData")?
            .to_vec();
        let clock_info = ClockInfo {
            clock: reader.u64("TPMS_CLOCK_INFO.clock")?,
            reset_count: reader.u32("TPMS_CLOCK_INFO.resetCount")?,
            restart_count: reader.u32("TPMS_CLOCK_INFO.restartCount")?,
            safe: reader.yes_no("TPMS_CLOCK_INFO.safe")?,
        };
        let firmware_version = reader.u64("TPMS_ATTEST.firmwareVersion")?;
        let attested = match attest_type {
            TPM_ST_ATTEST_CERTIFY => Attested::Certify {
                name: reader
                    .tpm2b(MAX_NAME_SIZE, "TPMS_CERTIFY_INFO.name")?
                    .to_vec(),
                qualified_name: reader
                    .tpm2b(MAX_NAME_SIZE, "TPMS_CERTIFY_INFO.qualifiedName")?
                    .to_vec(),
            },
            TPM_ST_ATTEST_QUOTE => Attested::Quote {
                pcr_select: read_pcr_selection(reader)?,
                pcr_digest: reader
                    .tpm2b(MAX_DIGEST_SIZE, "TPMS_QUOTE_INFO.pcrDigest")?
                    .to_vec(),
            },
            other => {
                return Err(ParseError::Unsupported {
                    what: "TPMS_ATTEST.type",
                    value: u32::from(other),
                });
            }
        };
        reader.finish("TPMS_ATTEST")?;
        Ok(Self {
            magic,
            attest_type,
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            attested,
        })
    }
}

fn read_pcr_selection(reader: &mut Reader<'_>) -> Result<Vec<PcrSelection>, ParseError> {
    let count = reader.u32("TPML_PCR_SELECTION.count")?;
    if count > MAX_PCR_SELECTIONS {
        return Err(ParseError::Invalid {
            what: "TPML_PCR_SELECTION.count",
            value: u64::from(count),
        });
    }
    let mut selections = Vec::new();
    for _ in 0..count {
        let hash = reader.u16("TPMS_PCR_SELECTION.hash")?;
        let size = reader.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
        if size > MAX_PCR_SELECT_BYTES {
            return Err(ParseError::Invalid {
                what: "TPMS_PCR_SELECTION.sizeofSelect",
                value: u64::from(size),
            });
        }
        let select = reader
            .take(usize::from(size), "TPMS_PCR_SELECTION.pcrSelect")?
            .to_vec();
        selections.push(PcrSelection { hash, select });
    }
    Ok(selections)
}
