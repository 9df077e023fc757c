//! The embeddings API answered (the `embeddings` sub-action): the response object is passed
//! through as `data`, its usage read from `usage.prompt_tokens` and `usage.total_tokens`.
//!
//! Points fixed here (chosen): the body must be a JSON object (as C69 says of chat
//! completions), nothing else of its shape is checked; usage is reported when `usage` is an
//! object with a numeric `prompt_tokens` (completion 0; `total_tokens` is the prompt count when
//! it is not a number), else `unavailable`. Counts are read as for chat.

use crate::json::Value;
use crate::response::{self, number_to_count};
use crate::usage::TokenUsage;

/// Maps a 2xx embeddings body: the response object as received and its usage. The error is
/// the service message of a body that is not a JSON object.
pub(crate) fn map(body: &[u8]) -> Result<(Value, TokenUsage), String> {
    response::object_with_usage(body, reported_usage)
}

fn reported_usage(usage: &Value) -> Option<TokenUsage> {
    let count = |key: &str| match usage.get(key) {
        Some(Value::Number(n)) => Some(number_to_count(n)),
        _ => None,
    };
    let prompt = count("prompt_tokens")?;
    Some(TokenUsage::reported(
        prompt,
        0,
        count("total_tokens").unwrap_or(prompt),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageSource;

    #[test]
    fn usage_from_prompt_and_total_tokens_and_data_passed_through() {
        let body = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        let (data, usage) = map(body).unwrap();
        assert_eq!(usage, TokenUsage::reported(8, 0, 8));
        // Numbers keep their spelling.
        assert_eq!(data.to_json(), std::str::from_utf8(body).unwrap());
        let (_, usage) = map(br#"{"data":[],"usage":{"prompt_tokens":5}}"#).unwrap();
        assert_eq!(usage, TokenUsage::reported(5, 0, 5));
    }

    #[test]
    fn no_usable_usage_is_unavailable() {
        for body in [
            r#"{"data":[]}"#,
            r#"{"data":[],"usage":{"total_tokens":3}}"#,
            r#"{"data":[],"usage":[]}"#,
        ] {
            let (_, usage) = map(body.as_bytes()).unwrap();
            assert_eq!(usage.source, UsageSource::Unavailable, "{body}");
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_invalid() {
        assert_eq!(
            map(b"[1]").unwrap_err(),
            "Response validation failed (expected value of type [object] but got [Array])"
        );
    }
}
