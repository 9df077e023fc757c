//! Connection reuse: 100 sequential `execute` calls (`run`, provider Other, `caData`) to a
//! loopback TLS 1.3 upstream, through the whole harness, in three configurations:
//!
//! - `keep-alive pool`: the executor's default; one TCP + TLS handshake for all 100 calls;
//! - `no pool, TLS resumption`: a pool that keeps no connection but shares the rustls
//!   configuration, so every call connects and resumes its TLS session;
//! - `no pool` (`Executor::with_connection_pool(None)`): every call builds its TLS
//!   configuration, connects and makes a full handshake (the harness before the pool).
//!
//! Next to them, the bare cost of one TCP connect + full TLS handshake with the same rustls
//! configuration, without the component. Each configuration runs `ROUNDS` times with a fresh
//! executor; the median round is reported. Results go to `benches/REUSE.md`.
//!
//! `cargo bench -p openai-connector-harness --bench reuse`
#![expect(clippy::print_stdout, reason = "a bench reports on stdout")]

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use openai_connector_harness::{
    CodeCache, ConnectionPool, ConnectorFile, ExecuteOutcome, Executor, Harness, PoolLimits,
    Settings, demo_upstream,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const CALLS: usize = 100;
const ROUNDS: usize = 7;

/// A TLS upstream answering every request with a chat completion; counts handshakes.
async fn tls_upstream(
    config: Arc<rustls::ServerConfig>,
    handshakes: Arc<AtomicUsize>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let body = Bytes::from(demo_upstream::demo_completion("gpt-4o"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let handshakes = handshakes.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                handshakes.fetch_add(1, Ordering::Relaxed);
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        // Read the request like a real server: an unread body ends keep-alive.
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn params() -> String {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello world"}]}"#;
    format!(
        r#"{{"subAction":"run","subActionParams":{{"body":{}}}}}"#,
        serde_json::to_string(body).unwrap()
    )
}

/// Runs `CALLS` sequential executions; returns the wall time and the handshakes they caused.
async fn round(
    executor: &Executor,
    connector: &ConnectorFile,
    params: &str,
    handshakes: &AtomicUsize,
) -> (Duration, usize) {
    let before = handshakes.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..CALLS {
        match executor.execute(connector, params).await.unwrap() {
            ExecuteOutcome::Executed(e) => {
                std::hint::black_box(e.outcome.expect("the call succeeds"));
            }
            ExecuteOutcome::InvalidConnector(lines) => panic!("{lines:?}"),
        }
    }
    (start.elapsed(), handshakes.load(Ordering::Relaxed) - before)
}

/// The median of `samples` (sorted in place).
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let harness = Harness::embedded(CodeCache::Default).unwrap();

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let mut server_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server_params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap(),
    );
    let handshakes = Arc::new(AtomicUsize::new(0));
    let addr = rt.block_on(tls_upstream(server_config, handshakes.clone()));

    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca.pem());
    let file = format!(
        r#"{{"id":"bench","name":"Bench","config":{{"apiProvider":"Other","apiUrl":"https://{addr}/v1/chat/completions","defaultModel":"gpt-4o"}},"secrets":{{"apiKey":"sk-bench-0123456789","caData":"{ca_data}"}}}}"#
    );
    let connector = ConnectorFile::parse(&file, "bench", std::path::Path::new(".")).unwrap();
    let params = params();

    type MakeExecutor = Box<dyn Fn() -> Executor>;
    let configurations: Vec<(&str, MakeExecutor)> = vec![
        ("keep-alive pool", {
            let harness = harness.clone();
            Box::new(move || Executor::new(harness.clone(), Settings::default()))
        }),
        ("no pool, TLS resumption", {
            let harness = harness.clone();
            Box::new(move || {
                let no_idle = ConnectionPool::new(PoolLimits {
                    max_idle_per_key: 0,
                    ..PoolLimits::default()
                });
                Executor::new(harness.clone(), Settings::default())
                    .with_connection_pool(Some(Arc::new(no_idle)))
            })
        }),
        ("no pool", {
            let harness = harness.clone();
            Box::new(move || {
                Executor::new(harness.clone(), Settings::default()).with_connection_pool(None)
            })
        }),
    ];

    // Warm up: compiled code, vocabularies, allocator pools, the loopback path.
    rt.block_on(async {
        for (_, make) in &configurations {
            round(&make(), &connector, &params, &handshakes).await;
        }
    });

    let mut results = Vec::new();
    for (name, make) in &configurations {
        let mut times = Vec::new();
        let mut handshake_counts = Vec::new();
        for _ in 0..ROUNDS {
            let executor = make();
            let (time, count) = rt.block_on(round(&executor, &connector, &params, &handshakes));
            times.push(time);
            handshake_counts.push(count);
        }
        let per_call = median(&mut times) / CALLS as u32;
        results.push((*name, per_call, handshake_counts));
    }

    // The bare handshake: TCP connect + full TLS 1.3 handshake + close, no component, no HTTP.
    let client_config = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every connection makes a full handshake.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    };
    let mut bare = Vec::new();
    rt.block_on(async {
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..CALLS {
                let config = client_config.clone();
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect("127.0.0.1".try_into().unwrap(), tcp)
                    .await
                    .unwrap();
                drop(tls);
            }
            bare.push(start.elapsed() / CALLS as u32);
        }
    });
    let bare = median(&mut bare);

    let reuse = results[0].1;
    let fresh = results[2].1;
    println!(
        "| configuration | per call (median of {ROUNDS} rounds of {CALLS}) | handshakes per round |"
    );
    println!("|---|---|---|");
    for (name, per_call, counts) in &results {
        println!("| {name} | {:.1} µs | {counts:?} |", micros(*per_call));
    }
    println!(
        "| bare TCP connect + full TLS handshake (no component) | {:.1} µs | - |",
        micros(bare)
    );
    println!();
    println!(
        "no pool / keep-alive pool: {:.2}x; handshake cost per call (no pool - pool): {:.1} µs; with resumption: {:.1} µs",
        fresh.as_secs_f64() / reuse.as_secs_f64(),
        micros(fresh.saturating_sub(reuse)),
        micros(results[1].1.saturating_sub(reuse)),
    );
}
