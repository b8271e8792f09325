//! `[backends.pkcs11]` configuration and the user PIN source.
//!
//! The PIN never appears in the configuration itself: it comes from a file or a systemd
//! credential, is read only when a login is needed, and is zeroized after use.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::Pkcs11Error;

/// Default prefix of `CKA_LABEL` for keys this agent creates, so an operator can tell them apart
/// from other keys on a shared token.
pub const DEFAULT_KEY_LABEL_PREFIX: &str = "hwsign:";

/// Longest PIN file accepted. PKCS#11 PINs are short; a large file is a misconfiguration.
const MAX_PIN_FILE_LEN: u64 = 256;

/// Configuration of the PKCS#11 backend.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Absolute path of the vendor's PKCS#11 module (`.so`). Only ever taken from the agent's
    /// configuration, never from a request, because loading it runs its code in the agent.
    pub module_path: PathBuf,
    /// `CKA_LABEL` of the token (the `label` field of `CK_TOKEN_INFO`, trailing blanks ignored).
    pub token_label: String,
    /// File holding the user PIN (trailing newline ignored). Exactly one of `pin_file` and
    /// `pin_credential` must be set.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// Name of a systemd credential (`LoadCredential=`/`SetCredentialEncrypted=`) holding the
    /// user PIN, read from `$CREDENTIALS_DIRECTORY/<name>`.
    #[serde(default)]
    pub pin_credential: Option<String>,
    /// Prefix put before the key label in `CKA_LABEL` (default [`DEFAULT_KEY_LABEL_PREFIX`]).
    #[serde(default)]
    pub key_label_prefix: Option<String>,
}

impl std::fmt::Debug for Pkcs11Config {
    // Written by hand so a future secret-bearing field cannot slip into logs by derive.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module_path", &self.module_path)
            .field("token_label", &self.token_label)
            .field("pin_file", &self.pin_file)
            .field("pin_credential", &self.pin_credential)
            .field("key_label_prefix", &self.key_label_prefix)
            .finish()
    }
}

impl Pkcs11Config {
    /// Checks the fields that do not need the file system.
    pub fn validate(&self) -> Result<(), Pkcs11Error> {
        if !self.module_path.is_absolute() {
            return Err(Pkcs11Error::Config(format!(
                "module_path {} must be absolute",
                self.module_path.display()
            )));
        }
        if self.token_label.is_empty() || self.token_label.len() > 32 {
            return Err(Pkcs11Error::Config(
                "token_label must be 1 to 32 bytes (the size of CK_TOKEN_INFO.label)".into(),
            ));
        }
        match (&self.pin_file, &self.pin_credential) {
            (Some(_), None) => {}
            (None, Some(name)) => check_credential_name(name)?,
            _ => {
                return Err(Pkcs11Error::Config(
                    "set exactly one of pin_file and pin_credential".into(),
                ));
            }
        }
        if self.label_prefix().chars().any(char::is_control) {
            return Err(Pkcs11Error::Config(
                "key_label_prefix has control characters".into(),
            ));
        }
        Ok(())
    }

    /// The `CKA_LABEL` prefix in effect.
    pub fn label_prefix(&self) -> &str {
        self.key_label_prefix
            .as_deref()
            .unwrap_or(DEFAULT_KEY_LABEL_PREFIX)
    }

    /// Where the PIN is read from, resolving a systemd credential name.
    pub fn pin_path(&self) -> Result<PathBuf, Pkcs11Error> {
        if let Some(path) = &self.pin_file {
            return Ok(path.clone());
        }
        let name = self
            .pin_credential
            .as_deref()
            .ok_or_else(|| Pkcs11Error::Config("no PIN source configured".into()))?;
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
            Pkcs11Error::Pin(format!(
                "pin_credential {name:?} set but $CREDENTIALS_DIRECTORY is not (is the agent \
                 running under systemd with LoadCredential=?)"
            ))
        })?;
        Ok(Path::new(&dir).join(name))
    }

    /// Reads the PIN; the bytes are wiped when the returned value drops.
    pub fn read_pin(&self) -> Result<Zeroizing<Vec<u8>>, Pkcs11Error> {
        let path = self.pin_path()?;
        read_pin_file(&path)
    }

    /// Checks that the PIN source exists, is a regular file this process can open, and has a
    /// plausible size, without reading the PIN. `health()` and `--check-config` use it: a backend
    /// whose PIN cannot be read cannot sign, so it is not reported available.
    pub fn check_pin_source(&self) -> Result<(), Pkcs11Error> {
        let path = self.pin_path()?;
        let file = fs::File::open(&path).map_err(|e| {
            Pkcs11Error::Pin(format!("cannot open PIN file {}: {e}", path.display()))
        })?;
        let metadata = file.metadata().map_err(|e| {
            Pkcs11Error::Pin(format!("cannot read PIN file {}: {e}", path.display()))
        })?;
        if !metadata.is_file() {
            return Err(Pkcs11Error::Pin(format!(
                "PIN file {} is not a regular file",
                path.display()
            )));
        }
        if metadata.len() == 0 {
            return Err(Pkcs11Error::Pin(format!(
                "PIN file {} is empty",
                path.display()
            )));
        }
        if metadata.len() > MAX_PIN_FILE_LEN {
            return Err(Pkcs11Error::Pin(format!(
                "PIN file {} is longer than {MAX_PIN_FILE_LEN} bytes",
                path.display()
            )));
        }
        Ok(())
    }
}

/// A credential name is a file name inside `$CREDENTIALS_DIRECTORY`: no path separators.
fn check_credential_name(name: &str) -> Result<(), Pkcs11Error> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control);
    if valid {
        Ok(())
    } else {
        Err(Pkcs11Error::Config(format!(
            "pin_credential {name:?} is not a plain credential name"
        )))
    }
}

/// Reads a PIN file: bounded, trailing `\n` / `\r\n` removed, never echoed in errors.
fn read_pin_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, Pkcs11Error> {
    let file = fs::File::open(path)
        .map_err(|e| Pkcs11Error::Pin(format!("cannot open PIN file {}: {e}", path.display())))?;
    let mut pin = Zeroizing::new(Vec::with_capacity(64));
    file.take(MAX_PIN_FILE_LEN + 1)
        .read_to_end(&mut pin)
        .map_err(|e| Pkcs11Error::Pin(format!("cannot read PIN file {}: {e}", path.display())))?;
    if pin.len() as u64 > MAX_PIN_FILE_LEN {
        return Err(Pkcs11Error::Pin(format!(
            "PIN file {} is longer than {MAX_PIN_FILE_LEN} bytes",
            path.display()
        )));
    }
    while matches!(pin.last(), Some(b'\n' | b'\r')) {
        pin.pop();
    }
    if pin.is_empty() {
        return Err(Pkcs11Error::Pin(format!(
            "PIN file {} is empty",
            path.display()
        )));
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pkcs11Config {
        Pkcs11Config {
            module_path: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            token_label: "hwsign".into(),
            pin_file: Some(PathBuf::from("/etc/hwsign/pin")),
            pin_credential: None,
            key_label_prefix: None,
        }
    }

    #[test]
    fn parses_and_rejects_unknown_fields() -> Result<(), toml::de::Error> {
        let ok: Pkcs11Config =
            toml::from_str("module_path = \"/m.so\"\ntoken_label = \"t\"\npin_file = \"/p\"\n")?;
        assert_eq!(ok.label_prefix(), DEFAULT_KEY_LABEL_PREFIX);
        let inline_pin = toml::from_str::<Pkcs11Config>(
            "module_path = \"/m.so\"\ntoken_label = \"t\"\npin = \"1234\"\n",
        );
        assert!(inline_pin.is_err());
        Ok(())
    }

    #[test]
    fn validation() {
        assert!(sample().validate().is_ok());
        let mut relative = sample();
        relative.module_path = PathBuf::from("libsofthsm2.so");
        assert!(relative.validate().is_err());
        let mut both = sample();
        both.pin_credential = Some("pin".into());
        assert!(both.validate().is_err());
        let mut neither = sample();
        neither.pin_file = None;
        assert!(neither.validate().is_err());
        let mut traversal = sample();
        traversal.pin_file = None;
        traversal.pin_credential = Some("../pin".into());
        assert!(traversal.validate().is_err());
        let mut long_label = sample();
        long_label.token_label = "x".repeat(33);
        assert!(long_label.validate().is_err());
    }

    #[test]
    fn pin_file_trailing_newline_trimmed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pin");
        fs::write(&path, b"123456\r\n")?;
        assert_eq!(read_pin_file(&path)?.as_slice(), b"123456");
        fs::write(&path, b"\n")?;
        assert!(read_pin_file(&path).is_err());
        fs::write(&path, vec![b'1'; 300])?;
        assert!(read_pin_file(&path).is_err());
        Ok(())
    }
}
