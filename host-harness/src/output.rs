//! The CLI's output of an execution (cli.md "execute"): the gateway protocol's Kibana shapes,
//! after checking that the component's `data` is JSON.

use crate::execution::{Execution, Failure};
use openai_connector::protocol;

/// `{"connector_id": ID, "status": "ok", "data": DATA}`; `data_json` is embedded verbatim so
/// numbers keep their spelling (C40).
pub fn success_json(connector_id: &str, data_json: &str) -> anyhow::Result<String> {
    Ok(protocol::success_json(
        connector_id,
        checked_data(data_json)?,
    ))
}

/// The component's `data` once it is known to be JSON: a host does not pass on what it cannot
/// vouch for.
pub(crate) fn checked_data(data_json: &str) -> anyhow::Result<&str> {
    serde_json::from_str::<serde::de::IgnoredAny>(data_json)
        .map_err(|e| anyhow::anyhow!("the component returned data that is not JSON: {e}"))?;
    Ok(data_json)
}

/// `{"connector_id": ID, "status": "error", "message": ..., "service_message": ..., "retry": ...}`.
pub fn failure_json(connector_id: &str, failure: &Failure) -> String {
    protocol::failure_json(connector_id, failure)
}

/// The JSON line and exit code for an execution: 0 on success, 1 on failure.
pub fn execution_json(connector_id: &str, execution: &Execution) -> anyhow::Result<(String, i32)> {
    match &execution.outcome {
        Ok(data) => Ok((success_json(connector_id, data)?, 0)),
        Err(failure) => Ok((failure_json(connector_id, failure), 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::FailureKind;

    #[test]
    fn shapes() {
        assert_eq!(
            success_json("c", r#"{"n":1.50}"#).unwrap(),
            r#"{"connector_id":"c","status":"ok","data":{"n":1.50}}"#
        );
        let f = Failure {
            kind: FailureKind::Http { status: 401 },
            upstream_status: Some(401),
            service_message: "Status code: 401. Message: Unauthorized API Error".into(),
            retry: true,
        };
        assert_eq!(
            failure_json("c", &f),
            r#"{"connector_id":"c","status":"error","message":"an error occurred while running the action","service_message":"Status code: 401. Message: Unauthorized API Error","retry":true}"#
        );
        assert!(success_json("c", "{").is_err());
    }
}
