//! Client certificates (mTLS) against servers that require them: the accept/reject matrix of
//! verification mode × server certificate × client identity, key encodings, redirects, and
//! identities refused at validation (contract section 9, C122–C127, C74, C75, C29).

use crate::support::*;
use crate::upstream::{Reply, Upstream};
use openai_connector_harness::Settings;
use std::net::{IpAddr, Ipv4Addr};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

const UNKNOWN_ISSUER: &str = "Certificate error: Status code: undefined. Message: Unexpected API Error: UNABLE_TO_VERIFY_LEAF_SIGNATURE - unable to verify the first certificate. Please check if your PKI certificates are valid or adjust SSL verification mode.";
const WRONG_NAME: &str = "TLS handshake failed: Status code: undefined. Message: Unexpected API Error: ERR_TLS_CERT_ALTNAME_INVALID - Hostname/IP does not match certificate's altnames: Host: 127.0.0.1. is not in the cert's altnames: DNS:other.example. Verify server certificate hostname and CA configuration.";
const EXPIRED: &str = "Status code: undefined. Message: Unexpected API Error: CERT_HAS_EXPIRED - certificate has expired";
/// TLS 1.3: the server's `certificate_required` alert arrives after the client's handshake
/// ended, on the first read; its text must still say what happened (C74, C75).
const CLIENT_CERT_REQUIRED: &str = "TLS handshake failed: Status code: undefined. Message: Unexpected API Error: ERR_TLS_HANDSHAKE - received fatal alert: CertificateRequired. Verify server certificate hostname and CA configuration.";

fn other_config(url: &str, mode: &str) -> String {
    format!(
        r#"{{"apiProvider":"Other","apiUrl":"{url}","defaultModel":"m","verificationMode":"{mode}"}}"#
    )
}

/// Runs `run` against `upstream` with the connector's `verificationMode` and secrets.
async fn run(
    upstream: &Upstream,
    mode: &str,
    secrets: &str,
) -> openai_connector_harness::Execution {
    let c = connector(
        &other_config(&upstream.url("/v1/chat/completions"), mode),
        secrets,
    );
    execute(&executor(Settings::default()), &c, &run_params("run", "{}")).await
}

/// The certificates of the matrix: a trusted CA that issues the client certificate and three
/// of the server certificates, a CA nobody trusts, and a decoy CA listed first in `caData`.
struct Matrix {
    trusted: TestPki,
    decoy: TestPki,
    servers: Vec<(&'static str, Issued)>,
}

impl Matrix {
    fn new() -> Matrix {
        let trusted = TestPki::new("Trusted CA");
        let unknown = TestPki::new("Unknown CA");
        let decoy = TestPki::new("Decoy CA");
        let servers = vec![
            (
                "trusted CA",
                trusted.server(&["localhost"], &[LOOPBACK], false),
            ),
            (
                "unknown CA",
                unknown.server(&["localhost"], &[LOOPBACK], false),
            ),
            ("wrong name", trusted.server(&["other.example"], &[], false)),
            ("expired", trusted.server(&["localhost"], &[LOOPBACK], true)),
        ];
        Matrix {
            trusted,
            decoy,
            servers,
        }
    }

    /// D3: a bundle, with the CA that matters second.
    fn ca_bundle(&self) -> Vec<String> {
        vec![self.decoy.ca_pem(), self.trusted.ca_pem()]
    }

    /// Secrets with `identity` (or the API key) and [`ca_bundle`](Self::ca_bundle).
    fn secrets(&self, identity: Option<&ClientIdentity>) -> String {
        pki_secrets(identity, &self.ca_bundle())
    }

    /// An upstream presenting `issued` that requires a client certificate from the trusted CA
    /// and answers every request with `reply`.
    async fn mtls_upstream(&self, issued: &Issued, reply: Reply) -> Upstream {
        Upstream::https_always(reply, issued.mtls_server_config(&self.trusted)).await
    }

    /// An upstream presenting the trusted server certificate, treating client certificates
    /// as `client_auth` says under TLS `versions`, answering with a completion.
    async fn upstream_with(
        &self,
        client_auth: ClientAuth<'_>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Upstream {
        let config = self.servers[0].1.server_config_with(client_auth, versions);
        Upstream::https_always(Reply::json(200, COMPLETION), config).await
    }
}

/// What the server check alone gives for `mode` and `server` (C125, C126, C74, C75).
fn server_check(mode: &str, server: &str) -> Result<(), &'static str> {
    match (mode, server) {
        (_, "trusted CA") | ("none", _) | ("certificate", "wrong name") => Ok(()),
        (_, "unknown CA") => Err(UNKNOWN_ISSUER),
        (_, "wrong name") => Err(WRONG_NAME),
        (_, "expired") => Err(EXPIRED),
        other => unreachable!("{other:?}"),
    }
}

// C122–C127, C74, C75: every verification mode × {trusted CA, unknown CA, wrong name, expired}
// × {client certificate, none} against a server that requires a client certificate.
#[tokio::test]
async fn c122_c127_mtls_accept_reject_matrix() {
    let m = Matrix::new();
    let client = m.trusted.client("connector-client", ClientKey::EcPkcs8);
    let mut table = vec!["| mode | server certificate | client certificate | result |".to_owned()];
    let mut mismatches = Vec::new();
    for mode in ["full", "certificate", "none"] {
        for (server, issued) in &m.servers {
            for with_identity in [true, false] {
                let upstream = m.mtls_upstream(issued, Reply::json(200, COMPLETION)).await;
                let secrets = m.secrets(with_identity.then_some(&client));
                let e = run(&upstream, mode, &secrets).await;
                let expected = server_check(mode, server).and(if with_identity {
                    Ok(())
                } else {
                    Err(CLIENT_CERT_REQUIRED)
                });
                let got = e
                    .outcome
                    .as_ref()
                    .map(|_| ())
                    .map_err(|f| f.service_message.as_str());
                let cell = format!(
                    "| {mode} | {server} | {} | {} |",
                    if with_identity { "EC P-256" } else { "none" },
                    match got {
                        Ok(()) => "ok".to_owned(),
                        Err(message) => format!("`{message}`"),
                    }
                );
                table.push(cell.clone());
                if got != expected {
                    mismatches.push(format!("{cell}\n  expected {expected:?}"));
                    continue;
                }
                // The other side of the wire.
                let sessions = upstream.tls_sessions();
                match (got, server_check(mode, server)) {
                    (Ok(()), _) => {
                        assert_eq!(data(&e), COMPLETION);
                        assert_eq!(upstream.requests().len(), 1, "{cell}");
                        assert_eq!(sessions.len(), 1, "{cell}");
                        assert_eq!(
                            sessions[0].client_cert.as_deref(),
                            Some(client.cert_der.as_slice()),
                            "C127: the server received the connector's certificate ({cell})"
                        );
                    }
                    (Err(_), Ok(())) => {
                        // The server refused the missing identity: nothing was served.
                        assert!(upstream.requests().is_empty(), "{cell}");
                        assert!(sessions.is_empty(), "{cell}");
                        let failures = upstream.tls_failures();
                        assert!(
                            failures.iter().any(|f| f.contains("no certificates")),
                            "{cell}: {failures:?}"
                        );
                    }
                    (Err(_), Err(_)) => {
                        // The client gave up first: nothing reached the application.
                        assert!(upstream.requests().is_empty(), "{cell}");
                        assert!(sessions.is_empty(), "{cell}");
                    }
                }
            }
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

// C26, C127, D4: RSA and EC identities in every accepted key encoding are offered and accepted.
#[tokio::test]
async fn c127_d4_rsa_and_ec_identities_in_each_encoding() {
    let m = Matrix::new();
    let issued = &m.servers[0].1;
    for kind in [
        ClientKey::EcPkcs8,
        ClientKey::EcSec1,
        ClientKey::RsaPkcs8,
        ClientKey::RsaPkcs1,
    ] {
        let client = m.trusted.client("connector-client", kind);
        let upstream = m.mtls_upstream(issued, Reply::json(200, COMPLETION)).await;
        let e = run(&upstream, "full", &m.secrets(Some(&client))).await;
        assert_eq!(data(&e), COMPLETION, "{kind:?}");
        let sessions = upstream.tls_sessions();
        assert_eq!(sessions.len(), 1, "{kind:?}");
        assert_eq!(
            sessions[0].client_cert.as_deref(),
            Some(client.cert_der.as_slice()),
            "{kind:?}"
        );
        // C23, C47: PKI mode without apiKey still sends `Authorization: Bearer ` (empty token).
        assert_eq!(
            upstream.only_request().header("authorization"),
            Some("Bearer")
        );
    }
}

// C127: the identity is offered on every request of the connector, redirects included.
#[tokio::test]
async fn c127_identity_is_offered_after_a_redirect() {
    let m = Matrix::new();
    let issued = &m.servers[0].1;
    let client = m.trusted.client("connector-client", ClientKey::RsaPkcs1);
    let target = m.mtls_upstream(issued, Reply::json(200, COMPLETION)).await;
    let location = target.url("/v2/chat/completions");
    let first = m
        .mtls_upstream(issued, Reply::redirect(307, &location))
        .await;
    let e = run(&first, "full", &m.secrets(Some(&client))).await;
    assert_eq!(data(&e), COMPLETION);
    for upstream in [&first, &target] {
        let sessions = upstream.tls_sessions();
        assert_eq!(sessions.len(), 1);
        assert_eq!(
            sessions[0].client_cert.as_deref(),
            Some(client.cert_der.as_slice())
        );
    }
    assert_eq!(target.only_request().target, "/v2/chat/completions");
}

// C127: without PKI mode no certificate is offered, even to a server that would take one;
// in PKI mode the same server receives it.
#[tokio::test]
async fn c127_no_identity_is_offered_without_pki_mode() {
    let m = Matrix::new();
    let upstream = m
        .upstream_with(ClientAuth::Optional(&m.trusted), rustls::DEFAULT_VERSIONS)
        .await;
    let e = run(&upstream, "full", &m.secrets(None)).await;
    assert_eq!(data(&e), COMPLETION);
    let client = m.trusted.client("connector-client", ClientKey::EcSec1);
    let e = run(&upstream, "full", &m.secrets(Some(&client))).await;
    assert_eq!(data(&e), COMPLETION);
    let offered: Vec<Option<Vec<u8>>> = upstream
        .tls_sessions()
        .into_iter()
        .map(|s| s.client_cert)
        .collect();
    assert_eq!(offered, vec![None, Some(client.cert_der.clone())]);
    // C46, C47: key mode sends the API key; PKI mode without apiKey an empty token.
    let requests = upstream.requests();
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(requests[1].header("authorization"), Some("Bearer"));
}

// C74, C75: under TLS 1.2 the server's refusal arrives during the handshake; the text names
// the alert as well.
#[tokio::test]
async fn c74_missing_client_certificate_under_tls_1_2() {
    let m = Matrix::new();
    let upstream = m
        .upstream_with(ClientAuth::Required(&m.trusted), &[&rustls::version::TLS12])
        .await;
    let e = run(&upstream, "full", &m.secrets(None)).await;
    assert_eq!(
        failure(&e).service_message,
        "TLS handshake failed: Status code: undefined. Message: Unexpected API Error: ERR_TLS_HANDSHAKE - received fatal alert: CertificateRequired. Verify server certificate hostname and CA configuration."
    );
    assert!(upstream.requests().is_empty());
    // With the identity, TLS 1.2 works too.
    let client = m.trusted.client("connector-client", ClientKey::RsaPkcs8);
    let e = run(&upstream, "full", &m.secrets(Some(&client))).await;
    assert_eq!(data(&e), COMPLETION);
}

// C29, C31: a key that does not belong to the certificate is refused at validation; `execute`
// exits 2 and nothing is sent (not even a connection is opened).
#[tokio::test]
async fn c29_key_not_matching_the_certificate_is_refused_before_any_connection() {
    let m = Matrix::new();
    let upstream = m
        .mtls_upstream(&m.servers[0].1, Reply::json(200, COMPLETION))
        .await;
    let mut client = m.trusted.client("connector-client", ClientKey::EcPkcs8);
    client.key_pem = m.trusted.client("someone-else", ClientKey::EcPkcs8).key_pem;
    let file = write_file(
        "mismatch.json",
        &format!(
            r#"{{"id":"pki","name":"PKI","config":{},"secrets":{}}}"#,
            other_config(&upstream.url("/v1/chat/completions"), "full"),
            m.secrets(Some(&client))
        ),
    );
    let params = write_file("params.json", &run_params("run", "{}"));
    let out = run_cli(execute_cmd(&file, &params)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error validating action type secrets: Private key data does not match the certificate data\n"
    );
    let out = run_cli(validate_cmd(&file)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(upstream.connections(), 0);
}

// C25 (D5): an X.509 version 1 client certificate is refused at validation, naming the field;
// before, it validated and then failed every handshake with the server's alert.
#[tokio::test]
async fn c25_d5_version_1_client_certificate_is_refused_at_validation() {
    let m = Matrix::new();
    let upstream = m
        .mtls_upstream(&m.servers[0].1, Reply::json(200, COMPLETION))
        .await;
    use base64::Engine;
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let secrets = format!(
        r#"{{"certificateData":"{}","privateKeyData":"{}"}}"#,
        b64(include_str!("fixtures/v1-client-cert.pem")),
        b64(include_str!("fixtures/v1-client-key.pem"))
    );
    let file = write_file(
        "v1-client.json",
        &format!(
            r#"{{"id":"pki","name":"PKI","config":{},"secrets":{secrets}}}"#,
            other_config(&upstream.url("/v1/chat/completions"), "none"),
        ),
    );
    let message = "error validating action type secrets: Invalid Certificate data: the certificate is X.509 version 1; client certificates must be X.509 version 3\n";
    let out = run_cli(validate_cmd(&file)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8(out.stderr).unwrap(), message);
    let params = write_file("params.json", &run_params("run", "{}"));
    let out = run_cli(execute_cmd(&file, &params)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(String::from_utf8(out.stderr).unwrap(), message);
    assert_eq!(upstream.connections(), 0);
}
