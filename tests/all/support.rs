//! Shared helpers: one compiled harness per test binary, connectors, certificates, the CLI.

use openai_connector_harness::{
    CodeCache, ConnectorFile, ExecuteOutcome, Executor, Harness, Settings, wit,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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

/// `{"apiKey": API_KEY}`.
pub fn key_secrets() -> String {
    format!(r#"{{"apiKey":"{API_KEY}"}}"#)
}

/// Runs params through `executor`; panics when the connector is invalid.
pub async fn execute(
    executor: &Executor,
    connector: &ConnectorFile,
    params: &str,
) -> wit::Execution {
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
pub fn data(e: &wit::Execution) -> &str {
    match &e.outcome {
        Ok(d) => d,
        Err(f) => panic!("execution failed: {}", f.service_message),
    }
}

/// The failure of a failed execution.
pub fn failure(e: &wit::Execution) -> &wit::Failure {
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

impl Issued {
    /// A rustls server configuration presenting this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
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

/// Runs the CLI on a blocking thread (the tests are async) and checks no secret in its output.
pub async fn run_cli(mut cmd: Command) -> Output {
    let output = tokio::task::spawn_blocking(move || cmd.output().expect("run openai-connector"))
        .await
        .unwrap();
    no_secret_in(&String::from_utf8_lossy(&output.stdout));
    no_secret_in(&String::from_utf8_lossy(&output.stderr));
    output
}
