//! Per-call cost of the component next to the same work done natively, in the same run.
//!
//! `cargo bench -p openai-connector-harness --bench overhead`
//!
//! - `instantiate`: a fresh Store + instance from the pre-linked component (pooling allocator).
//! - `validate/*`, `build/*`: connector validation and request building, through the WIT export
//!   on a warm instance, with a fresh instance per call, and natively (no wasm). `validate/pki_*`:
//!   a connector with a client certificate, key and CA. Validation is paid once per connector.
//! - `execute/*`: a full `run` against a loopback upstream through the component (fresh
//!   instance, request, wasi-http, response mapping; the connector prepared once) next to the
//!   same POST sent with hyper directly — both over a new connection per call, and both over a
//!   kept-alive one. `component_one_shot_keep_alive` also validates the connector (prepare,
//!   then run: two instances), as a caller that runs a connector once pays.

#[path = "common.rs"]
mod common;
use common::{Sender, connect};
use criterion::{Criterion, criterion_group, criterion_main};
use openai_connector::actions::Definition;
use openai_connector::plan::{Deployment, plan};
use openai_connector_harness::{
    CodeCache, ConnectorFile, ExecuteOutcome, Executor, Harness, OutboundPolicy, SandboxLimits,
    Settings, demo_upstream,
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
    let def = connector.clone();
    let executor = Executor::new(harness.clone(), Settings::default());
    let settings = executor.settings();
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
    // One long-lived instance: the default guest-time budget (10 s over the whole life of a
    // Store) would run out over criterion's iterations.
    let warm_limits = SandboxLimits {
        guest_time: std::time::Duration::from_secs(24 * 3600),
        ..SandboxLimits::default()
    };
    let mut warm = rt
        .block_on(harness.instantiate_limited(deny.clone(), warm_limits))
        .unwrap();
    group.bench_function("component_warm", |b| {
        b.iter(|| black_box(rt.block_on(warm.validate(&def, settings)).unwrap().unwrap()))
    });
    // A connector with a client certificate, its key and a CA: the PKI checks, natively and in
    // the component (paid once per connector: executions take the prepared connector).
    let fixture = |name: &str| {
        use base64::Engine;
        let path = format!(
            "{}/../tests/all/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
    };
    let (cert, key) = (fixture("rsa1024-cert.pem"), fixture("rsa1024-key.pem"));
    let pki_config = format!(
        r#"{{"apiProvider":"Other","apiUrl":"{base}/v1/chat/completions","defaultModel":"m","verificationMode":"full"}}"#
    );
    let pki_secrets = format!(
        r#"{{"apiKey":"sk-bench-0123456789","certificateData":"{cert}","privateKeyData":"{key}","caData":"{cert}"}}"#
    );
    let pki_native = Definition {
        id: "bench",
        name: "Bench",
        config_json: &pki_config,
        secrets_json: &pki_secrets,
    };
    group.bench_function("pki_native", |b| {
        b.iter(|| black_box(pki_native.validate(&deployment).unwrap()))
    });
    let pki_def = {
        let mut pki = def.clone();
        pki.config_json.clone_from(&pki_config);
        pki.secrets_json.clone_from(&pki_secrets);
        pki
    };
    group.bench_function("pki_component_warm", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(warm.validate(&pki_def, settings))
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    group.bench_function("component_fresh_instance", |b| {
        b.to_async(&rt).iter(|| async {
            let mut instance = harness.instantiate(deny.clone()).await.unwrap();
            black_box(instance.validate(&def, settings).await.unwrap().unwrap())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("build");
    let native_connector = native_def.validate(&deployment).unwrap();
    group.bench_function("native", |b| {
        b.iter(|| black_box(plan(&native_connector, &deployment, &params).unwrap()))
    });
    group.bench_function("component_warm", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(warm.build_request(&def, settings, &params))
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    group.finish();

    // Two fair pairs: a fresh connection per call on both sides, and a kept-alive connection
    // on both sides. An execution takes the connector prepared once (as `serve` at load and the
    // CLI once per run): a fresh instance and `start`, no validation. `component_one_shot`
    // validates too (`Executor::execute`: prepare, then run).
    let mut group = c.benchmark_group("execute");
    let unpooled = executor.clone().with_connection_pool(None);
    let prepared = rt.block_on(executor.prepare(&connector)).unwrap().unwrap();
    let run = |executor: Executor| {
        let prepared = &prepared;
        let params = &params;
        async move {
            let execution = executor.execute_prepared(prepared, params).await.unwrap();
            black_box(execution.outcome.unwrap())
        }
    };
    group.bench_function("component_new_connection", |b| {
        b.to_async(&rt).iter(|| run(unpooled.clone()))
    });
    let url: hyper::Uri = format!("{base}/v1/chat/completions").parse().unwrap();
    group.bench_function("hyper_new_connection", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(post(&mut connect(&url).await, &url, BODY).await) })
    });
    group.bench_function("component_keep_alive", |b| {
        b.to_async(&rt).iter(|| run(executor.clone()))
    });
    group.bench_function("component_one_shot_keep_alive", |b| {
        b.to_async(&rt).iter(|| async {
            match executor.execute(&connector, &params).await.unwrap() {
                ExecuteOutcome::Executed(e) => black_box(e.outcome.unwrap()),
                ExecuteOutcome::InvalidConnector(lines) => panic!("{lines:?}"),
            }
        })
    });
    let mut sender = rt.block_on(connect(&url));
    group.bench_function("hyper_keep_alive", |b| {
        b.iter(|| black_box(rt.block_on(post(&mut sender, &url, BODY))))
    });
    group.finish();
}

/// One POST on `sender`, body read to the end.
async fn post(sender: &mut Sender, url: &hyper::Uri, body: &'static str) -> bytes::Bytes {
    use http_body_util::BodyExt;
    sender.ready().await.unwrap();
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
