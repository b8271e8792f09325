//! `hwsign-verifier ek …`: EK public keys registered for TPMs without an EK certificate
//! (docs/ATTESTATION.md §5). The directory is the one `[enrollment] registered_eks` names.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use hwsign_verifier::attestation::RegisteredEks;
use hwsign_verifier::enrollment::device_id_for;

/// Largest public key file read.
const MAX_INPUT: u64 = 16 * 1024;

#[derive(Debug, Subcommand)]
pub(crate) enum EkCommand {
    /// Register an EK public key (PEM, as `tpm2_readpublic -c 0x81010001 -f pem -o ek.pem` or
    /// `tpm2_createek -G rsa -u ek.pem -f pem -c ek.ctx` writes it, read on the device through a
    /// channel you trust). Prints its fingerprint and the device id it will enroll as.
    Add {
        /// The registered-EK directory (`[enrollment] registered_eks`).
        #[arg(long)]
        dir: PathBuf,
        /// A human label (the machine, its asset tag).
        #[arg(long)]
        label: String,
        /// The PEM public key file.
        public_key: PathBuf,
    },
    /// List registered EKs: fingerprint, device id, label.
    List {
        /// The registered-EK directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Remove a registered EK by fingerprint (devices already enrolled with it stay enrolled:
    /// revoke their keys to cut them off).
    Remove {
        /// The registered-EK directory.
        #[arg(long)]
        dir: PathBuf,
        /// The fingerprint `list` shows.
        fingerprint: String,
    },
}

pub(crate) fn run(command: EkCommand) -> anyhow::Result<()> {
    match command {
        EkCommand::Add {
            dir,
            label,
            public_key,
        } => {
            let file = std::fs::File::open(&public_key)
                .with_context(|| format!("cannot read {}", public_key.display()))?;
            let mut pem = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_INPUT + 1), &mut pem)
                .with_context(|| format!("cannot read {}", public_key.display()))?;
            anyhow::ensure!(
                pem.len() as u64 <= MAX_INPUT,
                "{} is larger than a public key",
                public_key.display()
            );
            let registered = RegisteredEks::new(dir).add(&pem, &label)?;
            println!(
                "{}\t{}\t{}",
                registered.fingerprint,
                device_id_for(&registered.fingerprint),
                registered.label
            );
        }
        EkCommand::List { dir } => {
            for registered in RegisteredEks::new(dir).list()? {
                println!(
                    "{}\t{}\t{}",
                    registered.fingerprint,
                    device_id_for(&registered.fingerprint),
                    registered.label
                );
            }
        }
        EkCommand::Remove { dir, fingerprint } => {
            RegisteredEks::new(dir).remove(&fingerprint)?;
            eprintln!("removed {fingerprint}");
        }
    }
    Ok(())
}
