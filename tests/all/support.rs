//! Shared helpers: one compiled harness per test binary, connectors, certificates, the CLI.

use crate::upstream::Upstream;
use base64::Engine;
use openai_connector_harness::{
    CodeCache, ConnectorFile, ExecuteOutcome, Execution, Executor, Failure, Harness, Settings,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};

/// The API key used by every test connector; `no_secret_in` checks output for it.
pub const API_KEY: &str = "sk-test-SECRET-0123456789abcdef";

/// The embedded component, compiled once per test binary.
pub fn harness() -> Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS
        .get_or_init(|| {
            Harness::embedded(CodeCache::Directory(scratch_dir("code-cache")))
                .expect("load the component")
        })
        .clone()
}

/// An executor with default settings but `responseTimeout` as given.
pub fn executor(settings: Settings) -> Executor {
    Executor::new(harness(), settings)
}

/// A per-process scratch folder under the target directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A connector from its `config` JSON and `secrets` JSON.
pub fn connector(config: &str, secrets: &str) -> ConnectorFile {
    ConnectorFile::parse(
        &format!(
            r#"{{"id":"test-conn","name":"Test Connector","config":{config},"secrets":{secrets}}}"#
        ),
        "test-conn",
        Path::new("."),
    )
    .expect("valid connector file")
}

/// An `Other` connector's config for `url`, with default model `m`.
pub fn other_config(url: &str) -> String {
    format!(r#"{{"apiProvider":"Other","apiUrl":"{url}","defaultModel":"m"}}"#)
}

/// An `Other` connector (see [`other_config`]) for `upstream`'s `/v1/chat/completions`.
pub fn other_connector(upstream: &Upstream, secrets: &str) -> ConnectorFile {
    connector(
        &other_config(&upstream.url("/v1/chat/completions")),
        secrets,
    )
}

/// `{"apiKey": API_KEY}`.
pub fn key_secrets() -> String {
    format!(r#"{{"apiKey":"{API_KEY}"}}"#)
}

/// Runs params through `executor`; panics when the connector is invalid.
pub async fn execute(executor: &Executor, connector: &ConnectorFile, params: &str) -> Execution {
    match executor
        .execute(connector, params)
        .await
        .expect("execution runs")
    {
        ExecuteOutcome::Executed(e) => {
            no_secret_in(&format!("{e:?}"));
            e
        }
        ExecuteOutcome::InvalidConnector(lines) => panic!("connector invalid: {lines:?}"),
    }
}

/// `run` params with `body` (a JSON text, escaped here).
pub fn run_params(sub_action: &str, body: &str) -> String {
    format!(
        r#"{{"subAction":"{sub_action}","subActionParams":{{"body":{}}}}}"#,
        serde_json::to_string(body).unwrap()
    )
}

/// The data of a successful execution.
pub fn data(e: &Execution) -> &str {
    match &e.outcome {
        Ok(d) => d,
        Err(f) => panic!("execution failed: {}", f.service_message),
    }
}

/// The failure of a failed execution.
pub fn failure(e: &Execution) -> &Failure {
    match &e.outcome {
        Ok(d) => panic!("execution succeeded with {d}"),
        Err(f) => f,
    }
}

/// Panics if `text` contains the test API key or test private-key material.
pub fn no_secret_in(text: &str) {
    assert!(!text.contains(API_KEY), "secret leaked: {text}");
    assert!(!text.contains("PRIVATE KEY"), "key material leaked: {text}");
}

/// A typical OpenAI chat completion.
pub const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1767225600,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"  Hello there  "},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11},"system_fingerprint":"fp_1","temperature":0.70}"#;

/// A test PKI: a CA and certificates it issues.
pub struct TestPki {
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and key issued by a [`TestPki`].
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl TestPki {
    pub fn new(name: &str) -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestPki { ca }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `dns` names plus IP SANs.
    pub fn server(&self, dns: &[&str], ips: &[std::net::IpAddr], expired: bool) -> Issued {
        let mut params =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Issued {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

/// How a client key is generated and encoded (D4: PKCS#8, PKCS#1 and SEC1 are accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKey {
    /// ECDSA P-256, `PRIVATE KEY` (PKCS#8).
    EcPkcs8,
    /// ECDSA P-256, `EC PRIVATE KEY` (SEC1).
    EcSec1,
    /// RSA 2048 (the `src/testdata` key: ring cannot generate RSA), `PRIVATE KEY` (PKCS#8).
    RsaPkcs8,
    /// The same RSA key as `RSA PRIVATE KEY` (PKCS#1).
    RsaPkcs1,
}

/// A client certificate issued by a [`TestPki`], with its key as PEM text.
pub struct ClientIdentity {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
}

const RSA_PKCS8: &str = include_str!("../../src/testdata/rsa-pkcs8.pem");
const RSA_PKCS1: &str = include_str!("../../src/testdata/rsa-pkcs1.pem");

impl TestPki {
    /// A client certificate (extended key usage `clientAuth`) for a fresh key of `kind`.
    pub fn client(&self, name: &str, kind: ClientKey) -> ClientIdentity {
        let key = match kind {
            ClientKey::EcPkcs8 | ClientKey::EcSec1 => KeyPair::generate().unwrap(),
            ClientKey::RsaPkcs8 | ClientKey::RsaPkcs1 => KeyPair::from_pem(RSA_PKCS8).unwrap(),
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let key_pem = match kind {
            ClientKey::EcPkcs8 | ClientKey::RsaPkcs8 => key.serialize_pem(),
            ClientKey::EcSec1 => pem("EC PRIVATE KEY", &p256_pkcs8_to_sec1(&key.serialize_der())),
            ClientKey::RsaPkcs1 => RSA_PKCS1.to_owned(),
        };
        ClientIdentity {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem,
        }
    }
}

/// Connector secrets for provider Other: PEM text base64-encoded (section 2), the client
/// identity when given (PKI mode, C21), `caData` holding `ca_pems` in order, and the API key
/// when there is no identity (C22).
pub fn pki_secrets(identity: Option<&ClientIdentity>, ca_pems: &[String]) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let mut secrets = serde_json::Map::new();
    match identity {
        Some(id) => {
            secrets.insert("certificateData".into(), b64(&id.cert_pem).into());
            secrets.insert("privateKeyData".into(), b64(&id.key_pem).into());
        }
        None => {
            secrets.insert("apiKey".into(), API_KEY.into());
        }
    }
    if !ca_pems.is_empty() {
        secrets.insert("caData".into(), b64(&ca_pems.concat()).into());
    }
    serde_json::Value::Object(secrets).to_string()
}

/// PEM text with 64-character lines.
fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One DER element at the start of `der`: (tag, contents, rest).
fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = der[0];
    let (len, header) = match der[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81 => (der[2] as usize, 3),
        0x82 => ((der[2] as usize) << 8 | der[3] as usize, 4),
        other => panic!("unexpected DER length byte {other:#x}"),
    };
    (tag, &der[header..header + len], &der[header + len..])
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

/// The SEC1 `ECPrivateKey` inside a P-256 PKCS#8 document, with the curve named in `[0]`
/// (RFC 5915), as OpenSSL writes `EC PRIVATE KEY` files.
fn p256_pkcs8_to_sec1(pkcs8: &[u8]) -> Vec<u8> {
    const P256_PARAMETERS: [u8; 12] = [
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let (_, info, _) = der_element(pkcs8);
    let (_, _version, rest) = der_element(info);
    let (_, _algorithm, rest) = der_element(rest);
    let (tag, ec_private_key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "PKCS#8 privateKey is an OCTET STRING");
    let (_, fields, _) = der_element(ec_private_key);
    let (_, _, after_version) = der_element(fields);
    let (_, _, after_key) = der_element(after_version);
    let version_and_key = &fields[..fields.len() - after_key.len()];
    assert_eq!(
        after_key[0], 0xa1,
        "ring writes the public key and no parameters"
    );
    let mut contents = version_and_key.to_vec();
    contents.extend_from_slice(&P256_PARAMETERS);
    contents.extend_from_slice(after_key);
    der_encode(0x30, &contents)
}

/// Whose client certificates a test server asks for.
#[derive(Clone, Copy)]
pub enum ClientAuth<'a> {
    /// None.
    Off,
    /// One issued by this CA, or the handshake fails.
    Required(&'a TestPki),
    /// One issued by this CA, if the client offers one.
    Optional(&'a TestPki),
}

impl Issued {
    /// A server configuration presenting this certificate that requires a client certificate
    /// issued by `client_ca` (C127's counterpart: an mTLS gateway).
    pub fn mtls_server_config(&self, client_ca: &TestPki) -> Arc<rustls::ServerConfig> {
        self.server_config_with(ClientAuth::Required(client_ca), rustls::DEFAULT_VERSIONS)
    }

    /// A rustls server configuration presenting this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_with(ClientAuth::Off, rustls::DEFAULT_VERSIONS)
    }

    /// A server configuration presenting this certificate, treating client certificates as
    /// `client_auth` says, speaking only the TLS `versions` given.
    pub fn server_config_with(
        &self,
        client_auth: ClientAuth,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap();
        let builder = match client_auth {
            ClientAuth::Off => builder.with_no_client_auth(),
            ClientAuth::Required(ca) | ClientAuth::Optional(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.ca.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = match client_auth {
                    ClientAuth::Optional(_) => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                builder.with_client_cert_verifier(verifier.build().unwrap())
            }
        };
        let config = builder
            .with_single_cert(
                vec![self.cert_der.clone().into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .unwrap();
        Arc::new(config)
    }
}

/// The `openai-connector` binary with a private code cache and no inherited log filter.
pub fn cli() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openai-connector"));
    cmd.env("XDG_CACHE_HOME", scratch_dir("cli-cache"))
        .env_remove("OPENAI_CONNECTOR_LOG");
    cmd
}

/// `openai-connector validate FILE`.
pub fn validate_cmd(file: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = cli();
    cmd.arg("validate").arg(file);
    cmd
}

/// `openai-connector execute FILE --params PARAMS`.
pub fn execute_cmd(
    file: impl AsRef<std::ffi::OsStr>,
    params: impl AsRef<std::ffi::OsStr>,
) -> Command {
    let mut cmd = cli();
    cmd.arg("execute").arg(file).arg("--params").arg(params);
    cmd
}

/// Starts `cmd` with its stdout and stderr piped, for tests that read the output as it comes.
pub fn spawn_piped(cmd: Command) -> (tokio::process::Child, tokio::process::ChildStdout) {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, stdout)
}

/// Reads exactly `len` bytes from `stdout` within 30 s; `expect` says what a timeout means.
pub async fn read_first(
    stdout: &mut tokio::process::ChildStdout,
    len: usize,
    expect: &str,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = vec![0u8; len];
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stdout.read_exact(&mut got),
    )
    .await
    .expect(expect)
    .unwrap();
    got
}

/// Reads `first` from `stdout` (see [`read_first`]) and checks it, then opens `gate` and reads
/// the rest to the end; returns the rest and how `child` exited.
pub async fn first_then_rest(
    child: &mut tokio::process::Child,
    stdout: &mut tokio::process::ChildStdout,
    first: &str,
    gate: &tokio::sync::Notify,
    expect: &str,
) -> (String, std::process::ExitStatus) {
    use tokio::io::AsyncReadExt;
    let got = read_first(stdout, first.len(), expect).await;
    assert_eq!(got, first.as_bytes());
    gate.notify_one();
    let mut tail = Vec::new();
    stdout.read_to_end(&mut tail).await.unwrap();
    let status = child.wait().await.unwrap();
    (String::from_utf8(tail).unwrap(), status)
}

/// Writes `contents` to a fresh file in a scratch folder and returns its path.
pub fn write_file(name: &str, contents: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch_dir("files").join(n.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Sends one HTTP/1.1 request to `authority` (JSON content type, `Bearer token` when given);
/// returns the response with its body unread.
pub async fn http1_request(
    authority: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    // Ends when the response is done or the server goes away.
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap();
    sender.send_request(req).await.unwrap()
}

/// Runs the CLI on a blocking thread (the tests are async) and checks no secret in its output.
pub async fn run_cli(mut cmd: Command) -> Output {
    let output = tokio::task::spawn_blocking(move || cmd.output().expect("run openai-connector"))
        .await
        .unwrap();
    no_secret_in(&String::from_utf8_lossy(&output.stdout));
    no_secret_in(&String::from_utf8_lossy(&output.stderr));
    output
}
