//! PKI secrets: strict base64 → PEM → DER, and the checks of contract C24–C31.
//!
//! The three PKI secrets (`certificateData`, `privateKeyData`, `caData`) hold PEM text that has
//! then been base64-encoded. This module decodes them in three steps, each with its own error:
//!
//! 1. [`decode_base64`]: strict base64 (C24);
//! 2. [`read_pem`]: a tolerant PEM scanner (C30);
//! 3. [`parse_certificates`] / [`parse_private_key`]: real X.509 and key parsing (C25, C27, C28),
//!    and [`PrivateKey::matches_certificate`] for C29.
//!
//! [`certificates_from_base64`] and [`private_key_from_base64`] chain the steps for one field.
//! [`crate::config`] applies them in the C31 order and reports every failure.
//!
//! Supported keys (C28, D4): RSA, ECDSA P-256 and P-384, and Ed25519, in PKCS#8
//! (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`, RSA only) or SEC1 (`EC PRIVATE KEY`, ECDSA only).
//!
//! No error and no `Debug` output here carries key material or decoded text (C32); buffers that
//! hold a private key are zeroed when dropped.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use pkcs8::ObjectIdentifier;
use std::fmt;
use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::der::Decode;
use x509_cert::der::asn1::OctetStringRef;
use x509_cert::der::referenced::OwnedToRef;
use zeroize::Zeroizing;

/// The encoding of a private key (C28, D4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// `PRIVATE KEY` (PKCS#8).
    Pkcs8,
    /// `RSA PRIVATE KEY` (PKCS#1).
    Pkcs1,
    /// `EC PRIVATE KEY` (SEC1).
    Sec1,
}

/// `rsaEncryption` (PKCS#1).
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-RSASSA-PSS`: an RSA public key restricted to PSS, as a certificate may carry it.
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// `id-ecPublicKey` (RFC 5480).
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `prime256v1` / `secp256r1` (P-256).
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1` (P-384).
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `id-Ed25519` (RFC 8410).
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The PKI secrets field a value came from; it names the field in messages (C24, C25, C27).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PkiField {
    /// `certificateData`: the client certificate chain, leaf first.
    Certificate,
    /// `privateKeyData`: the client private key.
    PrivateKey,
    /// `caData`: trust anchors.
    Ca,
}

impl PkiField {
    /// The name messages use: `Certificate data`, `Private key data`, `CA certificate data`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            PkiField::Certificate => "Certificate data",
            PkiField::PrivateKey => "Private key data",
            PkiField::Ca => "CA certificate data",
        }
    }
}

impl fmt::Display for PkiField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a PKI secret was rejected. `Display` is the contract's message, which never quotes the
/// value (C32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PkiError {
    /// C24: the value is not strict base64.
    #[error("{0} is not valid base64 (PKI fields must be base64-encoded PEM)")]
    NotBase64(PkiField),
    /// C25, C27: no `CERTIFICATE` PEM block.
    #[error(
        "Invalid {0} file format: The file must be a PEM-encoded certificate beginning with \"-----BEGIN CERTIFICATE-----\"."
    )]
    NoCertificateBlock(PkiField),
    /// C25, C27: a `CERTIFICATE` block that is not an X.509 certificate.
    #[error("Invalid {0}: the PEM block could not be parsed as an X.509 certificate")]
    InvalidCertificate(PkiField),
    /// C25 (D5): a `certificateData` certificate that is not X.509 version 3 (the number shown
    /// is the certificate's). TLS peers refuse such client certificates at every handshake.
    #[error(
        "Invalid {0}: the certificate is X.509 version {1}; client certificates must be X.509 version 3"
    )]
    NotVersion3(PkiField, u8),
    /// C28: an `ENCRYPTED PRIVATE KEY` block or a `Proc-Type: 4,ENCRYPTED` header.
    #[error("Private key data is encrypted; encrypted private keys are not supported")]
    EncryptedKey,
    /// C28: no `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block.
    #[error(
        "Invalid Private key data file format: The file must be a PEM-encoded private key beginning with \"-----BEGIN PRIVATE KEY-----\", \"-----BEGIN RSA PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\"."
    )]
    NoPrivateKeyBlock,
    /// C28: the first key block is not a supported key.
    #[error(
        "Invalid Private key data: the PEM block could not be parsed as a supported private key"
    )]
    UnsupportedKey,
    /// C29: the key does not belong to the leaf certificate.
    #[error("Private key data does not match the certificate data")]
    KeyMismatch,
}

// ---------------------------------------------------------------------------------------------
// C24: strict base64
// ---------------------------------------------------------------------------------------------

/// Standard alphabet, padding present and exactly right.
const PADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Standard alphabet, no padding at all.
const UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes strict base64 (C24): the standard alphabet; ASCII white space (space, tab, CR, LF,
/// form feed) anywhere is ignored; `=` padding may be left out, but when present it must be
/// exactly what the length needs. URL-safe characters, a misplaced or partial `=`, a dangling
/// sixth character and anything else (raw PEM text included) are rejected.
///
/// Unused low bits of the last character are not checked (RFC 4648 §3.5 leaves that to the
/// decoder; no real encoder sets them).
pub(crate) fn strict_base64(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let compact: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    let engine = if compact.last() == Some(&b'=') {
        &PADDED
    } else {
        &UNPADDED
    };
    engine.decode(&*compact).ok().map(Zeroizing::new)
}

/// Decodes the base64 value of a PKI field (C24).
pub(crate) fn decode_base64(field: PkiField, value: &str) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    strict_base64(value.as_bytes()).ok_or(PkiError::NotBase64(field))
}

// ---------------------------------------------------------------------------------------------
// C30: PEM reading
// ---------------------------------------------------------------------------------------------

/// One PEM block found by [`read_pem`]. `Debug` shows the label and sizes, never the contents.
pub(crate) struct PemBlock {
    /// The label between `-----BEGIN ` and `-----`, e.g. `CERTIFICATE`.
    pub label: String,
    /// `true` when the block carries an RFC 1421 `Proc-Type: 4,ENCRYPTED` header (C28).
    pub encrypted: bool,
    /// The decoded contents: `None` when the block has no matching `-----END <label>-----`
    /// line or its body is not base64.
    pub der: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemBlock")
            .field("label", &self.label)
            .field("encrypted", &self.encrypted)
            .field(
                "der",
                &self.der.as_ref().map(|d| format!("[{} bytes]", d.len())),
            )
            .finish()
    }
}

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// Finds the PEM blocks in `text`, in order (C30).
///
/// This is our own scanner rather than a PEM crate because C30 asks for more tolerance than
/// RFC 7468 parsers give: a block may be collapsed onto one line
/// (`-----BEGIN CERTIFICATE----- MIIB... -----END CERTIFICATE-----`), its base64 may use any
/// line length or white space, and text between blocks (OpenSSL's `Bag Attributes`, comments)
/// is ignored. C28 also needs to see RFC 1421 `Proc-Type` headers, which RFC 7468 parsers
/// reject as garbage instead of reporting.
///
/// A block runs from `-----BEGIN <label>-----` to the next `-----END `; if that END line names
/// another label, or another BEGIN comes first, or there is none, the block is still reported
/// (its label counts for C25/C28) but with no contents. Header lines (`Name: value`, with
/// indented continuation lines) are skipped before the base64 is decoded.
pub(crate) fn read_pem(text: &[u8]) -> Vec<PemBlock> {
    let mut blocks = Vec::new();
    let mut pos = 0;
    while let Some(start) = find(text, pos, BEGIN) {
        let label_start = start + BEGIN.len();
        let Some(label_end) = find(text, label_start, DASHES) else {
            break;
        };
        let label = &text[label_start..label_end];
        if !is_label(label) {
            pos = label_start;
            continue;
        }
        let label = String::from_utf8_lossy(label).into_owned();
        let body_start = label_end + DASHES.len();
        let next_begin = find(text, body_start, BEGIN);
        match find(text, body_start, END) {
            Some(end) if next_begin.is_none_or(|b| end < b) => {
                let body = &text[body_start..end];
                let end_label_start = end + END.len();
                let end_label_end = find(text, end_label_start, DASHES);
                let terminated =
                    end_label_end.is_some_and(|e| &text[end_label_start..e] == label.as_bytes());
                blocks.push(PemBlock {
                    encrypted: has_encrypted_header(body),
                    der: if terminated {
                        strict_base64(&strip_headers(body))
                    } else {
                        None
                    },
                    label,
                });
                pos = end_label_end.map_or(end_label_start, |e| e + DASHES.len());
            }
            _ => {
                let body_end = next_begin.unwrap_or(text.len());
                blocks.push(PemBlock {
                    encrypted: has_encrypted_header(&text[body_start..body_end]),
                    der: None,
                    label,
                });
                pos = body_end;
            }
        }
    }
    blocks
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack.get(from..)?, needle).map(|i| i + from)
}

/// RFC 7468 labels are printable ASCII; we accept any non-empty run of it (a label can never
/// contain `-----`, since the scanner stops there).
fn is_label(label: &[u8]) -> bool {
    !label.is_empty() && label.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// `true` when `body` has a `Proc-Type:` header whose value is `4,ENCRYPTED` (ASCII case
/// ignored, as OpenSSL does). Searched as a substring so it also works on a collapsed block.
fn has_encrypted_header(body: &[u8]) -> bool {
    const NAME: &[u8] = b"proc-type:";
    const VALUE: &[u8] = b"4,encrypted";
    let mut from = 0;
    while let Some(at) = find_ignore_case(body, from, NAME) {
        let rest = &body[at + NAME.len()..];
        let rest = &rest[rest
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .unwrap_or(rest.len())..];
        if rest.len() >= VALUE.len() && rest[..VALUE.len()].eq_ignore_ascii_case(VALUE) {
            return true;
        }
        from = at + 1;
    }
    false
}

fn find_ignore_case(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay = haystack.get(from..)?;
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|i| i + from)
}

/// The body without RFC 1421 header lines (`Name: value` and their indented continuations).
/// Base64 never contains `:`, so a line holding one is a header.
fn strip_headers(body: &[u8]) -> Zeroizing<Vec<u8>> {
    if !body.contains(&b':') {
        return Zeroizing::new(body.to_vec());
    }
    let mut out = Zeroizing::new(Vec::with_capacity(body.len()));
    let mut in_header = false;
    for line in body.split(|b| *b == b'\n') {
        if line.contains(&b':') {
            in_header = true;
            continue;
        }
        if in_header && line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        in_header = false;
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// C25, C27: certificates
// ---------------------------------------------------------------------------------------------

/// Reads every `CERTIFICATE` block of `pem` and checks that each is an X.509 certificate
/// (C25, C27). Returns their DER bytes in input order (for `certificateData`, leaf first, C26).
/// Other blocks and text are ignored (C30). Validity dates are not checked (C30).
/// `certificateData` certificates must be X.509 version 3 (D5): the peer's TLS stack refuses
/// older ones, so they would only fail later, at every handshake. Trust anchors (`caData`)
/// may be version 1, as the TLS stack accepts them.
pub(crate) fn parse_certificates(field: PkiField, pem: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut found = false;
    let mut chain = Vec::new();
    for block in read_pem(pem) {
        if block.label != "CERTIFICATE" {
            continue;
        }
        found = true;
        let der = block.der.ok_or(PkiError::InvalidCertificate(field))?;
        let certificate =
            Certificate::from_der(&der).map_err(|_| PkiError::InvalidCertificate(field))?;
        let version = certificate.tbs_certificate().version();
        if field == PkiField::Certificate && version != Version::V3 {
            return Err(PkiError::NotVersion3(field, version as u8 + 1));
        }
        chain.push(der.to_vec());
    }
    if found {
        Ok(chain)
    } else {
        Err(PkiError::NoCertificateBlock(field))
    }
}

/// C24 then C25/C27 for one certificate field: the DER certificates of a base64 PEM value.
pub(crate) fn certificates_from_base64(
    field: PkiField,
    value: &str,
) -> Result<Vec<Vec<u8>>, PkiError> {
    let pem = decode_base64(field, value)?;
    parse_certificates(field, &pem)
}

// ---------------------------------------------------------------------------------------------
// C28: private keys
// ---------------------------------------------------------------------------------------------

/// The algorithm of a supported private key (C28).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyAlgorithm {
    /// RSA (any modulus size; the TLS stack may set its own limits, C130).
    Rsa,
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

/// The public half of a key, derived from the private key, for C29.
#[derive(Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    Ed25519([u8; 32]),
}

/// A parsed, supported private key (C28). `Debug` shows only its algorithm and format.
#[derive(Clone)]
pub(crate) struct PrivateKey {
    der: Zeroizing<Vec<u8>>,
    format: KeyFormat,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm())
            .field("format", &self.format)
            .field("der", &"[REDACTED]")
            .finish()
    }
}

impl PrivateKey {
    /// The key's algorithm.
    pub(crate) fn algorithm(&self) -> KeyAlgorithm {
        match self.public {
            PublicKey::Rsa { .. } => KeyAlgorithm::Rsa,
            PublicKey::P256(_) => KeyAlgorithm::EcdsaP256,
            PublicKey::P384(_) => KeyAlgorithm::EcdsaP384,
            PublicKey::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// The encoding of [`PrivateKey::der`], which is the PEM block's label.
    pub(crate) fn format(&self) -> KeyFormat {
        self.format
    }

    /// The key's DER bytes in [`PrivateKey::format`].
    ///
    /// These are the PEM block's bytes, except for an ECDSA key stored without its public
    /// point (SEC1 makes it optional): that key is re-encoded, in the same format, with the
    /// point added and the scalar at full length, because some TLS stacks (ring, under the
    /// host's rustls) refuse keys without it.
    #[cfg(all(test, not(target_arch = "wasm32")))]
    pub(crate) fn der(&self) -> &[u8] {
        &self.der
    }

    /// Moves the DER bytes out (see [`PrivateKey::der`]).
    pub(crate) fn into_der(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.der)
    }

    /// C29: `true` when `certificate_der`'s SubjectPublicKeyInfo holds this key's public key.
    ///
    /// RSA compares modulus and public exponent; ECDSA compares curve and point (compressed or
    /// not); Ed25519 compares the 32-byte key. A certificate that does not parse never matches.
    pub(crate) fn matches_certificate(&self, certificate_der: &[u8]) -> bool {
        let Ok(cert) = Certificate::from_der(certificate_der) else {
            return false;
        };
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .owned_to_ref();
        let oid = spki.algorithm.oid;
        let Some(bits) = spki.subject_public_key.as_bytes() else {
            return false;
        };
        match &self.public {
            PublicKey::Rsa { modulus, exponent } => {
                if oid != OID_RSA_ENCRYPTION && oid != OID_RSASSA_PSS {
                    return false;
                }
                pkcs1::RsaPublicKey::<x509_cert::der::asn1::UintRef<'_>>::from_der(bits).is_ok_and(
                    |pk| {
                        trim_zeros(pk.modulus.as_bytes()) == modulus.as_slice()
                            && trim_zeros(pk.public_exponent.as_bytes()) == exponent.as_slice()
                    },
                )
            }
            PublicKey::P256(key) => {
                oid == OID_EC_PUBLIC_KEY
                    && spki.algorithm.parameters_oid().ok() == Some(OID_P256)
                    && p256::PublicKey::from_sec1_bytes(bits).is_ok_and(|pk| pk == *key)
            }
            PublicKey::P384(key) => {
                oid == OID_EC_PUBLIC_KEY
                    && spki.algorithm.parameters_oid().ok() == Some(OID_P384)
                    && p384::PublicKey::from_sec1_bytes(bits).is_ok_and(|pk| pk == *key)
            }
            PublicKey::Ed25519(key) => oid == OID_ED25519 && bits == key.as_slice(),
        }
    }
}

/// Finds and parses the private key in `pem` (C28, checked in the contract's order):
///
/// 1. any `ENCRYPTED PRIVATE KEY` block, or any block with a `Proc-Type: 4,ENCRYPTED` header,
///    → [`PkiError::EncryptedKey`];
/// 2. no `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block → [`PkiError::NoPrivateKeyBlock`];
/// 3. the first such block is not a well-formed RSA, ECDSA P-256/P-384 or Ed25519 key (an
///    embedded public key that disagrees with the private key counts as malformed)
///    → [`PkiError::UnsupportedKey`].
pub(crate) fn parse_private_key(pem: &[u8]) -> Result<PrivateKey, PkiError> {
    let blocks = read_pem(pem);
    if blocks
        .iter()
        .any(|b| b.encrypted || b.label == "ENCRYPTED PRIVATE KEY")
    {
        return Err(PkiError::EncryptedKey);
    }
    let block = blocks
        .into_iter()
        .find(|b| key_format(&b.label).is_some())
        .ok_or(PkiError::NoPrivateKeyBlock)?;
    let format = key_format(&block.label).ok_or(PkiError::NoPrivateKeyBlock)?;
    let der = block.der.ok_or(PkiError::UnsupportedKey)?;
    let parsed = match format {
        KeyFormat::Pkcs8 => parse_pkcs8(&der),
        KeyFormat::Pkcs1 => parse_pkcs1(&der).map(|public| (public, None)),
        KeyFormat::Sec1 => parse_sec1(&der, None, KeyFormat::Sec1),
    };
    let (public, reencoded) = parsed.ok_or(PkiError::UnsupportedKey)?;
    Ok(PrivateKey {
        der: reencoded.unwrap_or(der),
        format,
        public,
    })
}

/// C24 then C28 for `privateKeyData`.
pub(crate) fn private_key_from_base64(value: &str) -> Result<PrivateKey, PkiError> {
    let pem = decode_base64(PkiField::PrivateKey, value)?;
    parse_private_key(&pem)
}

/// C29 as an error: `Ok` when `key` belongs to the leaf certificate `leaf_der`.
pub(crate) fn check_key_matches(key: &PrivateKey, leaf_der: &[u8]) -> Result<(), PkiError> {
    if key.matches_certificate(leaf_der) {
        Ok(())
    } else {
        Err(PkiError::KeyMismatch)
    }
}

fn key_format(label: &str) -> Option<KeyFormat> {
    match label {
        "PRIVATE KEY" => Some(KeyFormat::Pkcs8),
        "RSA PRIVATE KEY" => Some(KeyFormat::Pkcs1),
        "EC PRIVATE KEY" => Some(KeyFormat::Sec1),
        _ => None,
    }
}

/// A big-endian integer without its leading zero bytes.
fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

type ParsedKey = (PublicKey, Option<Zeroizing<Vec<u8>>>);

/// PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey` (RFC 5208, RFC 5958).
fn parse_pkcs8(der: &[u8]) -> Option<ParsedKey> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(der).ok()?;
    let inner = info.private_key.as_bytes();
    match info.algorithm.oid {
        OID_RSA_ENCRYPTION => parse_pkcs1(inner).map(|public| (public, None)),
        OID_EC_PUBLIC_KEY => {
            let curve = info.algorithm.parameters_oid().ok()?;
            parse_sec1(inner, Some(curve), KeyFormat::Pkcs8)
        }
        OID_ED25519 => {
            // RFC 8410: the private key is an OCTET STRING (CurvePrivateKey) holding the seed.
            let seed = <&OctetStringRef>::from_der(inner).ok()?.as_bytes();
            let seed: &[u8; 32] = seed.try_into().ok()?;
            let public = ed25519_dalek::SigningKey::from_bytes(seed)
                .verifying_key()
                .to_bytes();
            if let Some(embedded) = &info.public_key
                && embedded.as_bytes() != Some(public.as_slice())
            {
                return None;
            }
            Some((PublicKey::Ed25519(public), None))
        }
        _ => None,
    }
}

/// PKCS#1 `RSAPrivateKey` (RFC 8017).
fn parse_pkcs1(der: &[u8]) -> Option<PublicKey> {
    let key = pkcs1::RsaPrivateKeyRef::from_der(der).ok()?;
    let modulus = trim_zeros(key.modulus.as_bytes());
    let exponent = trim_zeros(key.public_exponent.as_bytes());
    if modulus.is_empty()
        || exponent.is_empty()
        || trim_zeros(key.private_exponent.as_bytes()).is_empty()
    {
        return None;
    }
    Some(PublicKey::Rsa {
        modulus: modulus.to_vec(),
        exponent: exponent.to_vec(),
    })
}

/// SEC1 `ECPrivateKey` (RFC 5915), standalone (`outer_curve` `None`) or inside PKCS#8, whose
/// algorithm parameters name the curve. Returns the public key and, when the key had to be
/// re-encoded (see [`PrivateKey::der`]), the new DER in `format`.
fn parse_sec1(
    der: &[u8],
    outer_curve: Option<ObjectIdentifier>,
    format: KeyFormat,
) -> Option<ParsedKey> {
    let key = sec1::EcPrivateKey::from_der(der).ok()?;
    let own_curve = key.parameters.and_then(|p| p.named_curve());
    let curve = match (outer_curve, own_curve) {
        (Some(outer), Some(own)) if outer != own => return None,
        (Some(curve), _) | (None, Some(curve)) => curve,
        (None, None) => return None,
    };
    macro_rules! ec_key {
        ($curve:ident, $variant:ident, $len:expr) => {{
            let secret = $curve::SecretKey::from_slice(key.private_key).ok()?;
            let public = secret.public_key();
            if let Some(embedded) = key.public_key
                && $curve::PublicKey::from_sec1_bytes(embedded).ok()? != public
            {
                return None;
            }
            let reencoded = if key.public_key.is_none() || key.private_key.len() != $len {
                Some(match format {
                    KeyFormat::Pkcs8 => {
                        use $curve::pkcs8::EncodePrivateKey;
                        secret.to_pkcs8_der().ok()?.to_bytes()
                    }
                    _ => secret.to_sec1_der().ok()?,
                })
            } else {
                None
            };
            Some((PublicKey::$variant(public), reencoded))
        }};
    }
    match curve {
        OID_P256 => ec_key!(p256, P256, 32),
        OID_P384 => ec_key!(p384, P384, 48),
        _ => None,
    }
}

/// Test certificates and keys, generated with rcgen at test time or read from `src/testdata`
/// (RSA keys, which ring cannot generate, and OpenSSL-only encodings). Shared with the config
/// tests.
#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) mod test_support {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        SignatureAlgorithm,
    };

    pub(crate) const RSA_PKCS8: &str = include_str!("testdata/rsa-pkcs8.pem");
    pub(crate) const RSA_PKCS1: &str = include_str!("testdata/rsa-pkcs1.pem");
    pub(crate) const RSA_PKCS1_ENCRYPTED: &str = include_str!("testdata/rsa-pkcs1-encrypted.pem");
    pub(crate) const RSA_PKCS8_ENCRYPTED: &str = include_str!("testdata/rsa-pkcs8-encrypted.pem");
    pub(crate) const P256_SEC1_FULL: &str = include_str!("testdata/p256-sec1-full.pem");
    pub(crate) const P256_SEC1_NOPUB: &str = include_str!("testdata/p256-sec1-nopub.pem");
    pub(crate) const P256_PKCS8_NOPUB: &str = include_str!("testdata/p256-pkcs8-nopub.pem");
    pub(crate) const K256_SEC1: &str = include_str!("testdata/k256-sec1.pem");
    pub(crate) const ED25519_PKCS8_V1: &str = include_str!("testdata/ed25519-pkcs8-v1.pem");
    pub(crate) const X25519_PKCS8: &str = include_str!("testdata/x25519-pkcs8.pem");

    /// Standard base64 with padding, the way the secrets are stored.
    pub(crate) fn b64(text: impl AsRef<[u8]>) -> String {
        STANDARD.encode(text)
    }

    /// PEM text with 64-character lines.
    pub(crate) fn pem(label: &str, der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    /// The DER of the first block of `text` (test input is well-formed).
    pub(crate) fn der_of(text: &str) -> Vec<u8> {
        super::read_pem(text.as_bytes())[0]
            .der
            .as_ref()
            .expect("test PEM decodes")
            .to_vec()
    }

    /// A generated key pair for `alg`, or the RSA fixture.
    pub(crate) fn key(alg: &'static SignatureAlgorithm) -> KeyPair {
        if alg == &rcgen::PKCS_RSA_SHA256 {
            KeyPair::from_pem(RSA_PKCS8).unwrap()
        } else {
            KeyPair::generate_for(alg).unwrap()
        }
    }

    /// A self-signed leaf certificate (PEM) for `key`.
    pub(crate) fn self_signed(key: &KeyPair, cn: &str) -> String {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.self_signed(key).unwrap().pem()
    }

    /// A certificate authority: its certificate (PEM) and an issuer to sign with.
    pub(crate) struct Ca {
        pub pem: String,
        pub issuer: Issuer<'static, KeyPair>,
    }

    pub(crate) fn ca(cn: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `key` signed by `ca`; `intermediate` makes it a CA itself.
    pub(crate) fn signed(key: &KeyPair, cn: &str, ca: &Ca, intermediate: bool) -> String {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        if intermediate {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.signed_by(key, &ca.issuer).unwrap().pem()
    }

    /// An intermediate CA signed by `ca`.
    pub(crate) fn intermediate(cn: &str, ca: &Ca) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.signed_by(&key, &ca.issuer).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A matching client certificate and PKCS#8 key, as the plain PEM texts.
    pub(crate) fn identity(alg: &'static SignatureAlgorithm) -> (String, String) {
        let key = key(alg);
        (self_signed(&key, "client"), key.serialize_pem())
    }

    /// The SEC1 (`EC PRIVATE KEY`) form of a PKCS#8 ECDSA key, with its curve named.
    pub(crate) fn pkcs8_to_sec1(pkcs8_pem: &str) -> String {
        use x509_cert::der::{Decode, Encode};
        let der = der_of(pkcs8_pem);
        let info = pkcs8::PrivateKeyInfoRef::from_der(&der).unwrap();
        let curve = info.algorithm.parameters_oid().unwrap();
        let mut ec = sec1::EcPrivateKey::from_der(info.private_key.as_bytes()).unwrap();
        ec.parameters = Some(sec1::EcParameters::NamedCurve(curve));
        pem("EC PRIVATE KEY", &ec.to_der().unwrap())
    }

    /// Splits the DER element at the start of `der`: (tag, contents, rest).
    fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, header) = match der[1] {
            n if n < 0x80 => (usize::from(n), 2),
            n => {
                let count = usize::from(n & 0x7f);
                let len = der[2..2 + count]
                    .iter()
                    .fold(0, |len, b| len << 8 | usize::from(*b));
                (len, 2 + count)
            }
        };
        (der[0], &der[header..header + len], &der[header + len..])
    }

    /// A DER element from its tag and contents.
    fn der_encode(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    /// `certificate_pem` made X.509 version 1: its `version` and `extensions` fields removed
    /// (the signature no longer verifies, which parsing does not check).
    pub(crate) fn as_version_1(certificate_pem: &str) -> String {
        let der = der_of(certificate_pem);
        let (_, certificate, _) = der_element(&der);
        let (_, tbs, signature) = der_element(certificate);
        let mut fields = Vec::new();
        let mut rest = tbs;
        while !rest.is_empty() {
            let (tag, _, after) = der_element(rest);
            // [0] version, [3] extensions.
            if tag != 0xa0 && tag != 0xa3 {
                fields.extend_from_slice(&rest[..rest.len() - after.len()]);
            }
            rest = after;
        }
        let mut contents = der_encode(0x30, &fields);
        contents.extend_from_slice(signature);
        pem("CERTIFICATE", &der_encode(0x30, &contents))
    }

    /// The PKCS#1 (`RSA PRIVATE KEY`) form of a PKCS#8 RSA key.
    pub(crate) fn pkcs8_to_pkcs1(pkcs8_pem: &str) -> String {
        use x509_cert::der::Decode;
        let der = der_of(pkcs8_pem);
        let info = pkcs8::PrivateKeyInfoRef::from_der(&der).unwrap();
        pem("RSA PRIVATE KEY", info.private_key.as_bytes())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::test_support::*;
    use super::*;
    use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256};
    use rustls::pki_types::{
        PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    };

    /// The host's TLS stack (rustls with ring) accepts the key we hand it (avoids C130).
    fn assert_tls_stack_accepts(key: &PrivateKey) {
        let der = key.der().to_vec();
        let der: PrivateKeyDer<'static> = match key.format() {
            KeyFormat::Pkcs8 => PrivatePkcs8KeyDer::from(der).into(),
            KeyFormat::Pkcs1 => PrivatePkcs1KeyDer::from(der).into(),
            KeyFormat::Sec1 => PrivateSec1KeyDer::from(der).into(),
        };
        rustls::crypto::ring::sign::any_supported_type(&der)
            .unwrap_or_else(|e| panic!("rustls refuses {key:?}: {e}"));
    }

    fn key_ok(pem: &str) -> PrivateKey {
        private_key_from_base64(&b64(pem)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn key_err(pem: &str) -> PkiError {
        private_key_from_base64(&b64(pem)).expect_err("key must be rejected")
    }

    // ---- C24 ------------------------------------------------------------------------------

    #[test]
    fn c24_strict_base64_accepts_standard_forms() {
        let ok = |s: &str| strict_base64(s.as_bytes()).map(|v| v.to_vec());
        assert_eq!(ok("QUJD"), Some(b"ABC".to_vec()));
        assert_eq!(ok("QUI="), Some(b"AB".to_vec()));
        assert_eq!(ok("QUI"), Some(b"AB".to_vec()), "padding is optional");
        assert_eq!(ok("QQ=="), Some(b"A".to_vec()));
        assert_eq!(ok("QQ"), Some(b"A".to_vec()));
        assert_eq!(ok("+/+/"), Some(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(ok(""), Some(vec![]));
        // ASCII white space anywhere is ignored: space, tab, LF, FF, CR.
        assert_eq!(ok(" Q U\tJ\nD\x0c\r\n"), Some(b"ABC".to_vec()));
        assert_eq!(ok("QQ\n=\n=\n"), Some(b"A".to_vec()));
    }

    #[test]
    fn c24_strict_base64_rejects_everything_else() {
        for bad in [
            "QQ=",      // padding present but short
            "QQ===",    // too much padding
            "QUJD=",    // padding where none is needed
            "QUJD====", // likewise
            "Q",        // a dangling sixth of a byte
            "QUJDQ",    // likewise after a full quantum
            "QQ==QUJD", // padding in the middle
            "=QQ=",
            "-_-_",       // URL-safe alphabet
            "QUJD-",      //
            "QU_D",       //
            "QUJD\u{a0}", // non-ASCII white space
            "QUJD\x0b",   // vertical tab is not ASCII white space
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", // raw PEM
            "QUJD!",
        ] {
            assert!(
                strict_base64(bad.as_bytes()).is_none(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn c24_messages_name_the_field() {
        assert_eq!(
            decode_base64(PkiField::Certificate, "%%")
                .unwrap_err()
                .to_string(),
            "Certificate data is not valid base64 (PKI fields must be base64-encoded PEM)"
        );
        assert_eq!(
            decode_base64(PkiField::PrivateKey, "%%")
                .unwrap_err()
                .to_string(),
            "Private key data is not valid base64 (PKI fields must be base64-encoded PEM)"
        );
        assert_eq!(
            decode_base64(PkiField::Ca, "%%").unwrap_err().to_string(),
            "CA certificate data is not valid base64 (PKI fields must be base64-encoded PEM)"
        );
    }

    #[test]
    fn c24_raw_pem_is_rejected_for_every_field() {
        let (cert, key) = identity(&PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            certificates_from_base64(PkiField::Certificate, &cert),
            Err(PkiError::NotBase64(PkiField::Certificate))
        );
        assert_eq!(
            certificates_from_base64(PkiField::Ca, &cert),
            Err(PkiError::NotBase64(PkiField::Ca))
        );
        assert_eq!(
            private_key_from_base64(&key).unwrap_err(),
            PkiError::NotBase64(PkiField::PrivateKey)
        );
    }

    #[test]
    fn c24_url_safe_base64_is_rejected() {
        let (mut cert, _) = identity(&PKCS_ECDSA_P256_SHA256);
        // Text after the block is ignored (C30); "~~~" on a 3-byte boundary encodes as "fn5+".
        while cert.len() % 3 != 0 {
            cert.push('\n');
        }
        cert.push_str("~~~");
        assert!(certificates_from_base64(PkiField::Certificate, &b64(&cert)).is_ok());
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&cert);
        assert!(url_safe.ends_with("fn5-"), "{url_safe}");
        assert_eq!(
            certificates_from_base64(PkiField::Certificate, &url_safe),
            Err(PkiError::NotBase64(PkiField::Certificate))
        );
    }

    #[test]
    fn c24_unpadded_and_wrapped_base64_is_accepted() {
        let (cert, _) = identity(&PKCS_ECDSA_P256_SHA256);
        let encoded = b64(&cert);
        let unpadded = encoded.trim_end_matches('=');
        let wrapped: String = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
            .collect();
        for value in [unpadded, &wrapped] {
            assert_eq!(
                certificates_from_base64(PkiField::Certificate, value)
                    .unwrap()
                    .len(),
                1
            );
        }
    }

    // ---- C30 ------------------------------------------------------------------------------

    #[test]
    fn c30_collapsed_block_on_one_line_is_read() {
        let (cert, key) = identity(&PKCS_ECDSA_P256_SHA256);
        let collapse = |pem: &str| pem.split_whitespace().collect::<Vec<_>>().join(" ");
        let one_line_cert = collapse(&cert);
        assert!(!one_line_cert.contains('\n'));
        assert!(one_line_cert.starts_with("-----BEGIN CERTIFICATE----- MII"));
        let chain = certificates_from_base64(PkiField::Certificate, &b64(&one_line_cert)).unwrap();
        assert_eq!(chain, vec![der_of(&cert)]);
        // Also with no space at all around the markers.
        let tight = cert.replace('\n', "");
        assert_eq!(
            certificates_from_base64(PkiField::Certificate, &b64(&tight)).unwrap(),
            chain
        );
        let key = key_ok(&collapse(&key));
        assert!(key.matches_certificate(&chain[0]));
    }

    #[test]
    fn c30_any_line_length_and_crlf() {
        let (cert, _) = identity(&PKCS_ECDSA_P256_SHA256);
        let der = der_of(&cert);
        let body = b64(&der);
        let odd: String = body
            .as_bytes()
            .chunks(17)
            .map(|c| format!("  {}\r\n", std::str::from_utf8(c).unwrap()))
            .collect();
        let text = format!("-----BEGIN CERTIFICATE-----\r\n{odd}-----END CERTIFICATE-----\r\n");
        assert_eq!(
            certificates_from_base64(PkiField::Certificate, &b64(text)).unwrap(),
            vec![der]
        );
    }

    #[test]
    fn c30_text_outside_blocks_is_ignored() {
        let (cert, key) = identity(&PKCS_ECDSA_P256_SHA256);
        let text = format!(
            "Bag Attributes\n    localKeyID: 01 02 03\nsubject=CN = client\n{cert}\ntrailing: words -----\n"
        );
        let chain = certificates_from_base64(PkiField::Certificate, &b64(&text)).unwrap();
        assert_eq!(chain, vec![der_of(&cert)]);
        let key = key_ok(&format!("Key Attributes: <No Attributes>\n{key}junk"));
        assert!(key.matches_certificate(&chain[0]));
    }

    #[test]
    fn c30_read_pem_reports_labels_and_broken_blocks() {
        let text = b"x -----BEGIN A-----QUJD-----END A----- y \
                     -----BEGIN B-----QUJD-----END C----- \
                     -----BEGIN D-----QUJD \
                     -----BEGIN E-----%%-----END E-----\
                     -----BEGIN F-----QUJD";
        let blocks = read_pem(text);
        let summary: Vec<(&str, Option<&[u8]>)> = blocks
            .iter()
            .map(|b| (b.label.as_str(), b.der.as_deref().map(Vec::as_slice)))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("A", Some(&b"ABC"[..])),
                ("B", None), // END names another label
                ("D", None), // another BEGIN comes first
                ("E", None), // not base64
                ("F", None), // never terminated
            ]
        );
        assert!(read_pem(b"no blocks here").is_empty());
        assert!(read_pem(b"-----BEGIN -----").is_empty(), "empty label");
    }

    #[test]
    fn c30_pem_block_debug_hides_contents() {
        let blocks = read_pem(b"-----BEGIN PRIVATE KEY-----c2VjcmV0-----END PRIVATE KEY-----");
        let debug = format!("{blocks:?}");
        assert!(debug.contains("PRIVATE KEY") && debug.contains("[6 bytes]"));
        assert!(
            !debug.contains("115") && !debug.contains("secret"),
            "{debug}"
        );
    }

    // ---- C25, C26, C27 --------------------------------------------------------------------

    #[test]
    fn c25_no_certificate_block() {
        for text in [
            "",
            "hello",
            "-----BEGIN TRUSTED CERTIFICATE-----QUJD-----END TRUSTED CERTIFICATE-----",
        ] {
            assert_eq!(
                certificates_from_base64(PkiField::Certificate, &b64(text)),
                Err(PkiError::NoCertificateBlock(PkiField::Certificate))
            );
        }
        let (_, key) = identity(&PKCS_ECDSA_P256_SHA256);
        let err = certificates_from_base64(PkiField::Certificate, &b64(&key)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid Certificate data file format: The file must be a PEM-encoded certificate beginning with \"-----BEGIN CERTIFICATE-----\"."
        );
    }

    #[test]
    fn c25_block_that_is_not_x509() {
        for text in [
            "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nMIIB\n", // never terminated
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        ] {
            let err = certificates_from_base64(PkiField::Certificate, &b64(text)).unwrap_err();
            assert_eq!(
                err.to_string(),
                "Invalid Certificate data: the PEM block could not be parsed as an X.509 certificate",
                "{text:?}"
            );
        }
        // A key's DER in a CERTIFICATE block.
        let (_, key) = identity(&PKCS_ECDSA_P256_SHA256);
        let text = pem("CERTIFICATE", &der_of(&key));
        assert_eq!(
            certificates_from_base64(PkiField::Certificate, &b64(text)),
            Err(PkiError::InvalidCertificate(PkiField::Certificate))
        );
        // Trailing bytes after the certificate are not a certificate either.
        let (cert, _) = identity(&PKCS_ECDSA_P256_SHA256);
        let mut der = der_of(&cert);
        der.push(0);
        assert_eq!(
            certificates_from_base64(PkiField::Certificate, &b64(pem("CERTIFICATE", &der))),
            Err(PkiError::InvalidCertificate(PkiField::Certificate))
        );
    }

    #[test]
    fn c25_d5_client_certificate_must_be_x509_version_3() {
        let (cert, _) = identity(&PKCS_ECDSA_P256_SHA256);
        let v1 = as_version_1(&cert);
        let parsed = Certificate::from_der(&der_of(&v1)).unwrap();
        assert_eq!(parsed.tbs_certificate().version(), Version::V1);
        let err = certificates_from_base64(PkiField::Certificate, &b64(&v1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid Certificate data: the certificate is X.509 version 1; client certificates must be X.509 version 3"
        );
        // Anywhere in the chain: every certificate is presented to the server (C26).
        let root = ca("root");
        let leaf = signed(&key(&PKCS_ECDSA_P256_SHA256), "client", &root, false);
        let chain = format!("{leaf}{}", as_version_1(&root.pem));
        assert_eq!(
            certificates_from_base64(PkiField::Certificate, &b64(&chain)),
            Err(PkiError::NotVersion3(PkiField::Certificate, 1))
        );
        // Trust anchors may be version 1: the TLS stack accepts them.
        assert_eq!(
            certificates_from_base64(PkiField::Ca, &b64(&v1)),
            Ok(vec![der_of(&v1)])
        );
    }

    #[test]
    fn c26_chain_keeps_leaf_first_and_every_certificate() {
        let root = ca("root");
        let mid = intermediate("intermediate", &root);
        let leaf_key = key(&PKCS_ECDSA_P256_SHA256);
        let leaf = signed(&leaf_key, "client", &mid, false);
        let chain_text = format!("{leaf}{}", mid.pem);
        let chain = certificates_from_base64(PkiField::Certificate, &b64(&chain_text)).unwrap();
        assert_eq!(chain, vec![der_of(&leaf), der_of(&mid.pem)]);
        let key = key_ok(&leaf_key.serialize_pem());
        assert!(key.matches_certificate(&chain[0]));
        assert!(!key.matches_certificate(&chain[1]));
    }

    #[test]
    fn c26_one_bad_certificate_in_a_chain_fails_the_field() {
        let (cert, _) = identity(&PKCS_ECDSA_P256_SHA256);
        let text = format!("{cert}-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n");
        assert_eq!(
            certificates_from_base64(PkiField::Certificate, &b64(text)),
            Err(PkiError::InvalidCertificate(PkiField::Certificate))
        );
    }

    #[test]
    fn c27_ca_bundle_with_several_certificates() {
        let roots: Vec<Ca> = (0..3).map(|i| ca(&format!("root {i}"))).collect();
        let (rsa_cert, _) = identity(&PKCS_RSA_SHA256);
        let mut bundle = String::from("# my CA bundle\n");
        for root in &roots {
            bundle.push_str(&root.pem);
            bundle.push_str("\n\n");
        }
        bundle.push_str(&rsa_cert);
        let anchors = certificates_from_base64(PkiField::Ca, &b64(&bundle)).unwrap();
        let mut expected: Vec<Vec<u8>> = roots.iter().map(|r| der_of(&r.pem)).collect();
        expected.push(der_of(&rsa_cert));
        assert_eq!(anchors, expected);
    }

    #[test]
    fn c27_ca_messages() {
        assert_eq!(
            certificates_from_base64(PkiField::Ca, &b64("nothing"))
                .unwrap_err()
                .to_string(),
            "Invalid CA certificate data file format: The file must be a PEM-encoded certificate beginning with \"-----BEGIN CERTIFICATE-----\"."
        );
        assert_eq!(
            certificates_from_base64(
                PkiField::Ca,
                &b64("-----BEGIN CERTIFICATE-----QUJD-----END CERTIFICATE-----")
            )
            .unwrap_err()
            .to_string(),
            "Invalid CA certificate data: the PEM block could not be parsed as an X.509 certificate"
        );
    }

    // ---- C28 ------------------------------------------------------------------------------

    #[test]
    fn c28_supported_keys_in_every_format() {
        let cases: Vec<(&str, String, KeyAlgorithm, KeyFormat)> = vec![
            (
                "rsa pkcs8",
                RSA_PKCS8.to_owned(),
                KeyAlgorithm::Rsa,
                KeyFormat::Pkcs8,
            ),
            (
                "rsa pkcs1",
                RSA_PKCS1.to_owned(),
                KeyAlgorithm::Rsa,
                KeyFormat::Pkcs1,
            ),
            (
                "rsa pkcs1 re-encoded",
                pkcs8_to_pkcs1(RSA_PKCS8),
                KeyAlgorithm::Rsa,
                KeyFormat::Pkcs1,
            ),
            (
                "p256 pkcs8",
                key(&PKCS_ECDSA_P256_SHA256).serialize_pem(),
                KeyAlgorithm::EcdsaP256,
                KeyFormat::Pkcs8,
            ),
            (
                "p256 sec1",
                pkcs8_to_sec1(&key(&PKCS_ECDSA_P256_SHA256).serialize_pem()),
                KeyAlgorithm::EcdsaP256,
                KeyFormat::Sec1,
            ),
            (
                "p256 sec1 openssl",
                P256_SEC1_FULL.to_owned(),
                KeyAlgorithm::EcdsaP256,
                KeyFormat::Sec1,
            ),
            (
                "p256 sec1 without point",
                P256_SEC1_NOPUB.to_owned(),
                KeyAlgorithm::EcdsaP256,
                KeyFormat::Sec1,
            ),
            (
                "p256 pkcs8 without point",
                P256_PKCS8_NOPUB.to_owned(),
                KeyAlgorithm::EcdsaP256,
                KeyFormat::Pkcs8,
            ),
            (
                "p384 pkcs8",
                key(&PKCS_ECDSA_P384_SHA384).serialize_pem(),
                KeyAlgorithm::EcdsaP384,
                KeyFormat::Pkcs8,
            ),
            (
                "p384 sec1",
                pkcs8_to_sec1(&key(&PKCS_ECDSA_P384_SHA384).serialize_pem()),
                KeyAlgorithm::EcdsaP384,
                KeyFormat::Sec1,
            ),
            (
                "ed25519 pkcs8 v2",
                key(&PKCS_ED25519).serialize_pem(),
                KeyAlgorithm::Ed25519,
                KeyFormat::Pkcs8,
            ),
            (
                "ed25519 pkcs8 v1",
                ED25519_PKCS8_V1.to_owned(),
                KeyAlgorithm::Ed25519,
                KeyFormat::Pkcs8,
            ),
        ];
        for (name, pem_text, algorithm, format) in cases {
            let key = key_ok(&pem_text);
            assert_eq!(key.algorithm(), algorithm, "{name}");
            assert_eq!(key.format(), format, "{name}");
            assert_tls_stack_accepts(&key);
        }
    }

    #[test]
    fn c28_key_der_is_the_block_unless_the_point_was_missing() {
        let p8 = key(&PKCS_ECDSA_P256_SHA256).serialize_pem();
        assert_eq!(key_ok(&p8).der(), der_of(&p8).as_slice());
        assert_eq!(key_ok(RSA_PKCS1).into_der(), der_of(RSA_PKCS1));
        // The SEC1 key without its point comes back as the same key with the point.
        let full = key_ok(P256_SEC1_FULL);
        let nopub = key_ok(P256_SEC1_NOPUB);
        assert_eq!(nopub.der(), der_of(P256_SEC1_FULL).as_slice());
        assert!(nopub.public == full.public);
        let p8_nopub = key_ok(P256_PKCS8_NOPUB);
        assert!(p8_nopub.public == full.public);
        assert_ne!(p8_nopub.der(), der_of(P256_PKCS8_NOPUB).as_slice());
    }

    #[test]
    fn c28_encrypted_keys() {
        let message = "Private key data is encrypted; encrypted private keys are not supported";
        for (name, text) in [
            ("ENCRYPTED PRIVATE KEY", RSA_PKCS8_ENCRYPTED.to_owned()),
            ("Proc-Type header", RSA_PKCS1_ENCRYPTED.to_owned()),
            (
                "Proc-Type collapsed",
                RSA_PKCS1_ENCRYPTED.split_whitespace().collect::<Vec<_>>().join(" "),
            ),
            (
                "Proc-Type on an EC key, odd spacing and case",
                "-----BEGIN EC PRIVATE KEY-----\nproc-type:4,encrypted\nDEK-Info: AES-128-CBC,00\n\nQUJD\n-----END EC PRIVATE KEY-----\n".to_owned(),
            ),
            (
                "encrypted block after a good key",
                format!("{RSA_PKCS8}{RSA_PKCS8_ENCRYPTED}"),
            ),
        ] {
            let err = key_err(&text);
            assert_eq!(err, PkiError::EncryptedKey, "{name}");
            assert_eq!(err.to_string(), message);
        }
        // Another Proc-Type value is not an encryption marker.
        let text = RSA_PKCS1.replacen("-----\n", "-----\nProc-Type: 4,MIC-ONLY\n\n", 1);
        assert_eq!(key_ok(&text).algorithm(), KeyAlgorithm::Rsa);
    }

    #[test]
    fn c28_no_key_block() {
        let (cert, _) = identity(&PKCS_ECDSA_P256_SHA256);
        for text in [
            cert.as_str(),
            "",
            "just text",
            "-----BEGIN PUBLIC KEY-----QUJD-----END PUBLIC KEY-----",
            "-----BEGIN OPENSSH PRIVATE KEY-----QUJD-----END OPENSSH PRIVATE KEY-----",
        ] {
            let err = key_err(text);
            assert_eq!(err, PkiError::NoPrivateKeyBlock, "{text:?}");
            assert_eq!(
                err.to_string(),
                "Invalid Private key data file format: The file must be a PEM-encoded private key beginning with \"-----BEGIN PRIVATE KEY-----\", \"-----BEGIN RSA PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\"."
            );
        }
    }

    #[test]
    fn c28_unsupported_or_malformed_keys() {
        use x509_cert::der::{Decode, Encode};
        let message = "Invalid Private key data: the PEM block could not be parsed as a supported private key";
        let p256 = key(&PKCS_ECDSA_P256_SHA256).serialize_pem();
        let other_p256 = P256_SEC1_FULL;
        // An embedded public point that belongs to another key.
        let mismatched_point = {
            let own = der_of(&pkcs8_to_sec1(&p256));
            let other = der_of(other_p256);
            let mut ec = sec1::EcPrivateKey::from_der(&own).unwrap();
            let other = sec1::EcPrivateKey::from_der(&other).unwrap();
            ec.public_key = other.public_key;
            pem("EC PRIVATE KEY", &ec.to_der().unwrap())
        };
        // An Ed25519 v2 key whose public key is not its own.
        let ed_mismatch = {
            let der = der_of(&key(&PKCS_ED25519).serialize_pem());
            let other = der_of(&key(&PKCS_ED25519).serialize_pem());
            let mut info = pkcs8::PrivateKeyInfoRef::from_der(&der).unwrap();
            info.public_key = pkcs8::PrivateKeyInfoRef::from_der(&other)
                .unwrap()
                .public_key;
            pem("PRIVATE KEY", &info.to_der().unwrap())
        };
        // SEC1 without a named curve.
        let no_curve = {
            let own = der_of(&pkcs8_to_sec1(&p256));
            let mut ec = sec1::EcPrivateKey::from_der(&own).unwrap();
            ec.parameters = None;
            pem("EC PRIVATE KEY", &ec.to_der().unwrap())
        };
        // An RSA key in an EC block and the reverse.
        let rsa_as_ec = pem("EC PRIVATE KEY", &der_of(RSA_PKCS1));
        let ec_as_rsa = pem("RSA PRIVATE KEY", &der_of(other_p256));
        for (name, text) in [
            ("secp256k1", K256_SEC1.to_owned()),
            ("x25519", X25519_PKCS8.to_owned()),
            (
                "not base64 inside",
                "-----BEGIN PRIVATE KEY-----\n%%\n-----END PRIVATE KEY-----\n".to_owned(),
            ),
            (
                "not DER",
                "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n".to_owned(),
            ),
            (
                "unterminated",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n".to_owned(),
            ),
            ("mismatched point", mismatched_point),
            ("mismatched ed25519", ed_mismatch),
            ("no curve", no_curve),
            ("rsa as ec", rsa_as_ec),
            ("ec as rsa", ec_as_rsa),
            // Only the first key block counts.
            (
                "bad first block",
                format!("-----BEGIN PRIVATE KEY-----QUJD-----END PRIVATE KEY-----\n{p256}"),
            ),
        ] {
            let err = key_err(&text);
            assert_eq!(err, PkiError::UnsupportedKey, "{name}");
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn c28_first_key_block_wins() {
        let ec = key(&PKCS_ECDSA_P256_SHA256).serialize_pem();
        let key = key_ok(&format!("{ec}{RSA_PKCS8}"));
        assert_eq!(key.algorithm(), KeyAlgorithm::EcdsaP256);
    }

    #[test]
    fn c28_private_key_debug_is_redacted() {
        let key = key_ok(RSA_PKCS1);
        let debug = format!("{key:?}");
        assert_eq!(
            debug,
            "PrivateKey { algorithm: Rsa, format: Pkcs1, der: \"[REDACTED]\" }"
        );
    }

    // ---- C29 ------------------------------------------------------------------------------

    #[test]
    fn c29_each_key_matches_its_own_certificate_only() {
        let algs = [
            &PKCS_RSA_SHA256,
            &PKCS_ECDSA_P256_SHA256,
            &PKCS_ECDSA_P384_SHA384,
            &PKCS_ED25519,
        ];
        let pairs: Vec<(PrivateKey, Vec<u8>)> = algs
            .iter()
            .map(|alg| {
                let (cert, key) = identity(alg);
                (key_ok(&key), der_of(&cert))
            })
            .collect();
        for (i, (key, _)) in pairs.iter().enumerate() {
            for (j, (_, cert)) in pairs.iter().enumerate() {
                assert_eq!(key.matches_certificate(cert), i == j, "key {i} cert {j}");
            }
        }
        // Same algorithm, another key.
        for alg in [
            &PKCS_ECDSA_P256_SHA256,
            &PKCS_ECDSA_P384_SHA384,
            &PKCS_ED25519,
        ] {
            let (cert, _) = identity(alg);
            let (_, other) = identity(alg);
            let key = key_ok(&other);
            assert_eq!(
                check_key_matches(&key, &der_of(&cert)),
                Err(PkiError::KeyMismatch)
            );
        }
        assert_eq!(
            PkiError::KeyMismatch.to_string(),
            "Private key data does not match the certificate data"
        );
    }

    #[test]
    fn c29_matching_works_across_key_formats() {
        let rsa = rcgen::KeyPair::from_pem(RSA_PKCS8).unwrap();
        let rsa_cert = der_of(&self_signed(&rsa, "rsa"));
        for text in [
            RSA_PKCS8.to_owned(),
            RSA_PKCS1.to_owned(),
            pkcs8_to_pkcs1(RSA_PKCS8),
        ] {
            assert!(key_ok(&text).matches_certificate(&rsa_cert));
        }
        // OpenSSL's SEC1 key without its point, against a certificate of the full key.
        let p256 = rcgen::KeyPair::from_pem(&pem(
            "PRIVATE KEY",
            key_ok(P256_SEC1_FULL).public_pkcs8_for_tests().as_slice(),
        ))
        .unwrap();
        let cert = der_of(&self_signed(&p256, "ec"));
        for text in [P256_SEC1_FULL, P256_SEC1_NOPUB, P256_PKCS8_NOPUB] {
            assert!(key_ok(text).matches_certificate(&cert), "{text}");
        }
        // Ed25519 PKCS#8 v1 (no public key inside): derived from the seed.
        let ed = rcgen::KeyPair::from_pem(ED25519_PKCS8_V1).unwrap();
        let cert = der_of(&self_signed(&ed, "ed"));
        assert!(key_ok(ED25519_PKCS8_V1).matches_certificate(&cert));
    }

    #[test]
    fn c29_unparsable_certificate_never_matches() {
        let key = key_ok(RSA_PKCS8);
        assert!(!key.matches_certificate(b"\x30\x00"));
        assert!(!key.matches_certificate(&[]));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// PEM-ish text: markers, labels, base64 and noise in any order.
        fn pem_soup() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"-----BEGIN ".to_vec()),
                Just(b"-----END ".to_vec()),
                Just(b"-----".to_vec()),
                Just(b"CERTIFICATE".to_vec()),
                Just(b"PRIVATE KEY".to_vec()),
                Just(b"EC PRIVATE KEY".to_vec()),
                Just(b"Proc-Type: 4,ENCRYPTED".to_vec()),
                Just(b"MIIB".to_vec()),
                Just(b"QUJD==".to_vec()),
                Just(b"\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..8),
            ];
            proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
        }

        /// One ASCII white space character (C24).
        fn white_space() -> impl Strategy<Value = char> {
            prop_oneof![Just(' '), Just('\t'), Just('\n'), Just('\r'), Just('\x0c')]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            // C24: any bytes survive encoding, with or without padding and with white space
            // sprinkled anywhere.
            #[test]
            fn c24_round_trip(
                data in proptest::collection::vec(any::<u8>(), 0..200),
                padded in any::<bool>(),
                spaces in proptest::collection::vec((any::<prop::sample::Index>(), white_space()), 0..10),
            ) {
                let mut text: Vec<char> = if padded {
                    b64(&data)
                } else {
                    base64::engine::general_purpose::STANDARD_NO_PAD.encode(&data)
                }
                .chars()
                .collect();
                for (at, c) in spaces {
                    let at = at.index(text.len() + 1);
                    text.insert(at, c);
                }
                let text: String = text.into_iter().collect();
                prop_assert_eq!(strict_base64(text.as_bytes()).map(|v| v.to_vec()), Some(data));
            }

            // C24: a URL-safe character anywhere is rejected.
            #[test]
            fn c24_url_safe_character_rejected(
                data in proptest::collection::vec(any::<u8>(), 1..100),
                at in any::<prop::sample::Index>(),
                c in prop_oneof![Just('-'), Just('_')],
            ) {
                let mut text = b64(&data);
                let at = at.index(text.len());
                text.insert(at, c);
                prop_assert!(strict_base64(text.as_bytes()).is_none());
            }

            // C30: the scanner and parsers take any input without panicking.
            #[test]
            fn c30_any_input_is_safe(text in pem_soup()) {
                let _ = read_pem(&text);
                let _ = parse_certificates(PkiField::Certificate, &text);
                let _ = parse_private_key(&text);
            }
        }
    }

    impl PrivateKey {
        /// The key as PKCS#8 with its public key, for rcgen (tests only).
        fn public_pkcs8_for_tests(&self) -> Vec<u8> {
            use p256::pkcs8::EncodePrivateKey;
            let sec1 = sec1::EcPrivateKey::from_der(self.der()).unwrap();
            p256::SecretKey::from_slice(sec1.private_key)
                .unwrap()
                .to_pkcs8_der()
                .unwrap()
                .as_bytes()
                .to_vec()
        }
    }
}
