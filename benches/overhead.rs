//! Per-call cost of the component next to the same work done natively, in the same run.
//!
//! `cargo bench -p openai-connector-harness --bench overhead`
//!
//! - `instantiate`: a fresh Store + instance from the pre-linked component (pooling allocator).
//! - `validate/*`, `build/*`: connector validation and request building, through the WIT export
//!   on a warm instance, with a fresh instance per call, and natively (no wasm).
//! - `execute/*`: a full `run` against a loopback upstream through the component (fresh
//!   instance, validation, request, wasi-http, response mapping) next to the same POST sent
//!   with hyper directly (the floor any connector pays for the HTTP exchange itself).

use criterion::{Criterion, criterion_group, criterion_main};
use openai_connector::actions::{self, Definition, Deployment};
use openai_connector_harness::{
    CodeCache, ConnectorFile, ExecuteOutcome, Executor, Harness, OutboundPolicy, Settings,
    definition, demo_upstream,
};
use std::hint::black_box;
use std::sync::Arc;

const SECRETS: &str = r#"{"apiKey":"sk-bench-0123456789"}"#;
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello world"}],"temperature":0.70,"tool_choice":"auto"}"#;

fn params() -> String {
    format!(
        r#"{{"subAction":"run","subActionParams":{{"body":{}}}}}"#,
        serde_json::to_string(BODY).unwrap()
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let harness = Harness::embedded(CodeCache::Default).unwrap();
    let (base, _seen) = rt.block_on(demo_upstream::start()).unwrap();
    let config = format!(
        r#"{{"apiProvider":"OpenAI","apiUrl":"{base}/v1/chat/completions","organizationId":"org-1"}}"#
    );
    let file = format!(r#"{{"id":"bench","name":"Bench","config":{config},"secrets":{SECRETS}}}"#);
    let connector = ConnectorFile::parse(&file, "bench", std::path::Path::new(".")).unwrap();
    let def = definition(&connector);
    let executor = Executor::new(harness.clone(), Settings::default());
    let deployment_wit = executor.deployment();
    let deployment = Deployment::default();
    let native_def = Definition {
        id: "bench",
        name: "Bench",
        config_json: &config,
        secrets_json: SECRETS,
    };
    let params = params();
    let deny = Arc::new(OutboundPolicy::deny_all());

    c.bench_function("instantiate", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(harness.instantiate(deny.clone()).await.unwrap()) })
    });

    let mut group = c.benchmark_group("validate");
    group.bench_function("native", |b| {
        b.iter(|| black_box(native_def.validate(&deployment).unwrap()))
    });
    let mut warm = rt.block_on(harness.instantiate(deny.clone())).unwrap();
    group.bench_function("component_warm", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(warm.validate(&def, &deployment_wit))
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    group.bench_function("component_fresh_instance", |b| {
        b.to_async(&rt).iter(|| async {
            let mut instance = harness.instantiate(deny.clone()).await.unwrap();
            black_box(
                instance
                    .validate(&def, &deployment_wit)
                    .await
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("build");
    let native_connector = native_def.validate(&deployment).unwrap();
    group.bench_function("native", |b| {
        b.iter(|| black_box(actions::plan(&native_connector, &deployment, &params).unwrap()))
    });
    group.bench_function("component_warm", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(warm.build_request(&def, &deployment_wit, &params))
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("execute");
    group.bench_function("component", |b| {
        b.to_async(&rt).iter(|| async {
            match executor.execute(&connector, &params).await.unwrap() {
                ExecuteOutcome::Executed(e) => black_box(e.outcome.unwrap()),
                ExecuteOutcome::InvalidConnector(lines) => panic!("{lines:?}"),
            }
        })
    });
    let url: hyper::Uri = format!("{base}/v1/chat/completions").parse().unwrap();
    group.bench_function("hyper_direct", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(direct_post(&url, BODY).await) })
    });
    group.finish();
}

/// One POST over a new connection with hyper, as the harness's transport makes it.
async fn direct_post(url: &hyper::Uri, body: &'static str) -> bytes::Bytes {
    use http_body_util::BodyExt;
    let addr = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::post(url.path())
        .header("host", url.authority().unwrap().as_str())
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench-0123456789")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

criterion_group!(benches, bench);
criterion_main!(benches);
