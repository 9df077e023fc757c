//! HTTPS through the harness: trust roots, verification modes and TLS error texts.

use crate::support::*;
use crate::upstream::{Reply, Upstream};
use base64::Engine;
use openai_connector_harness::Settings;
use std::net::{IpAddr, Ipv4Addr};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn tls_upstream(issued: &Issued) -> Upstream {
    Upstream::https_always(Reply::json(200, COMPLETION), issued.server_config()).await
}

/// A test CA and a TLS upstream with a certificate it issued for `localhost` and 127.0.0.1
/// (expired when `expired`).
async fn localhost_upstream(expired: bool) -> (TestPki, Upstream) {
    let pki = TestPki::new("Test CA");
    let upstream = tls_upstream(&pki.server(&["localhost"], &[LOOPBACK], expired)).await;
    (pki, upstream)
}

/// Secrets with the API key and `pki`'s CA as `caData`.
fn ca_data_secrets(pki: &TestPki) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem());
    format!(r#"{{"apiKey":"{API_KEY}","caData":"{b64}"}}"#)
}

fn custom_host(upstream: &Upstream, mode: Option<&str>, ca_pem: Option<&str>) -> Settings {
    let mut ssl = serde_json::Map::new();
    if let Some(mode) = mode {
        ssl.insert("verificationMode".into(), mode.into());
    }
    if let Some(ca) = ca_pem {
        ssl.insert("certificateAuthoritiesData".into(), ca.into());
    }
    Settings::from_json(&serde_json::json!({
        "customHostSettings": [{"url": format!("https://{}", upstream.addr), "ssl": ssl}]
    }))
    .unwrap()
}

async fn run(
    upstream: &Upstream,
    settings: Settings,
    secrets: &str,
) -> openai_connector_harness::Execution {
    let c = other_connector(upstream, secrets);
    execute(&executor(settings), &c, &run_params("run", "{}")).await
}

/// [`run`] with the API key, under a custom host entry for `upstream` (see [`custom_host`]).
async fn run_custom_host(
    upstream: &Upstream,
    mode: Option<&str>,
    ca_pem: Option<&str>,
) -> openai_connector_harness::Execution {
    run(
        upstream,
        custom_host(upstream, mode, ca_pem),
        &key_secrets(),
    )
    .await
}

#[tokio::test]
async fn c124_custom_host_ca_is_trusted_under_full() {
    let (pki, upstream) = localhost_upstream(false).await;
    let e = run_custom_host(&upstream, None, Some(&pki.ca_pem())).await;
    assert_eq!(data(&e), COMPLETION);
    assert_eq!(upstream.only_request().body_str(), r#"{"stream":false}"#);
}

/// C128: an entry for an IPv6 host matches requests to it. The URL's host is `[::1]` on both
/// sides; the entry once never matched because the request's host lost its brackets first.
#[tokio::test]
async fn c128_custom_host_entry_matches_an_ipv6_host() {
    let pki = TestPki::new("Test CA");
    let issued = pki.server(&[], &[IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)], false);
    let upstream =
        Upstream::https_always_ipv6(Reply::json(200, COMPLETION), issued.server_config()).await;
    assert!(upstream.url("/").starts_with("https://[::1]:"));
    // The CA is not among the default roots: only the entry's CA makes the request succeed.
    let e = run_custom_host(&upstream, None, Some(&pki.ca_pem())).await;
    assert_eq!(data(&e), COMPLETION);
    // And an entry for the same address on another port does not apply.
    let other_port = Settings::from_json(&serde_json::json!({
        "customHostSettings": [{
            "url": format!("https://[::1]:{}", upstream.addr.port() ^ 1),
            "ssl": {"verificationMode": "none"}
        }]
    }))
    .unwrap();
    let e = run(&upstream, other_port, &key_secrets()).await;
    assert!(
        failure(&e)
            .service_message
            .contains("UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
        "{}",
        failure(&e).service_message
    );
}

#[tokio::test]
async fn c74_c75_unknown_issuer() {
    let (_, upstream) = localhost_upstream(false).await;
    let e = run(&upstream, Settings::default(), &key_secrets()).await;
    assert_eq!(
        failure(&e).service_message,
        "Certificate error: Status code: undefined. Message: Unexpected API Error: UNABLE_TO_VERIFY_LEAF_SIGNATURE - unable to verify the first certificate. Please check if your PKI certificates are valid or adjust SSL verification mode."
    );
    assert!(upstream.requests().is_empty());
}

/// A self-signed server certificate for `localhost` and 127.0.0.1 marked `CA:TRUE`, as
/// `openssl req -x509` makes by default: (certificate PEM, upstream presenting it).
async fn self_signed_ca_upstream() -> (String, Upstream) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(LOOPBACK));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let issued = Issued {
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    };
    (cert.pem(), tls_upstream(&issued).await)
}

#[tokio::test]
async fn c74_c75_self_signed_ca_certificate_is_an_unverified_leaf() {
    // webpki refuses a CA certificate as the server's (`CaUsedAsEndEntity`), trusted or not;
    // rustls passes that on only as `CertificateError::Other`.
    let (cert_pem, upstream) = self_signed_ca_upstream().await;
    let expected = "Certificate error: Status code: undefined. Message: Unexpected API Error: UNABLE_TO_VERIFY_LEAF_SIGNATURE - unable to verify the first certificate. Please check if your PKI certificates are valid or adjust SSL verification mode.";
    let e = run(&upstream, Settings::default(), &key_secrets()).await;
    assert_eq!(failure(&e).service_message, expected);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&cert_pem);
    let secrets = format!(r#"{{"apiKey":"{API_KEY}","caData":"{b64}"}}"#);
    let e = run(&upstream, Settings::default(), &secrets).await;
    assert_eq!(failure(&e).service_message, expected);
    let e = run_custom_host(&upstream, Some("certificate"), Some(&cert_pem)).await;
    assert_eq!(failure(&e).service_message, expected);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn c74_c75_name_mismatch_and_certificate_mode() {
    let pki = TestPki::new("Test CA");
    let upstream = tls_upstream(&pki.server(&["other.example", "*.example.net"], &[], false)).await;
    let e = run_custom_host(&upstream, None, Some(&pki.ca_pem())).await;
    assert_eq!(
        failure(&e).service_message,
        "TLS handshake failed: Status code: undefined. Message: Unexpected API Error: ERR_TLS_CERT_ALTNAME_INVALID - Hostname/IP does not match certificate's altnames: Host: 127.0.0.1. is not in the cert's altnames: DNS:other.example, DNS:*.example.net. Verify server certificate hostname and CA configuration."
    );
    // C126: `certificate` checks the chain but not the name.
    let e = run_custom_host(&upstream, Some("certificate"), Some(&pki.ca_pem())).await;
    assert_eq!(data(&e), COMPLETION);
}

#[tokio::test]
async fn c126_certificate_mode_still_checks_the_chain_and_none_does_not() {
    let (_, upstream) = localhost_upstream(false).await;
    let e = run_custom_host(&upstream, Some("certificate"), None).await;
    assert!(
        failure(&e)
            .service_message
            .starts_with("Certificate error: "),
        "{}",
        failure(&e).service_message
    );
    let e = run_custom_host(&upstream, Some("none"), None).await;
    assert_eq!(data(&e), COMPLETION);
}

#[tokio::test]
async fn c74_expired_certificate() {
    let (pki, upstream) = localhost_upstream(true).await;
    let e = run_custom_host(&upstream, None, Some(&pki.ca_pem())).await;
    assert_eq!(
        failure(&e).service_message,
        "Status code: undefined. Message: Unexpected API Error: CERT_HAS_EXPIRED - certificate has expired"
    );
}

#[tokio::test]
async fn c122_c124_connector_ca_data_replaces_the_roots() {
    // D3: caData alone is valid for Other; its CA becomes the only trust anchor.
    let (pki, upstream) = localhost_upstream(false).await;
    let e = run(&upstream, Settings::default(), &ca_data_secrets(&pki)).await;
    assert_eq!(data(&e), COMPLETION);
    // A different CA in caData is not trusted, even with a custom host CA that would be (C124:
    // the connector's caData wins).
    let other = TestPki::new("Other CA");
    let e = run(
        &upstream,
        custom_host(&upstream, None, Some(&pki.ca_pem())),
        &ca_data_secrets(&other),
    )
    .await;
    assert!(
        failure(&e)
            .service_message
            .starts_with("Certificate error: ")
    );
}

#[tokio::test]
async fn c130_identity_refused_by_the_tls_stack_fails_before_anything_is_sent() {
    // A 1024-bit RSA key is a valid key that matches its certificate (C28, C29), but rustls with
    // ring refuses RSA keys under 2048 bits.
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let secrets = format!(
        r#"{{"certificateData":"{}","privateKeyData":"{}"}}"#,
        b64(include_str!("fixtures/rsa1024-cert.pem")),
        b64(include_str!("fixtures/rsa1024-key.pem"))
    );
    let c = connector(
        &other_config(&upstream.url("/v1").replace("http:", "https:")),
        &secrets,
    );
    let e = execute(&executor(Settings::default()), &c, &run_params("run", "{}")).await;
    let message = &failure(&e).service_message;
    assert!(
        message.starts_with("Invalid or inaccessible PKI certificates: "),
        "{message}"
    );
    assert_eq!(e.request_body_bytes, None);
    assert!(upstream.requests().is_empty());
}
