//! TLS profiles → rustls client configurations (contract section 9).
//!
//! The component validates and decodes certificates and keys; this module turns the decoded
//! profile into a `rustls::ClientConfig`; `error` maps handshake failures to the Node-style
//! codes of C74.

use anyhow::{Context, Result};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};
use std::fmt;
use std::sync::Arc;

mod error;
pub(crate) use error::describe_tls_error;

/// Server verification mode (C125, C126).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub(crate) enum Verification {
    /// Chain, validity and host name.
    #[default]
    Full,
    /// Chain and validity; any host name.
    Certificate,
    /// Nothing is checked; handshake signatures still are.
    None,
}

/// Encoding of a client private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KeyFormat {
    /// PKCS#8
    Pkcs8,
    /// PKCS#1 (RSA)
    Pkcs1,
    /// SEC1 (EC)
    Sec1,
}

/// A client identity in DER form. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientIdentity {
    /// Certificates, leaf first.
    pub(crate) chain_der: Vec<Vec<u8>>,
    /// Private key bytes.
    pub(crate) key_der: Vec<u8>,
    /// Key encoding.
    pub(crate) key_format: KeyFormat,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain_der.len())
            .field("key_der", &"[REDACTED]")
            .finish()
    }
}

/// Everything that decides how one TLS connection is made; equal profiles share one
/// `ClientConfig`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct TlsProfile {
    /// Verification mode.
    pub(crate) verification: Verification,
    /// Trust anchors replacing the default roots when non-empty (C124).
    pub(crate) ca_der: Vec<Vec<u8>>,
    /// Client certificate and key offered when asked (C127).
    pub(crate) identity: Option<ClientIdentity>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsProfile {
    /// Builds the rustls configuration. Fails with `Invalid or inaccessible PKI certificates:
    /// <detail>` when rustls refuses the identity or a trust anchor (C130).
    pub(crate) fn client_config(&self) -> Result<ClientConfig> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        if self.ca_der.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            for der in &self.ca_der {
                roots.add(CertificateDer::from(der.clone())).map_err(|e| {
                    anyhow::anyhow!("Invalid or inaccessible PKI certificates: {e}")
                })?;
            }
        }
        let roots = Arc::new(roots);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS 1.2/1.3 are not available")?;
        let builder = match self.verification {
            Verification::Full => builder.with_root_certificates(roots),
            Verification::Certificate => {
                let verifier = RelaxedVerifier::any_name(roots, provider)?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
            }
            Verification::None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(RelaxedVerifier::any_certificate(
                    provider,
                ))),
        };
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let chain = identity
                    .chain_der
                    .iter()
                    .map(|c| CertificateDer::from(c.clone()))
                    .collect();
                let key = match identity.key_format {
                    KeyFormat::Pkcs8 => {
                        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone()))
                    }
                    KeyFormat::Pkcs1 => {
                        PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(identity.key_der.clone()))
                    }
                    KeyFormat::Sec1 => {
                        PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(identity.key_der.clone()))
                    }
                };
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| anyhow::anyhow!("Invalid or inaccessible PKI certificates: {e}"))?
            }
        };
        Ok(config)
    }
}

/// The verifier of the relaxed modes. `certificate` (`chain` set): webpki checks the chain,
/// validity and signatures; only a name mismatch is forgiven. webpki checks the name last,
/// after the chain verified, so ignoring that one error never accepts an untrusted chain.
/// `none` (no `chain`): any certificate is accepted. Either way the handshake signatures are
/// still verified with the provider's algorithms (as webpki's verifier does), so the
/// connection is encrypted to whoever holds the presented certificate's key.
#[derive(Debug)]
struct RelaxedVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl RelaxedVerifier {
    /// `certificate` mode.
    fn any_name(roots: Arc<RootCertStore>, provider: Arc<CryptoProvider>) -> Result<Self> {
        let chain = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("Invalid or inaccessible PKI certificates: {e}"))?;
        Ok(RelaxedVerifier {
            chain: Some(chain),
            provider,
        })
    }

    /// `none` mode.
    fn any_certificate(provider: Arc<CryptoProvider>) -> Self {
        RelaxedVerifier {
            chain: None,
            provider,
        }
    }
}

impl ServerCertVerifier for RelaxedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
