//! The forward proxy of the deployment settings (C129): `CONNECT` tunnels for https targets
//! with the connector's TLS inside, absolute form for http targets, proxy credentials and
//! headers to the proxy only, bypass and only-hosts lists, streaming through the tunnel, and
//! no proxy secret in any output.

use crate::support::*;
use crate::upstream::{Reply, Step, Upstream};
use base64::Engine;
use openai_connector_harness::Settings;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A host name that resolves nowhere: only the test proxy knows where it is.
const PROXIED_HOST: &str = "api.example.test";
const PROXY_USER: &str = "proxy-user";
const PROXY_PASSWORD: &str = "proxy-PASSWORD-s3cret";
const PROXY_HEADER_VALUE: &str = "proxy-header-VALUE-s3cret";
/// Everything that handles the proxy's secrets logs at its most detailed level (the compiler's
/// trace output would only drown it).
const TRACE_TRANSPORT: &str = "warn,openai_connector_harness=trace,openai_connector=trace,hyper=trace,hyper_util=trace,rustls=trace,tokio_rustls=trace,wasmtime_wasi_http=trace";

/// One request as the proxy received it: the request line and the headers.
#[derive(Clone, Debug)]
pub struct ProxyRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl ProxyRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The answer to an absolute-form request: status, headers, body.
pub type ProxyAnswer =
    Arc<dyn Fn(&ProxyRequest) -> (u16, Vec<(String, String)>, String) + Send + Sync>;

/// How the test proxy behaves.
#[derive(Clone)]
pub struct ProxyBehaviour {
    /// The `Proxy-Authorization` value required; other requests get 407.
    pub require_auth: Option<String>,
    /// `CONNECT` authorities the proxy resolves itself, to loopback addresses.
    pub hosts: HashMap<String, SocketAddr>,
    /// The answer to absolute-form (http target) requests.
    pub answer: ProxyAnswer,
    /// The answer to every `CONNECT` instead of opening the tunnel.
    pub refuse_connect: Option<ProxyAnswer>,
}

impl Default for ProxyBehaviour {
    fn default() -> Self {
        ProxyBehaviour {
            require_auth: None,
            hosts: HashMap::new(),
            answer: Arc::new(|_| (502, Vec::new(), String::new())),
            refuse_connect: None,
        }
    }
}

/// A loopback forward proxy that records what it is asked; it only ever connects to
/// 127.0.0.1. Stops when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<ProxyRequest>>>,
    task: JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestProxy {
    /// A plain-HTTP proxy.
    pub async fn start(behaviour: ProxyBehaviour) -> TestProxy {
        Self::start_with(behaviour, None).await
    }

    /// An https proxy presenting `config`'s certificate.
    pub async fn start_tls(
        behaviour: ProxyBehaviour,
        config: Arc<rustls::ServerConfig>,
    ) -> TestProxy {
        Self::start_with(behaviour, Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start_with(
        behaviour: ProxyBehaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<ProxyRequest>>> = Arc::default();
        let requests = log.clone();
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let behaviour = behaviour.clone();
                let log = requests.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, &behaviour, &log).await;
                            }
                        }
                        None => serve(stream, &behaviour, &log).await,
                    }
                });
            }
        });
        TestProxy { addr, log, task }
    }

    /// Everything the proxy was asked so far.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.log.lock().unwrap().clone()
    }

    /// `http://127.0.0.1:port` (or https), with `user:password@` when given.
    pub fn url(&self, scheme: &str, userinfo: Option<(&str, &str)>) -> String {
        match userinfo {
            Some((user, password)) => format!("{scheme}://{user}:{password}@{}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    behaviour: &ProxyBehaviour,
    log: &Mutex<Vec<ProxyRequest>>,
) {
    let mut client = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        match client.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push(line.trim_end().to_owned()),
        }
        if head.len() > 200 {
            return;
        }
    }
    let mut words = head[0].split(' ');
    let (method, target) = (
        words.next().unwrap_or_default().to_owned(),
        words.next().unwrap_or_default().to_owned(),
    );
    let headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let request = ProxyRequest {
        method,
        target,
        headers,
    };
    log.lock().unwrap().push(request.clone());

    if let Some(required) = &behaviour.require_auth
        && request.header("proxy-authorization") != Some(required.as_str())
    {
        let _ = client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }

    if request.method == "CONNECT"
        && let Some(answer) = &behaviour.refuse_connect
    {
        let _ = client.write_all(&response(answer(&request))).await;
        return;
    }
    if request.method == "CONNECT" {
        let to = behaviour
            .hosts
            .get(&request.target)
            .copied()
            .or_else(|| request.target.parse::<SocketAddr>().ok())
            .filter(|a| a.ip().is_loopback());
        let Some(to) = to else {
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        let Ok(mut upstream) = TcpStream::connect(to).await else {
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        if client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        // Bytes in both directions as they come: nothing is held back.
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    } else {
        let length: usize = request
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if client.read_exact(&mut body).await.is_err() {
            return;
        }
        let _ = client
            .write_all(&response((behaviour.answer)(&request)))
            .await;
        let _ = client.shutdown().await;
    }
}

/// An answer as the bytes of an HTTP/1.1 response that closes the connection.
fn response((status, headers, body): (u16, Vec<(String, String)>, String)) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        response.push_str(&format!("{n}: {v}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&body);
    response.into_bytes()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn settings(json: serde_json::Value) -> Settings {
    Settings::from_json(&json).unwrap()
}

/// Settings for the http `proxy` with the test credentials and proxy header.
fn proxy_settings(proxy: &TestProxy) -> serde_json::Value {
    serde_json::json!({
        "proxyUrl": proxy.url("http", Some((PROXY_USER, PROXY_PASSWORD))),
        "proxyHeaders": {"X-Proxy-Token": PROXY_HEADER_VALUE},
    })
}

/// A settings file holding [`proxy_settings`].
fn proxy_settings_file(proxy: &TestProxy) -> std::path::PathBuf {
    write_file("proxy-settings.json", &proxy_settings(proxy).to_string())
}

/// A connector file for `target` with the CA of its PKI and `identity` (else the API key).
fn tunnel_connector_file(
    name: &str,
    target: &TunnelTarget,
    identity: Option<&ClientIdentity>,
) -> std::path::PathBuf {
    write_file(
        name,
        &format!(
            r#"{{"id":"p1","name":"Proxied","config":{},"secrets":{}}}"#,
            other_config(&target.url("/v1/chat/completions")),
            pki_secrets(identity, &[target.pki.ca_pem()])
        ),
    )
}

/// Panics if `text` holds a proxy secret in any form.
fn no_proxy_secret_in(text: &str) {
    assert!(
        !text.contains(PROXY_PASSWORD),
        "proxy password leaked: {text}"
    );
    assert!(
        !text.contains(PROXY_HEADER_VALUE),
        "proxy header leaked: {text}"
    );
    let token = basic(PROXY_USER, PROXY_PASSWORD);
    assert!(
        !text.contains(token.trim_start_matches("Basic ")),
        "proxy credentials leaked: {text}"
    );
    no_secret_in(text);
}

/// A TLS upstream for `PROXIED_HOST` (and nothing else) requiring the client certificate.
struct TunnelTarget {
    pki: TestPki,
    upstream: Upstream,
}

impl TunnelTarget {
    async fn start(reply: Reply) -> TunnelTarget {
        let pki = TestPki::new("Gateway CA");
        let issued = pki.server(&[PROXIED_HOST], &[], false);
        let upstream = Upstream::https(
            Arc::new(move |_| reply.clone()),
            issued.mtls_server_config(&pki),
        )
        .await;
        TunnelTarget { pki, upstream }
    }

    fn authority(&self) -> String {
        format!("{PROXIED_HOST}:{}", self.upstream.addr.port())
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority())
    }

    /// A connector for this target trusting its CA, with `identity` (else the API key).
    fn connector(
        &self,
        identity: Option<&ClientIdentity>,
    ) -> openai_connector_harness::ConnectorFile {
        connector(
            &other_config(&self.url("/v1/chat/completions")),
            &pki_secrets(identity, &[self.pki.ca_pem()]),
        )
    }

    fn proxy_behaviour(&self) -> ProxyBehaviour {
        ProxyBehaviour {
            require_auth: Some(basic(PROXY_USER, PROXY_PASSWORD)),
            hosts: HashMap::from([(self.authority(), self.upstream.addr)]),
            ..ProxyBehaviour::default()
        }
    }
}

// C129: an https target is reached through a CONNECT tunnel; credentials and proxyHeaders go to
// the proxy only; C122–C127 apply inside the tunnel (caData, full verification of a name the
// client cannot even resolve, the client certificate); the tunnel is reused by the next
// execution.
#[tokio::test]
async fn c129_https_target_goes_through_a_connect_tunnel_with_tls_inside() {
    let target = TunnelTarget::start(Reply::json(200, COMPLETION)).await;
    let proxy = TestProxy::start(target.proxy_behaviour()).await;
    let client = target.pki.client("connector-client", ClientKey::EcSec1);
    let executor = executor(settings(proxy_settings(&proxy)));
    no_proxy_secret_in(&format!("{:?}", executor.settings()));
    let c = target.connector(Some(&client));
    for _ in 0..2 {
        let e = execute(&executor, &c, &run_params("run", r#"{"messages":[]}"#)).await;
        assert_eq!(data(&e), COMPLETION);
    }
    // The proxy opened one tunnel, to the right authority, with its credentials and headers.
    let tunnels = proxy.requests();
    assert_eq!(tunnels.len(), 1, "{tunnels:#?}");
    let tunnel = &tunnels[0];
    assert_eq!(tunnel.method, "CONNECT");
    assert_eq!(tunnel.target, target.authority());
    assert_eq!(tunnel.header("host"), Some(target.authority().as_str()));
    assert_eq!(
        tunnel.header("proxy-authorization"),
        Some(basic(PROXY_USER, PROXY_PASSWORD).as_str())
    );
    assert_eq!(tunnel.header("x-proxy-token"), Some(PROXY_HEADER_VALUE));
    // The connector's own headers travel inside the tunnel only.
    assert_eq!(tunnel.header("authorization"), None);
    assert_eq!(tunnel.header("content-type"), None);
    // The upstream got both requests over one TLS session, with the client certificate, and
    // no proxy header.
    let requests = target.upstream.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.target, "/v1/chat/completions");
        assert!(r.body_str().starts_with(r#"{"messages":[]"#), "{r:#?}");
        assert_eq!(
            r.header("host"),
            Some(target.authority().as_str()),
            "{r:#?}"
        );
        assert_eq!(r.header("proxy-authorization"), None);
        assert_eq!(r.header("x-proxy-token"), None);
    }
    let sessions = target.upstream.tls_sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].client_cert.as_deref(),
        Some(client.cert_der.as_slice())
    );
}

// C129: an http target goes to the proxy in absolute form, with the proxy's headers on the
// request itself.
#[tokio::test]
async fn c129_http_target_goes_to_the_proxy_in_absolute_form() {
    let proxy = TestProxy::start(ProxyBehaviour {
        require_auth: Some(basic(PROXY_USER, PROXY_PASSWORD)),
        answer: Arc::new(|_| {
            (
                200,
                vec![("Content-Type".into(), "application/json".into())],
                COMPLETION.to_owned(),
            )
        }),
        ..ProxyBehaviour::default()
    })
    .await;
    let executor = executor(settings(proxy_settings(&proxy)));
    let url = format!("http://{PROXIED_HOST}:8080/v1/chat/completions?x=1");
    let c = connector(&other_config(&url), &key_secrets());
    let e = execute(&executor, &c, &run_params("run", "{}")).await;
    assert_eq!(data(&e), COMPLETION);
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, url);
    assert_eq!(seen[0].header("host"), Some("api.example.test:8080"));
    assert_eq!(
        seen[0].header("proxy-authorization"),
        Some(basic(PROXY_USER, PROXY_PASSWORD).as_str())
    );
    assert_eq!(seen[0].header("x-proxy-token"), Some(PROXY_HEADER_VALUE));
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
}

// C129: proxyBypassHosts sends listed hosts direct; proxyOnlyHosts proxies only listed hosts.
// Direct requests carry no proxy header.
#[tokio::test]
async fn c129_bypass_and_only_hosts() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let proxy = TestProxy::start(ProxyBehaviour {
        answer: Arc::new(|_| (200, Vec::new(), COMPLETION.to_owned())),
        ..ProxyBehaviour::default()
    })
    .await;
    let direct = other_connector(&upstream, &key_secrets());
    let proxied = connector(
        &other_config(&format!("http://{PROXIED_HOST}/v1/chat/completions")),
        &key_secrets(),
    );
    let proxy_url = proxy.url("http", Some((PROXY_USER, PROXY_PASSWORD)));
    let params = run_params("run", "{}");

    let bypass = executor(settings(serde_json::json!({
        "proxyUrl": proxy_url, "proxyBypassHosts": ["127.0.0.1"],
        "proxyHeaders": {"X-Proxy-Token": PROXY_HEADER_VALUE},
    })));
    assert_eq!(data(&execute(&bypass, &direct, &params).await), COMPLETION);
    assert!(proxy.requests().is_empty());
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(data(&execute(&bypass, &proxied, &params).await), COMPLETION);
    assert_eq!(proxy.requests().len(), 1);

    let only = executor(settings(serde_json::json!({
        "proxyUrl": proxy_url, "proxyOnlyHosts": [PROXIED_HOST.to_uppercase()],
        "proxyHeaders": {"X-Proxy-Token": PROXY_HEADER_VALUE},
    })));
    assert_eq!(data(&execute(&only, &direct, &params).await), COMPLETION);
    assert_eq!(proxy.requests().len(), 1);
    assert_eq!(upstream.requests().len(), 2);
    assert_eq!(data(&execute(&only, &proxied, &params).await), COMPLETION);
    assert_eq!(proxy.requests().len(), 2);

    // Without either list, everything is proxied.
    let all = executor(settings(serde_json::json!({"proxyUrl": proxy_url})));
    assert_eq!(data(&execute(&all, &direct, &params).await), COMPLETION);
    assert_eq!(proxy.requests().len(), 3);
    assert_eq!(
        proxy.requests()[2].target,
        upstream.url("/v1/chat/completions")
    );
    assert_eq!(upstream.requests().len(), 2);
    for r in upstream.requests() {
        assert_eq!(r.header("proxy-authorization"), None);
        assert_eq!(r.header("x-proxy-token"), None);
    }
}

// C129, C70, C72: a proxy that refuses the tunnel answers for the request (as Kibana's proxy
// agent reports it); the target sees nothing and the credentials appear nowhere.
#[tokio::test]
async fn c129_refused_tunnel_reports_the_proxy_status() {
    let target = TunnelTarget::start(Reply::json(200, COMPLETION)).await;
    let proxy = TestProxy::start(target.proxy_behaviour()).await;
    let c = target.connector(None);
    for userinfo in [None, Some((PROXY_USER, "wrong-PASSWORD-s3cret"))] {
        let executor = executor(settings(serde_json::json!({
            "proxyUrl": proxy.url("http", userinfo),
        })));
        let e = execute(&executor, &c, &run_params("run", "{}")).await;
        assert_eq!(
            failure(&e).service_message,
            "Status code: 407. Message: API Error: Proxy Authentication Required"
        );
        assert!(!format!("{e:?}").contains("wrong-PASSWORD"));
    }
    assert_eq!(proxy.requests().len(), 2);
    assert_eq!(target.upstream.connections(), 0);
}

// C129, C66: a refused tunnel is reported by its status alone: a proxy's `Location` header
// does not send the request anywhere.
#[tokio::test]
async fn c129_a_refused_tunnel_cannot_redirect_the_request() {
    let target = TunnelTarget::start(Reply::json(200, COMPLETION)).await;
    let elsewhere = Upstream::always(Reply::json(200, COMPLETION)).await;
    let proxy = TestProxy::start(ProxyBehaviour {
        refuse_connect: Some({
            let location = elsewhere.url("/v1/chat/completions");
            Arc::new(move |_| {
                (
                    302,
                    vec![
                        ("Location".into(), location.clone()),
                        ("Content-Type".into(), "text/html".into()),
                    ],
                    "moved".into(),
                )
            })
        }),
        require_auth: None,
        ..target.proxy_behaviour()
    })
    .await;
    let executor = executor(settings(
        serde_json::json!({"proxyUrl": proxy.url("http", None)}),
    ));
    let c = target.connector(None);
    let e = execute(&executor, &c, &run_params("run", "{}")).await;
    assert!(
        failure(&e).service_message.starts_with("Status code: 302."),
        "{}",
        failure(&e).service_message
    );
    assert_eq!(proxy.requests().len(), 1);
    assert_eq!(elsewhere.connections(), 0);
    assert_eq!(target.upstream.connections(), 0);
}

// C74: a proxy that cannot be reached is named in the message, as Node names it.
#[tokio::test]
async fn c74_unreachable_proxy_is_named() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let executor = executor(settings(serde_json::json!({
        "proxyUrl": format!("http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"),
    })));
    let c = other_connector(&upstream, &key_secrets());
    let e = execute(&executor, &c, &run_params("run", "{}")).await;
    assert_eq!(
        failure(&e).service_message,
        format!(
            "Status code: undefined. Message: Unexpected API Error: ECONNREFUSED - connect ECONNREFUSED 127.0.0.1:{port}"
        )
    );
    no_proxy_secret_in(&format!("{e:?}"));
    assert_eq!(upstream.connections(), 0);
}

// C129: an https proxy's own certificate is checked with ssl.proxyVerificationMode against the
// default roots (never the connector's CA); `none` accepts the test proxy's certificate.
#[tokio::test]
async fn c129_https_proxy_is_verified_with_proxy_verification_mode() {
    let target = TunnelTarget::start(Reply::json(200, COMPLETION)).await;
    let proxy_pki = TestPki::new("Proxy CA");
    let proxy_cert = proxy_pki.server(&["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], false);
    let proxy = TestProxy::start_tls(target.proxy_behaviour(), proxy_cert.server_config()).await;
    let client = target.pki.client("connector-client", ClientKey::RsaPkcs8);
    // caData holds both CAs: the proxy's must still not be trusted for the proxy (C129).
    let c = connector(
        &other_config(&target.url("/v1/chat/completions")),
        &pki_secrets(Some(&client), &[target.pki.ca_pem(), proxy_pki.ca_pem()]),
    );
    let proxy_url = proxy.url("https", Some((PROXY_USER, PROXY_PASSWORD)));
    let strict = executor(settings(serde_json::json!({"proxyUrl": proxy_url})));
    let e = execute(&strict, &c, &run_params("run", "{}")).await;
    assert_eq!(
        failure(&e).service_message,
        "Certificate error: Status code: undefined. Message: Unexpected API Error: UNABLE_TO_VERIFY_LEAF_SIGNATURE - unable to verify the first certificate. Please check if your PKI certificates are valid or adjust SSL verification mode."
    );
    assert!(
        proxy.requests().is_empty(),
        "no CONNECT before the proxy is trusted"
    );
    let relaxed = executor(settings(serde_json::json!({
        "proxyUrl": proxy_url, "ssl": {"proxyVerificationMode": "none"},
    })));
    let e = execute(&relaxed, &c, &run_params("run", "{}")).await;
    assert_eq!(data(&e), COMPLETION);
    assert_eq!(proxy.requests().len(), 1);
    assert_eq!(proxy.requests()[0].method, "CONNECT");
    assert_eq!(target.upstream.requests().len(), 1);
}

// C129, C41: SSE streams through the tunnel unbuffered: the caller sees the first chunk while
// the upstream still holds the second. Runs the CLI, so the settings file's proxy keys are
// accepted end to end.
#[tokio::test]
async fn c129_c41_sse_streams_through_the_tunnel_unbuffered() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let first = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
    let rest = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let target = TunnelTarget::start(Reply::sse(vec![
        Step::Send(first.as_bytes().to_vec()),
        Step::Wait(gate.clone()),
        Step::Send(rest.as_bytes().to_vec()),
    ]))
    .await;
    let proxy = TestProxy::start(target.proxy_behaviour()).await;
    let client = target.pki.client("connector-client", ClientKey::EcPkcs8);
    let file = tunnel_connector_file("proxied-stream.json", &target, Some(&client));
    let params = write_file(
        "params.json",
        r#"{"subAction":"stream","subActionParams":{"stream":true,"body":"{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"}}"#,
    );
    let mut cmd = execute_cmd(&file, &params);
    cmd.arg("--settings")
        .arg(proxy_settings_file(&proxy))
        .env("OPENAI_CONNECTOR_LOG", TRACE_TRANSPORT);
    let (mut child, mut stdout) = spawn_piped(cmd);
    let mut stderr = child.stderr.take().unwrap();
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let (tail, status) = first_then_rest(
        &mut child,
        &mut stdout,
        first,
        &gate,
        "the first chunk came through the proxy while the upstream held the second",
    )
    .await;
    let stderr_text = stderr_text.await.unwrap();
    assert_eq!(status.code(), Some(0), "{stderr_text}");
    assert_eq!(tail, rest);
    assert_eq!(proxy.requests().len(), 1);
    assert_eq!(proxy.requests()[0].method, "CONNECT");
    // Even at trace level, the CLI's log holds no proxy secret.
    no_proxy_secret_in(&stderr_text);
}

// C32, C129: proxy credentials never appear in the CLI's output, whatever the log level; an
// unusable proxyUrl is a settings error that does not repeat it.
#[tokio::test]
async fn c32_c129_proxy_secrets_appear_in_no_output() {
    let target = TunnelTarget::start(Reply::json(200, COMPLETION)).await;
    let proxy = TestProxy::start(ProxyBehaviour {
        require_auth: Some("Basic something-else".into()),
        ..target.proxy_behaviour()
    })
    .await;
    let file = tunnel_connector_file("conn.json", &target, None);
    let params = write_file("params.json", &run_params("run", "{}"));
    let log = write_file("events.ndjson", "");
    let mut cmd = execute_cmd(&file, &params);
    cmd.arg("--settings")
        .arg(proxy_settings_file(&proxy))
        .arg("--event-log")
        .arg(&log)
        .env("OPENAI_CONNECTOR_LOG", TRACE_TRANSPORT);
    let out = run_cli(cmd).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("Status code: 407. Message: API Error: Proxy Authentication Required"),
        "{stdout}"
    );
    no_proxy_secret_in(&stdout);
    no_proxy_secret_in(&String::from_utf8(out.stderr).unwrap());
    no_proxy_secret_in(&std::fs::read_to_string(&log).unwrap());
    // The proxy did receive them (so the test would notice a leak).
    assert_eq!(
        proxy.requests()[0].header("proxy-authorization"),
        Some(basic(PROXY_USER, PROXY_PASSWORD).as_str())
    );

    let bad = write_file(
        "bad-settings.json",
        &format!(r#"{{"proxyUrl":"socks5://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:1080"}}"#),
    );
    let mut cmd = execute_cmd(&file, &params);
    cmd.arg("--settings").arg(&bad);
    let out = run_cli(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("[proxyUrl]: expected an http or https URL"),
        "{stderr}"
    );
    no_proxy_secret_in(&stderr);
    assert_eq!(proxy.requests().len(), 1);
}
