//! `openai-connector demo`: a loopback upstream that says it is a demo, and `test` / `run` for
//! each provider sent to it through the component.

use anyhow::Result;
use openai_connector_harness::{ConnectorFile, ExecuteOutcome, Executor, demo_upstream, output};

/// Shows a header value, hiding credentials.
fn shown(name: &str, value: &str) -> String {
    match name {
        "authorization" => match value.split_once(' ') {
            Some((scheme, _)) => format!("{scheme} [REDACTED]"),
            None => "[REDACTED]".to_owned(),
        },
        "api-key" => "[REDACTED]".to_owned(),
        _ => value.to_owned(),
    }
}

pub async fn run(executor: &Executor) -> Result<()> {
    let (base, seen) = demo_upstream::start().await?;
    println!("demo upstream (canned replies, not a model) listening on {base}\n");
    let connectors = [
        (
            "demo-openai",
            "OpenAI",
            format!(
                r#"{{"apiProvider":"OpenAI","apiUrl":"{base}/v1/chat/completions","organizationId":"org-demo"}}"#
            ),
        ),
        (
            "demo-azure",
            "Azure OpenAI",
            format!(
                r#"{{"apiProvider":"Azure OpenAI","apiUrl":"{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"}}"#
            ),
        ),
        (
            "demo-other",
            "Other",
            format!(
                r#"{{"apiProvider":"Other","apiUrl":"{base}/v1/chat/completions","defaultModel":"llama3"}}"#
            ),
        ),
    ];
    let params = [
        r#"{"subAction":"test","subActionParams":{"body":"{\"messages\":[{\"role\":\"user\",\"content\":\"Hello world\"}],\"tool_choice\":\"auto\"}"}}"#,
        r#"{"subAction":"run","subActionParams":{"body":"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"temperature\":0.70}"}}"#,
    ];
    for (id, provider, config) in &connectors {
        let file = format!(
            r#"{{"id":"{id}","name":"Demo {provider}","connector_type_id":".gen-ai","config":{config},"secrets":{{"apiKey":"sk-demo-not-a-real-key"}}}}"#
        );
        let connector = ConnectorFile::parse(&file, id, std::path::Path::new("."))
            .map_err(|e| anyhow::anyhow!("demo connector {id}: {e}"))?;
        println!("=== {provider} connector `{id}`");
        for p in params {
            let before = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
            let outcome = executor.execute(&connector, p).await?;
            println!("--- params: {p}");
            for s in seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .skip(before)
            {
                println!("sent:     {} {}", s.method, s.target);
                for (n, v) in &s.headers {
                    println!("          {n}: {}", shown(n, v));
                }
                println!("          body: {}", s.body);
            }
            match outcome {
                ExecuteOutcome::Executed(execution) => {
                    let (json, _) = output::execution_json(&connector.id, &execution)?;
                    println!("received: {json}");
                    let u = &execution.usage;
                    println!(
                        "usage:    {}: prompt {} completion {} total {}",
                        u.source.name(),
                        u.prompt_tokens,
                        u.completion_tokens,
                        u.total_tokens
                    );
                }
                ExecuteOutcome::InvalidConnector(lines) => {
                    for line in lines {
                        println!("invalid:  {line}");
                    }
                }
            }
            println!();
        }
    }
    Ok(())
}
