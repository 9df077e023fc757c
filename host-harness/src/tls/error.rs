//! Failed handshakes as C74's Node-style `(code, message)`, decided by the rustls and webpki
//! error variants (never by their text).

use rustls::{CertificateError, Error as TlsError};

/// C74's code for a server certificate that could not be verified.
const UNVERIFIED: &str = "UNABLE_TO_VERIFY_LEAF_SIGNATURE";
/// C74's code for any other TLS failure.
const HANDSHAKE: &str = "ERR_TLS_HANDSHAKE";

/// C74's `(code, message)` for a server certificate that could not be verified.
fn unverified() -> (&'static str, String) {
    (
        UNVERIFIED,
        "unable to verify the first certificate".to_owned(),
    )
}

/// C74's `(code, message)` for an expired or not yet valid certificate.
fn expired() -> (&'static str, String) {
    ("CERT_HAS_EXPIRED", "certificate has expired".to_owned())
}

/// `ERR_TLS_HANDSHAKE` with a fixed description (OpenSSL's wording where it has one).
fn handshake(description: &str) -> (&'static str, String) {
    (HANDSHAKE, description.to_owned())
}

/// Maps a failed handshake to C74's code and message: `(code, message)`.
pub(crate) fn describe_tls_error(error: &std::io::Error, host: &str) -> (&'static str, String) {
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) else {
        return ("ECONNRESET", "socket hang up".to_owned());
    };
    match tls {
        TlsError::InvalidCertificate(cert) => describe_certificate_error(cert, host, tls),
        other => (HANDSHAKE, other.to_string()),
    }
}

/// C74 for a refused server certificate; `whole` is the error it came in, whose rustls text
/// describes variants added to rustls after this was written.
fn describe_certificate_error(
    cert: &CertificateError,
    host: &str,
    whole: &TlsError,
) -> (&'static str, String) {
    match cert {
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => expired(),
        CertificateError::NotValidForName => (
            "ERR_TLS_CERT_ALTNAME_INVALID",
            format!(
                "Hostname/IP does not match certificate's altnames: Host: {host}. is not in the cert's altnames: "
            ),
        ),
        CertificateError::NotValidForNameContext { presented, .. } => (
            "ERR_TLS_CERT_ALTNAME_INVALID",
            format!(
                "Hostname/IP does not match certificate's altnames: Host: {host}. is not in the cert's altnames: {}",
                presented
                    .iter()
                    .filter_map(|name| altname(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        CertificateError::UnknownIssuer
        | CertificateError::BadSignature
        | CertificateError::BadEncoding
        | CertificateError::UnhandledCriticalExtension
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => unverified(),
        // rustls still makes it from webpki's deprecated variants.
        #[allow(deprecated)]
        CertificateError::UnsupportedSignatureAlgorithm => unverified(),
        CertificateError::Revoked => handshake("certificate revoked"),
        CertificateError::UnknownRevocationStatus => handshake("unable to get certificate CRL"),
        CertificateError::ExpiredRevocationList
        | CertificateError::ExpiredRevocationListContext { .. } => handshake("CRL has expired"),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            handshake("unsupported certificate purpose")
        }
        CertificateError::ApplicationVerificationFailure => {
            handshake("application verification failure")
        }
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki) => describe_webpki_error(webpki, whole),
            None => (HANDSHAKE, format!("invalid peer certificate: {}", other.0)),
        },
        _ => (HANDSHAKE, whole.to_string()),
    }
}

/// C74 for the webpki errors rustls does not translate and passes on as
/// `CertificateError::Other`. Whatever stops the chain from verifying (a CA certificate
/// presented as the server's, as `openssl req -x509` makes by default; an intermediate that
/// is not a CA; a violated path length or name constraint; a certificate webpki cannot read,
/// such as X.509 v1; a search that hit its limits) is C74's "server certificate not trusted".
fn describe_webpki_error(error: &webpki::Error, whole: &TlsError) -> (&'static str, String) {
    use webpki::Error as W;
    match error {
        W::CaUsedAsEndEntity
        | W::EndEntityUsedAsCa
        | W::CertDistrusted
        | W::PathLenConstraintViolated
        | W::NameConstraintViolation
        | W::MalformedNameConstraint
        | W::InvalidNetworkMaskConstraint
        | W::MalformedDnsIdentifier
        | W::MaximumNameConstraintComparisonsExceeded
        | W::MaximumPathBuildCallsExceeded
        | W::MaximumPathDepthExceeded
        | W::MaximumSignatureChecksExceeded
        | W::SignatureAlgorithmMismatch
        | W::UnsupportedCertVersion
        | W::UnsupportedCriticalExtension
        | W::MalformedExtensions
        | W::ExtensionValueInvalid
        | W::EmptyEkuExtension
        | W::InvalidSerialNumber
        | W::BadDer
        | W::BadDerTime
        | W::TrailingData(_)
        | W::UnknownIssuer
        | W::InvalidSignatureForPublicKey
        | W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => unverified(),
        W::CertExpired { .. } | W::CertNotValidYet { .. } | W::InvalidCertValidity => expired(),
        W::UnsupportedNameType => handshake("unsupported name syntax"),
        W::CertRevoked => handshake("certificate revoked"),
        W::UnknownRevocationStatus => handshake("unable to get certificate CRL"),
        W::CrlExpired { .. } => handshake("CRL has expired"),
        W::InvalidCrlNumber
        | W::InvalidCrlSignatureForPublicKey
        | W::IssuerNotCrlSigner
        | W::UnsupportedCrlIssuingDistributionPoint
        | W::UnsupportedCrlSignatureAlgorithmContext(_)
        | W::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
        | W::UnsupportedCrlVersion
        | W::UnsupportedDeltaCrl
        | W::UnsupportedIndirectCrl
        | W::UnsupportedRevocationReason
        | W::UnsupportedRevocationReasonsPartitioning => {
            handshake("unable to use the certificate revocation list")
        }
        W::RequiredEkuNotFoundContext(_) => handshake("unsupported certificate purpose"),
        _ => (HANDSHAKE, whole.to_string()),
    }
}

/// webpki presents names as their `Debug` text (`DnsName("a")`, `IpAddress(1.2.3.4)`); C74
/// wants OpenSSL's `DNS:a` / `IP Address:1.2.3.4`. Other name kinds are not listed.
fn altname(presented: &str) -> Option<String> {
    if let Some(rest) = presented
        .strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
    {
        Some(format!("DNS:{rest}"))
    } else {
        presented
            .strip_prefix("IpAddress(")
            .and_then(|r| r.strip_suffix(')'))
            .map(|rest| format!("IP Address:{rest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::OtherError;
    use std::sync::Arc;

    /// The `(code, message)` of a handshake that failed with `cert`.
    fn describe(cert: CertificateError) -> (&'static str, String) {
        let io = std::io::Error::other(TlsError::InvalidCertificate(cert));
        describe_tls_error(&io, "localhost")
    }

    fn webpki(error: webpki::Error) -> CertificateError {
        CertificateError::Other(OtherError(Arc::new(error)))
    }

    #[test]
    fn c74_webpki_chain_errors_are_an_unverified_certificate_not_a_debug_text() {
        for error in [
            webpki::Error::CaUsedAsEndEntity,
            webpki::Error::EndEntityUsedAsCa,
            webpki::Error::PathLenConstraintViolated,
            webpki::Error::NameConstraintViolation,
            webpki::Error::UnsupportedCertVersion,
            webpki::Error::UnsupportedCriticalExtension,
            webpki::Error::MaximumPathDepthExceeded,
            webpki::Error::MalformedExtensions,
        ] {
            let name = format!("{error:?}");
            let (code, message) = describe(webpki(error));
            assert_eq!(
                (code, message.as_str()),
                (UNVERIFIED, "unable to verify the first certificate"),
                "{name}"
            );
        }
    }

    #[test]
    fn c74_other_certificate_errors_have_a_description_without_rust_debug_text() {
        for (cert, code, message) in [
            (
                webpki(webpki::Error::CertRevoked),
                HANDSHAKE,
                "certificate revoked",
            ),
            (
                webpki(webpki::Error::UnsupportedNameType),
                HANDSHAKE,
                "unsupported name syntax",
            ),
            (
                CertificateError::InvalidPurpose,
                HANDSHAKE,
                "unsupported certificate purpose",
            ),
            (
                CertificateError::UnsupportedSignatureAlgorithmContext {
                    signature_algorithm_id: vec![6, 3, 1, 2, 3],
                    supported_algorithms: Vec::new(),
                },
                UNVERIFIED,
                "unable to verify the first certificate",
            ),
            (
                CertificateError::ApplicationVerificationFailure,
                HANDSHAKE,
                "application verification failure",
            ),
        ] {
            assert_eq!(describe(cert), (code, message.to_owned()));
        }
    }
}
