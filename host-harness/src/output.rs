//! Kibana's `_execute` response shapes (cli.md "execute").

use crate::execution::{Execution, Failure};
use serde::Serialize;
use serde_json::value::RawValue;

/// Kibana's fixed top-level message of a failed execution (C77).
pub const FAILURE_MESSAGE: &str = "an error occurred while running the action";

#[derive(Serialize)]
struct Success<'a> {
    connector_id: &'a str,
    status: &'static str,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct FailureBody<'a> {
    connector_id: &'a str,
    status: &'static str,
    message: &'static str,
    service_message: &'a str,
    retry: bool,
}

/// `{"connector_id": ID, "status": "ok", "data": DATA}`; `data_json` is embedded verbatim so
/// numbers keep their spelling (C40).
pub fn success_json(connector_id: &str, data_json: &str) -> anyhow::Result<String> {
    let data: &RawValue = serde_json::from_str(data_json)
        .map_err(|e| anyhow::anyhow!("the component returned data that is not JSON: {e}"))?;
    Ok(serde_json::to_string(&Success {
        connector_id,
        status: "ok",
        data,
    })?)
}

/// `{"connector_id": ID, "status": "error", "message": ..., "service_message": ..., "retry": ...}`.
pub fn failure_json(connector_id: &str, failure: &Failure) -> String {
    serde_json::to_string(&FailureBody {
        connector_id,
        status: "error",
        message: FAILURE_MESSAGE,
        service_message: &failure.service_message,
        retry: failure.retry,
    })
    .unwrap_or_else(|_| unreachable!("serialising strings and booleans cannot fail"))
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

    #[test]
    fn shapes() {
        assert_eq!(
            success_json("c", r#"{"n":1.50}"#).unwrap(),
            r#"{"connector_id":"c","status":"ok","data":{"n":1.50}}"#
        );
        let f = Failure {
            service_message: "Status code: 401. Message: Unauthorized API Error".into(),
            retry: true,
        };
        assert_eq!(
            failure_json("c", &f),
            r#"{"connector_id":"c","status":"error","message":"an error occurred while running the action","service_message":"Status code: 401. Message: Unauthorized API Error","retry":true}"#
        );
    }
}
