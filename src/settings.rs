//! The settings grammar, once: the keys of a settings object (Kibana's `xpack.actions.*` without
//! the prefix, cli.md "Settings file"), who applies each, and the parsers of the keys the
//! component applies itself. The harness's `--settings` file and the `gateway` world's
//! `OPENAI_CONNECTOR_SETTINGS` both go through [`apply`], so they accept the same texts and
//! report the same errors.

use crate::json::Value;
use crate::plan::Deployment;
use crate::retry::RetryPolicy;
use crate::units;

/// Who applies a settings key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The component (every host): [`apply`] parses it into a [`Deployment`].
    Component,
    /// The transport or the sandbox, which only the `openai-connector` harness owns; a stock
    /// wasi:http host refuses these rather than ignore them.
    Harness,
}

/// Every settings key, with its owner. `ssl.*` keys may also be written nested
/// (`{"ssl": {"verificationMode": ...}}`).
pub const KEYS: &[(&str, Owner)] = &[
    ("allowedHosts", Owner::Component),
    ("responseTimeout", Owner::Component),
    ("maxResponseContentLength", Owner::Component),
    ("retry", Owner::Component),
    ("proxyUrl", Owner::Harness),
    ("proxyHeaders", Owner::Harness),
    ("proxyBypassHosts", Owner::Harness),
    ("proxyOnlyHosts", Owner::Harness),
    ("ssl.verificationMode", Owner::Harness),
    ("ssl.proxyVerificationMode", Owner::Harness),
    ("customHostSettings", Owner::Harness),
    ("denyPrivateNetworks", Owner::Harness),
    ("guestMemoryLimit", Owner::Harness),
    ("guestTimeLimit", Owner::Harness),
    ("shutdownGrace", Owner::Harness),
    ("headerReadTimeout", Owner::Harness),
    ("idleTimeout", Owner::Harness),
    ("requestBodyTimeout", Owner::Harness),
    ("maxConnections", Owner::Harness),
    ("maxExecutions", Owner::Harness),
    ("queueTimeout", Owner::Harness),
    ("maxExecutionsPerConnector", Owner::Harness),
    ("maxExecutionsPerClient", Owner::Harness),
    ("usageSinkBuffer", Owner::Harness),
];

/// The owner of `key`, or `None` for an unknown key.
pub fn owner(key: &str) -> Option<Owner> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, o)| *o)
}

/// Applies one key that the component owns to `deployment`. `Ok(false)`: `key` is not one of
/// them (the caller handles it). The error names the key.
pub fn apply(deployment: &mut Deployment, key: &str, value: &Value) -> Result<bool, String> {
    match key {
        "allowedHosts" => deployment.allowed_hosts = string_list(key, value)?,
        "responseTimeout" => deployment.response_timeout_ms = duration_ms(key, value)?,
        "maxResponseContentLength" => {
            deployment.max_response_content_length = byte_size(key, value)?;
        }
        "retry" => deployment.retry = retry(key, value)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The deployment settings of a settings object given as JSON text, for a host that applies
/// only the component's keys (the `gateway` world): a transport key is refused, not ignored.
pub fn deployment_from_json(text: &str) -> Result<Deployment, String> {
    let value = Value::parse(text.as_bytes()).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("must be a JSON object".to_owned());
    };
    let mut deployment = Deployment::default();
    for (key, v) in &map {
        if apply(&mut deployment, key, v)? {
            continue;
        }
        let known = key == "ssl" || owner(key).is_some() || key.starts_with("ssl.");
        if known {
            return Err(format!(
                "[{key}] configures the transport, which only the openai-connector harness applies (a stock wasi:http host uses its own)"
            ));
        }
        return Err(format!(
            "unknown key [{key}] (known: allowedHosts, responseTimeout, maxResponseContentLength, retry)"
        ));
    }
    Ok(deployment)
}

/// An array of strings.
pub fn string_list(key: &str, v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else {
        return Err(format!("[{key}]: expected an array of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("[{key}.{i}]: expected a string"))
        })
        .collect()
}

/// `"60s"`, `"2m"`, `"500ms"`, `"1h"`, or a number of milliseconds.
pub fn duration_ms(key: &str, v: &Value) -> Result<u64, String> {
    let bad =
        || format!("[{key}]: expected a duration such as \"60s\", \"2m\" or milliseconds, got {v}");
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => units::duration_ms(s),
        _ => None,
    }
    .ok_or_else(bad)
}

/// `{"maxAttempts": N, "initialDelay": D, "maxDelay": D}` (cli.md "Retries"); absent members
/// keep their defaults.
pub fn retry(key: &str, v: &Value) -> Result<RetryPolicy, String> {
    let Value::Object(map) = v else {
        return Err(format!(
            "[{key}]: expected an object {{\"maxAttempts\", \"initialDelay\", \"maxDelay\"}}"
        ));
    };
    let mut policy = RetryPolicy::default();
    for (member, value) in map {
        let path = format!("{key}.{member}");
        match member.as_str() {
            "maxAttempts" => {
                policy.max_attempts = match value {
                    Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                    _ => None,
                }
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| {
                    format!("[{path}]: expected a whole number from 1 to 10, got {value}")
                })?;
            }
            "initialDelay" => policy.initial_delay_ms = duration_ms(&path, value)?,
            "maxDelay" => policy.max_delay_ms = duration_ms(&path, value)?,
            other => return Err(format!("[{key}]: unknown key [{other}]")),
        }
    }
    if policy.initial_delay_ms > policy.max_delay_ms {
        return Err(format!(
            "[{key}.initialDelay]: must not exceed maxDelay ({} ms)",
            policy.max_delay_ms
        ));
    }
    Ok(policy)
}

/// `"1mb"`, `"512kb"`, `"1gb"`, `"100b"` (binary units, contract section 0) or a number of bytes.
pub fn byte_size(key: &str, v: &Value) -> Result<u64, String> {
    let bad = || format!("[{key}]: expected a size such as \"1mb\", \"512kb\" or bytes, got {v}");
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => units::byte_size(s),
        _ => None,
    }
    .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_like_the_harness() {
        let d = deployment_from_json(
            r#"{"allowedHosts":["a.example"],"responseTimeout":"2m","maxResponseContentLength":"512kb"}"#,
        )
        .unwrap();
        assert_eq!(d.allowed_hosts, ["a.example"]);
        assert_eq!(d.response_timeout_ms, 120_000);
        assert_eq!(d.max_response_content_length, 512 << 10);
        assert_eq!(
            deployment_from_json(r#"{"responseTimeout":250}"#)
                .unwrap()
                .response_timeout_ms,
            250
        );
        assert!(
            deployment_from_json(r#"{"bogus":1}"#)
                .unwrap_err()
                .contains("[bogus]")
        );
        assert!(
            deployment_from_json(r#"{"ssl.verificationMode":"none"}"#)
                .unwrap_err()
                .contains("only the openai-connector harness")
        );
        assert!(
            deployment_from_json(r#"{"responseTimeout":"soon"}"#)
                .unwrap_err()
                .contains("[responseTimeout]")
        );
        assert!(
            deployment_from_json("[]")
                .unwrap_err()
                .contains("JSON object")
        );
    }

    #[test]
    fn retry_policy() {
        let d = deployment_from_json(
            r#"{"retry":{"maxAttempts":3,"initialDelay":"250ms","maxDelay":"20s"}}"#,
        )
        .unwrap();
        assert_eq!(
            d.retry,
            RetryPolicy {
                max_attempts: 3,
                initial_delay_ms: 250,
                max_delay_ms: 20_000
            }
        );
        let partial = deployment_from_json(r#"{"retry":{"maxAttempts":2}}"#).unwrap();
        assert_eq!(partial.retry.initial_delay_ms, 250);
        for (text, expected) in [
            (r#"{"retry":3}"#, "[retry]: expected an object"),
            (
                r#"{"retry":{"maxAttempts":0}}"#,
                "[retry.maxAttempts]: expected a whole number from 1 to 10",
            ),
            (r#"{"retry":{"maxAttempts":"3"}}"#, "[retry.maxAttempts]"),
            (
                r#"{"retry":{"initialDelay":"later"}}"#,
                "[retry.initialDelay]: expected a duration",
            ),
            (
                r#"{"retry":{"initialDelay":"30s"}}"#,
                "[retry.initialDelay]: must not exceed maxDelay",
            ),
            (
                r#"{"retry":{"attempts":3}}"#,
                "[retry]: unknown key [attempts]",
            ),
        ] {
            let e = deployment_from_json(text).unwrap_err();
            assert!(e.starts_with(expected), "{text}: {e}");
        }
    }

    #[test]
    fn every_transport_key_is_refused_by_a_component_only_host() {
        for (key, owner) in KEYS {
            let text = format!(r#"{{"{key}":null}}"#);
            let error = deployment_from_json(&text).unwrap_err();
            match owner {
                Owner::Harness => assert!(error.contains("only the openai-connector harness")),
                Owner::Component => assert!(error.contains(&format!("[{key}]")), "{error}"),
            }
        }
        assert!(
            deployment_from_json(r#"{"ssl":{"verificationMode":"none"}}"#)
                .unwrap_err()
                .contains("only the openai-connector harness")
        );
    }
}
