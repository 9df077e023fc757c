//! `elasticsearch+http(s)://HOST:PORT/INDEX`: the event-log documents, unchanged, through the
//! `_bulk` API (cli.md "Usage sinks").
//!
//! Each document goes in a `create` action (so the target may be a data stream) with an `_id`
//! chosen once, when its batch is made: a batch tried again after an answer was lost cannot
//! index a document twice, since the copy already indexed answers `409` and counts as
//! delivered. Items answered `429` or `5xx` stay in the batch and are tried again; any other
//! item error (a mapping error, say) is a refusal for good: the document is dropped and
//! counted. An answer that is not a success (or no answer) fails the whole batch, which is
//! tried again.

use super::http::SinkHttp;
use super::queue::{Outcome, Shipper};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use serde::Deserialize;
use std::sync::Arc;

/// One sink.
pub(super) struct Elasticsearch {
    pub(super) http: SinkHttp,
    /// `/INDEX/_bulk`, with the URL's path prefix and query.
    pub(super) bulk_path: String,
    /// `Authorization`, from `OPENAI_CONNECTOR_SINK_AUTH` (marked sensitive).
    pub(super) authorization: Option<HeaderValue>,
}

/// A document ready to send: its `_id` and its line.
pub(super) struct Doc {
    id: String,
    line: Arc<str>,
}

impl Shipper for Elasticsearch {
    type Item = Arc<str>;
    type Batch = Vec<Doc>;

    fn prepare(&mut self, items: Vec<Arc<str>>) -> Vec<Doc> {
        items
            .into_iter()
            .map(|line| Doc {
                id: format!("{:032x}", fastrand::u128(..)),
                line,
            })
            .collect()
    }

    async fn ship(&mut self, batch: &mut Vec<Doc>) -> Outcome {
        let mut request = Request::new(bulk_body(batch));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = match self.bulk_path.parse() {
            Ok(uri) => uri,
            Err(e) => return retry(format!("unusable path {}: {e}", self.bulk_path)),
        };
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(auth) = &self.authorization {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        let response = match self.http.send(request).await {
            Ok(response) => response,
            Err(e) => return retry(format!("{e:#}")),
        };
        let status = response.status();
        if !status.is_success() {
            return retry(format!(
                "_bulk answered {status}{}",
                error_of(response.body())
            ));
        }
        apply_answer(batch, response.body())
    }
}

fn retry(why: String) -> Outcome {
    Outcome {
        retry: Some(why),
        ..Outcome::default()
    }
}

/// The `_bulk` body: one `create` action and one document line each.
fn bulk_body(batch: &[Doc]) -> Bytes {
    let mut body = String::with_capacity(batch.iter().map(|d| d.line.len() + 60).sum());
    for doc in batch {
        body.push_str(r#"{"create":{"_id":""#);
        body.push_str(&doc.id);
        body.push_str("\"}}\n");
        body.push_str(doc.line.trim_end_matches('\n'));
        body.push('\n');
    }
    Bytes::from(body)
}

#[derive(Deserialize)]
struct BulkAnswer {
    errors: bool,
    #[serde(default)]
    items: Vec<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Whether an item's status is worth trying again.
fn retryable(status: u16) -> bool {
    status == 429 || status == 408 || status >= 500
}

/// Applies a `2xx` answer of `_bulk` to `batch`: delivered and refused documents leave it,
/// the ones to try again stay.
fn apply_answer(batch: &mut Vec<Doc>, body: &[u8]) -> Outcome {
    let answer: BulkAnswer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(e) => {
            return retry(format!(
                "_bulk answered something that is not its JSON: {e}"
            ));
        }
    };
    if !answer.errors {
        let delivered = batch.len();
        batch.clear();
        return Outcome {
            delivered,
            ..Outcome::default()
        };
    }
    if answer.items.len() != batch.len() {
        // Every document has its `_id`: trying the whole batch again cannot duplicate one.
        return retry(format!(
            "_bulk answered {} items for {} documents",
            answer.items.len(),
            batch.len()
        ));
    }
    let mut outcome = Outcome::default();
    let mut retry_reason = None;
    let mut kept = Vec::new();
    for (doc, item) in batch.drain(..).zip(answer.items) {
        let result = item
            .into_iter()
            .next()
            .and_then(|(_, v)| serde_json::from_value::<ItemResult>(v).ok());
        match result {
            // 409: indexed by an earlier try of this batch.
            Some(r) if (200..300).contains(&r.status) || r.status == 409 => outcome.delivered += 1,
            Some(r) if retryable(r.status) => {
                retry_reason.get_or_insert_with(|| {
                    format!("_bulk item answered {}{}", r.status, reason(&r.error))
                });
                kept.push(doc);
            }
            Some(r) => {
                outcome.refused += 1;
                outcome
                    .refusal
                    .get_or_insert_with(|| format!("status {}{}", r.status, reason(&r.error)));
            }
            None => {
                retry_reason.get_or_insert_with(|| "_bulk item without a status".to_owned());
                kept.push(doc);
            }
        }
    }
    *batch = kept;
    outcome.retry = retry_reason;
    outcome
}

/// `: TYPE: REASON` of an Elasticsearch error object, shortened.
fn reason(error: &Option<serde_json::Value>) -> String {
    let Some(error) = error else {
        return String::new();
    };
    let text = |key: &str| error.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let mut out = format!(": {}: {}", text("type"), text("reason"));
    if out.len() > 300 {
        let mut end = 300;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// The `error` of an error answer's body, if it has one.
fn error_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned())
        .map(|e| match e {
            serde_json::Value::String(s) => reason(&Some(serde_json::json!({"reason": s}))),
            other => reason(&Some(other)),
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(n: usize) -> Vec<Doc> {
        (0..n)
            .map(|i| Doc {
                id: format!("id{i}"),
                line: Arc::from(format!("{{\"n\":{i}}}\n")),
            })
            .collect()
    }

    #[test]
    fn the_body_is_create_actions_with_ids_and_the_lines() {
        let body = bulk_body(&docs(2));
        assert_eq!(
            &body[..],
            b"{\"create\":{\"_id\":\"id0\"}}\n{\"n\":0}\n{\"create\":{\"_id\":\"id1\"}}\n{\"n\":1}\n"
        );
    }

    #[test]
    fn no_errors_delivers_everything() {
        let mut batch = docs(3);
        let outcome = apply_answer(&mut batch, br#"{"took":1,"errors":false,"items":[]}"#);
        assert_eq!(outcome.delivered, 3);
        assert!(batch.is_empty() && outcome.retry.is_none());
    }

    // 429/5xx items stay for another try; a mapping error is dropped (counted); 409 is a copy
    // that an earlier try indexed.
    #[test]
    fn item_errors_split_the_batch() {
        let mut batch = docs(5);
        let answer = br#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field"}}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"status":503,"error":{"type":"unavailable_shards_exception","reason":"x"}}}
        ]}"#;
        let outcome = apply_answer(&mut batch, answer);
        assert_eq!((outcome.delivered, outcome.refused), (2, 1));
        assert_eq!(
            outcome.refusal.as_deref(),
            Some("status 400: mapper_parsing_exception: failed to parse field")
        );
        assert_eq!(
            outcome.retry.as_deref(),
            Some("_bulk item answered 429: es_rejected_execution_exception: queue full")
        );
        let kept: Vec<&str> = batch.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(kept, ["id1", "id4"]);
    }

    #[test]
    fn an_answer_that_does_not_match_is_tried_again_whole() {
        let mut batch = docs(2);
        let outcome = apply_answer(&mut batch, br#"{"errors":true,"items":[]}"#);
        assert!(outcome.retry.is_some());
        assert_eq!(batch.len(), 2);
        let outcome = apply_answer(&mut batch, b"<html>");
        assert!(outcome.retry.is_some());
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn error_answers_are_described() {
        assert_eq!(
            error_of(br#"{"error":{"type":"security_exception","reason":"missing authentication credentials"},"status":401}"#),
            ": security_exception: missing authentication credentials"
        );
        assert_eq!(error_of(b"not json"), "");
    }
}
