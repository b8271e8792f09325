//! Authenticator data (W3C WebAuthn L3 §6.1): `rpIdHash(32) ‖ flags(1) ‖ signCount(4, big
//! endian) ‖ [attested credential data] ‖ [extensions]`.

use crate::keys::PublicKey;

use super::cose_key::{cose_key_from_public_key, public_key_from_cose_value, read_cbor_item};
use super::error::WebAuthnError;

/// Longest credential id the specification allows.
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;

/// The flags byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatorFlags(pub u8);

impl AuthenticatorFlags {
    /// User present.
    pub const UP: u8 = 0x01;
    /// User verified (PIN, biometrics).
    pub const UV: u8 = 0x04;
    /// Backup eligible (the credential may be synced: a passkey).
    pub const BE: u8 = 0x08;
    /// Backed up (the credential is synced now).
    pub const BS: u8 = 0x10;
    /// Attested credential data included.
    pub const AT: u8 = 0x40;
    /// Extension data included.
    pub const ED: u8 = 0x80;

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    /// User present.
    pub fn user_present(self) -> bool {
        self.has(Self::UP)
    }
    /// User verified.
    pub fn user_verified(self) -> bool {
        self.has(Self::UV)
    }
    /// Backup eligible.
    pub fn backup_eligible(self) -> bool {
        self.has(Self::BE)
    }
    /// Backed up.
    pub fn backed_up(self) -> bool {
        self.has(Self::BS)
    }
    /// Attested credential data present.
    pub fn attested_credential_data(self) -> bool {
        self.has(Self::AT)
    }
    /// Extensions present.
    pub fn extension_data(self) -> bool {
        self.has(Self::ED)
    }
}

/// Attested credential data (registration only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredential {
    /// The authenticator model's AAGUID.
    pub aaguid: [u8; 16],
    /// The credential id (what `allowCredentials` names).
    pub credential_id: Vec<u8>,
    /// The credential's public key (ES256 / P-256 only).
    pub public_key: PublicKey,
}

/// Parsed authenticator data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorData {
    /// SHA-256 of the RP ID.
    pub rp_id_hash: [u8; 32],
    /// Flags.
    pub flags: AuthenticatorFlags,
    /// Signature counter (0 for authenticators that keep none).
    pub sign_count: u32,
    /// Present when the AT flag is set.
    pub attested_credential: Option<AttestedCredential>,
}

impl AuthenticatorData {
    /// Parses authenticator data strictly: the AT and ED flags must match what follows, the
    /// COSE key must be an ES256 P-256 key, extensions must be one CBOR map, and nothing may
    /// trail. BS without BE is refused (the specification forbids it).
    pub fn parse(bytes: &[u8]) -> Result<Self, WebAuthnError> {
        use WebAuthnError::Malformed as Bad;
        if bytes.len() < 37 {
            return Err(Bad("authenticator data shorter than 37 bytes"));
        }
        let (head, mut rest) = bytes.split_at(37);
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(&head[..32]);
        let flags = AuthenticatorFlags(head[32]);
        let sign_count = u32::from_be_bytes([head[33], head[34], head[35], head[36]]);
        if flags.backed_up() && !flags.backup_eligible() {
            return Err(Bad("backed-up flag without backup-eligible flag"));
        }
        let attested_credential = if flags.attested_credential_data() {
            if rest.len() < 18 {
                return Err(Bad("attested credential data truncated"));
            }
            let mut aaguid = [0u8; 16];
            aaguid.copy_from_slice(&rest[..16]);
            let id_len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            rest = &rest[18..];
            if id_len == 0 || id_len > MAX_CREDENTIAL_ID_LEN || rest.len() < id_len {
                return Err(Bad("credential id length"));
            }
            let (credential_id, after_id) = rest.split_at(id_len);
            rest = after_id;
            let key = read_cbor_item(&mut rest)?;
            Some(AttestedCredential {
                aaguid,
                credential_id: credential_id.to_vec(),
                public_key: public_key_from_cose_value(&key)?,
            })
        } else {
            None
        };
        if flags.extension_data() {
            let extensions = read_cbor_item(&mut rest)?;
            if !extensions.is_map() {
                return Err(Bad("extensions are not a CBOR map"));
            }
        }
        if !rest.is_empty() {
            return Err(Bad("trailing bytes after authenticator data"));
        }
        Ok(Self {
            rp_id_hash,
            flags,
            sign_count,
            attested_credential,
        })
    }

    /// Encodes authenticator data (without extensions; the ED flag is cleared, and AT is set
    /// exactly when attested credential data is present). Used by tests and vectors to build
    /// what an authenticator would return.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut flags = self.flags.0 & !(AuthenticatorFlags::ED | AuthenticatorFlags::AT);
        if self.attested_credential.is_some() {
            flags |= AuthenticatorFlags::AT;
        }
        let mut out = Vec::with_capacity(37 + 128);
        out.extend_from_slice(&self.rp_id_hash);
        out.push(flags);
        out.extend_from_slice(&self.sign_count.to_be_bytes());
        if let Some(credential) = &self.attested_credential {
            out.extend_from_slice(&credential.aaguid);
            // Credential ids longer than u16 cannot be parsed back; they are bounded at parse.
            let id_len = u16::try_from(credential.credential_id.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&id_len.to_be_bytes());
            out.extend_from_slice(&credential.credential_id);
            out.extend_from_slice(&cose_key_from_public_key(&credential.public_key));
        }
        out
    }
}
