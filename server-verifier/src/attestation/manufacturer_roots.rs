//! The TPM manufacturers' EK CA certificates shipped with the verifier (opt-in:
//! `builtin_ek_roots = true` in `[enrollment]`), embedded in the binary so a deployment needs no
//! files. The list, each file's provenance and its fingerprint are in
//! `server-verifier/ek-roots/MANIFEST.toml`; a test checks that this list, the directory and the
//! manifest agree, that every certificate loads unchanged and that every signature in the set
//! verifies.

use super::certificate::{CertificateError, ParsedCertificate};

/// Where a shipped certificate sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Self-signed: a vendor root.
    Root,
    /// A vendor CA whose issuer is not shipped; used as a trust anchor, as Keylime does.
    Anchor,
    /// Issued by another shipped certificate.
    Intermediate,
}

/// One shipped certificate.
#[derive(Debug, Clone, Copy)]
pub struct ShippedCertificate {
    /// File name under `server-verifier/ek-roots/`.
    pub file: &'static str,
    /// The TPM vendor.
    pub vendor: &'static str,
    /// Root, anchor or intermediate.
    pub role: Role,
    /// The PEM file, byte for byte.
    pub pem: &'static [u8],
}

const fn shipped(
    file: &'static str,
    vendor: &'static str,
    role: Role,
    pem: &'static [u8],
) -> ShippedCertificate {
    ShippedCertificate {
        file,
        vendor,
        role,
        pem,
    }
}

/// Every shipped certificate.
pub const SHIPPED: &[ShippedCertificate] = &[
    shipped(
        "Alibaba_Cloud_vTPM_EK.pem",
        "Alibaba Cloud vTPM",
        Role::Anchor,
        include_bytes!("../../ek-roots/Alibaba_Cloud_vTPM_EK.pem"),
    ),
    shipped(
        "GS_TPM_RT.pem",
        "GlobalSign (STMicroelectronics root)",
        Role::Root,
        include_bytes!("../../ek-roots/GS_TPM_RT.pem"),
    ),
    shipped(
        "IFX1.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX1.pem"),
    ),
    shipped(
        "IFX15.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX15.pem"),
    ),
    shipped(
        "IFX2.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX2.pem"),
    ),
    shipped(
        "IFX3.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX3.pem"),
    ),
    shipped(
        "IFX4.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX4.pem"),
    ),
    shipped(
        "IFX5.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX5.pem"),
    ),
    shipped(
        "IFX8.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX8.pem"),
    ),
    shipped(
        "IFX_ECC_034.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_ECC_034.pem"),
    ),
    shipped(
        "IFX_ECC_042.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_ECC_042.pem"),
    ),
    shipped(
        "IFX_RSA_01I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_01I.pem"),
    ),
    shipped(
        "IFX_RSA_02I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_02I.pem"),
    ),
    shipped(
        "IFX_RSA_034.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_034.pem"),
    ),
    shipped(
        "IFX_RSA_03I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_03I.pem"),
    ),
    shipped(
        "IFX_RSA_042.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_042.pem"),
    ),
    shipped(
        "IFX_RSA_04I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_04I.pem"),
    ),
    shipped(
        "IFX_RSA_05I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_05I.pem"),
    ),
    shipped(
        "IFX_RSA_08I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_08I.pem"),
    ),
    shipped(
        "IFX_RSA_17I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_17I.pem"),
    ),
    shipped(
        "IFX_RSA_18I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_18I.pem"),
    ),
    shipped(
        "IFX_RSA_20I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_20I.pem"),
    ),
    shipped(
        "IFX_RSA_21I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/IFX_RSA_21I.pem"),
    ),
    shipped(
        "IFX_RSA_RT.pem",
        "Infineon",
        Role::Anchor,
        include_bytes!("../../ek-roots/IFX_RSA_RT.pem"),
    ),
    shipped(
        "INF_ECC_010I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/INF_ECC_010I.pem"),
    ),
    shipped(
        "INF_ECC_010RT.pem",
        "Infineon",
        Role::Root,
        include_bytes!("../../ek-roots/INF_ECC_010RT.pem"),
    ),
    shipped(
        "INF_ECC_011.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/INF_ECC_011.pem"),
    ),
    shipped(
        "INF_RSA_010I.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/INF_RSA_010I.pem"),
    ),
    shipped(
        "INF_RSA_010RT.pem",
        "Infineon",
        Role::Root,
        include_bytes!("../../ek-roots/INF_RSA_010RT.pem"),
    ),
    shipped(
        "INF_RSA_011.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/INF_RSA_011.pem"),
    ),
    shipped(
        "INF_RSA_022.pem",
        "Infineon",
        Role::Intermediate,
        include_bytes!("../../ek-roots/INF_RSA_022.pem"),
    ),
    shipped(
        "INTEL_I.pem",
        "Intel",
        Role::Intermediate,
        include_bytes!("../../ek-roots/INTEL_I.pem"),
    ),
    shipped(
        "INTEL_RT.pem",
        "Intel",
        Role::Root,
        include_bytes!("../../ek-roots/INTEL_RT.pem"),
    ),
    shipped(
        "NTC1.pem",
        "Nuvoton",
        Role::Root,
        include_bytes!("../../ek-roots/NTC1.pem"),
    ),
    shipped(
        "NTC2.pem",
        "Nuvoton",
        Role::Root,
        include_bytes!("../../ek-roots/NTC2.pem"),
    ),
    shipped(
        "NUVO_0100.pem",
        "Nuvoton",
        Role::Root,
        include_bytes!("../../ek-roots/NUVO_0100.pem"),
    ),
    shipped(
        "NUVO_1110.pem",
        "Nuvoton",
        Role::Root,
        include_bytes!("../../ek-roots/NUVO_1110.pem"),
    ),
    shipped(
        "NUVO_1111.pem",
        "Nuvoton",
        Role::Root,
        include_bytes!("../../ek-roots/NUVO_1111.pem"),
    ),
    shipped(
        "NUVO_2110.pem",
        "Nuvoton",
        Role::Root,
        include_bytes!("../../ek-roots/NUVO_2110.pem"),
    ),
    shipped(
        "NUVO_2111.pem",
        "Nuvoton",
        Role::Root,
        include_bytes!("../../ek-roots/NUVO_2111.pem"),
    ),
    shipped(
        "Nationz_TPM_EK.pem",
        "Nationz",
        Role::Anchor,
        include_bytes!("../../ek-roots/Nationz_TPM_EK.pem"),
    ),
    shipped(
        "STM_ECC_01I.pem",
        "STMicroelectronics",
        Role::Intermediate,
        include_bytes!("../../ek-roots/STM_ECC_01I.pem"),
    ),
    shipped(
        "STM_ECC_01RT.pem",
        "STMicroelectronics",
        Role::Anchor,
        include_bytes!("../../ek-roots/STM_ECC_01RT.pem"),
    ),
    shipped(
        "STM_RSA_01I.pem",
        "STMicroelectronics",
        Role::Intermediate,
        include_bytes!("../../ek-roots/STM_RSA_01I.pem"),
    ),
    shipped(
        "STM_RSA_02I.pem",
        "STMicroelectronics",
        Role::Intermediate,
        include_bytes!("../../ek-roots/STM_RSA_02I.pem"),
    ),
    shipped(
        "STM_RSA_03I.pem",
        "STMicroelectronics",
        Role::Intermediate,
        include_bytes!("../../ek-roots/STM_RSA_03I.pem"),
    ),
    shipped(
        "STM_RSA_04I.pem",
        "STMicroelectronics",
        Role::Intermediate,
        include_bytes!("../../ek-roots/STM_RSA_04I.pem"),
    ),
    shipped(
        "STM_RSA_05I.pem",
        "STMicroelectronics",
        Role::Intermediate,
        include_bytes!("../../ek-roots/STM_RSA_05I.pem"),
    ),
    shipped(
        "STM_RSA_06I.pem",
        "STMicroelectronics",
        Role::Intermediate,
        include_bytes!("../../ek-roots/STM_RSA_06I.pem"),
    ),
    shipped(
        "STM_RSA_07I.pem",
        "STMicroelectronics",
        Role::Intermediate,
        include_bytes!("../../ek-roots/STM_RSA_07I.pem"),
    ),
    shipped(
        "STM_RSA_RT.pem",
        "STMicroelectronics",
        Role::Intermediate,
        include_bytes!("../../ek-roots/STM_RSA_RT.pem"),
    ),
    shipped(
        "AMD_Pluton_Global_Factory_ICA.pem",
        "AMD",
        Role::Anchor,
        include_bytes!("../../ek-roots/AMD_Pluton_Global_Factory_ICA.pem"),
    ),
    shipped(
        "AMDTPM_ECC.pem",
        "AMD",
        Role::Root,
        include_bytes!("../../ek-roots/AMDTPM_ECC.pem"),
    ),
    shipped(
        "AMDTPM_RSA.pem",
        "AMD",
        Role::Root,
        include_bytes!("../../ek-roots/AMDTPM_RSA.pem"),
    ),
    shipped(
        "MSFT_Microsoft_Pluton_Root_CA_2021.pem",
        "Microsoft",
        Role::Root,
        include_bytes!("../../ek-roots/MSFT_Microsoft_Pluton_Root_CA_2021.pem"),
    ),
    shipped(
        "MSFT_Microsoft_TPM_Root_Certificate_Authority_2014.pem",
        "Microsoft",
        Role::Root,
        include_bytes!("../../ek-roots/MSFT_Microsoft_TPM_Root_Certificate_Authority_2014.pem"),
    ),
    shipped(
        "AMD_PRG_RPL_EK_ICA.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!("../../ek-roots/AMD_PRG_RPL_EK_ICA.pem"),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B20F00.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B20F00.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B20F40.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B20F40.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B60F00.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B60F00.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B60F80.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B60F80.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B70F00.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B70F00.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B20F00.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B20F00.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B20F40.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B20F40.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B60F00.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B60F00.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B60F80.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B60F80.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B70F00.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!(
            "../../ek-roots/AMD_Pluton_Per_Product_Factory_NON_FIPS_EK_ICA_DFID00B70F00.pem"
        ),
    ),
    shipped(
        "AMD_Pluton_Factory_DEVICE_EK_ICA_DFID0001.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!("../../ek-roots/AMD_Pluton_Factory_DEVICE_EK_ICA_DFID0001.pem"),
    ),
    shipped(
        "AMD_Pluton_Factory_DEVICE_EK_ICA_DFID008A0F00.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!("../../ek-roots/AMD_Pluton_Factory_DEVICE_EK_ICA_DFID008A0F00.pem"),
    ),
    shipped(
        "AMD_Pluton_Factory_DEVICE_EK_ICA_DFID00A60F11.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!("../../ek-roots/AMD_Pluton_Factory_DEVICE_EK_ICA_DFID00A60F11.pem"),
    ),
    shipped(
        "AMD_Pluton_Factory_FIPS_EK_ICA_DFID0001.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!("../../ek-roots/AMD_Pluton_Factory_FIPS_EK_ICA_DFID0001.pem"),
    ),
    shipped(
        "AMD_Pluton_Factory_FIPS_EK_ICA_DFID008A0F00.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!("../../ek-roots/AMD_Pluton_Factory_FIPS_EK_ICA_DFID008A0F00.pem"),
    ),
    shipped(
        "AMD_Pluton_Factory_FIPS_EK_ICA_DFID00A60F11.pem",
        "AMD",
        Role::Intermediate,
        include_bytes!("../../ek-roots/AMD_Pluton_Factory_FIPS_EK_ICA_DFID00A60F11.pem"),
    ),
    shipped(
        "MSFT_Microsoft_Pluton_Policy_CA_A.pem",
        "Microsoft",
        Role::Intermediate,
        include_bytes!("../../ek-roots/MSFT_Microsoft_Pluton_Policy_CA_A.pem"),
    ),
    shipped(
        "GOOGLE_tpm_ek_root_1.pem",
        "Google Cloud vTPM",
        Role::Root,
        include_bytes!("../../ek-roots/GOOGLE_tpm_ek_root_1.pem"),
    ),
    shipped(
        "GOOGLE_tpm_ek_intermediate_2.pem",
        "Google Cloud vTPM",
        Role::Intermediate,
        include_bytes!("../../ek-roots/GOOGLE_tpm_ek_intermediate_2.pem"),
    ),
    shipped(
        "GOOGLE_tpm_ek_intermediate_3.pem",
        "Google Cloud vTPM",
        Role::Intermediate,
        include_bytes!("../../ek-roots/GOOGLE_tpm_ek_intermediate_3.pem"),
    ),
    shipped(
        "GOOGLE_gcp_ek_ak_ca_root.pem",
        "Google Cloud vTPM",
        Role::Root,
        include_bytes!("../../ek-roots/GOOGLE_gcp_ek_ak_ca_root.pem"),
    ),
    shipped(
        "GOOGLE_gcp_ek_ak_ca_intermediate_v3.pem",
        "Google Cloud vTPM",
        Role::Intermediate,
        include_bytes!("../../ek-roots/GOOGLE_gcp_ek_ak_ca_intermediate_v3.pem"),
    ),
];

/// The shipped set parsed: (trust anchors — roots and anchors —, intermediates).
pub fn manufacturer_roots()
-> Result<(Vec<ParsedCertificate>, Vec<ParsedCertificate>), CertificateError> {
    let mut anchors = Vec::new();
    let mut intermediates = Vec::new();
    for certificate in SHIPPED {
        let parsed = ParsedCertificate::from_pem_bundle(certificate.pem)?;
        match certificate.role {
            Role::Root | Role::Anchor => anchors.extend(parsed),
            Role::Intermediate => intermediates.extend(parsed),
        }
    }
    Ok((anchors, intermediates))
}
