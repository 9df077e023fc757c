//! The upstream request: target URL, headers and sanitised body (contract section 4, C43–C62).
//!
//! [`build_request`] turns a validated connector and validated params into the exact
//! [`HttpRequest`] that leaves the connector. It is pure: the allow-list check of C44 runs in
//! the caller just before sending, and timeouts (C62) are computed by [`total_timeout_ms`].

use crate::api_url::{self, NotMapped};
use crate::config::{
    Connector, DEFAULT_MODEL, OPENAI_CHAT_URL, OPENAI_LEGACY_COMPLETION_URL, Provider,
};
use crate::json::{Object, Value};
use crate::params::{Api, Params};
use std::fmt;

/// Default of the `timeout` param in milliseconds (C62).
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 200_000;

/// The `Accept` the connector sends unless a custom header replaces it (C48).
pub(crate) const ACCEPT: &str = "application/json, text/plain, */*";

/// Custom headers that are never sent (C48): the transport owns them.
pub(crate) const FORBIDDEN_HEADERS: [&str; 9] = [
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
    "Upgrade",
    "TE",
    "Trailer",
    "Proxy-Connection",
];

/// Headers whose values `Debug` may show; every other value is `[REDACTED]` (C32, C121).
const SHOWN_HEADERS: [&str; 4] = ["Accept", "Content-Type", "Content-Length", "User-Agent"];

/// An HTTP request exactly as it is sent.
///
/// `Debug` shows header names, the values of `Accept`, `Content-Type`, `Content-Length` and
/// `User-Agent` only, and the body's size: credentials (`Authorization`, `api-key`, custom
/// headers) and content never reach a log through it (C32, C121).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Always `POST` (C43).
    pub method: String,
    /// The configured `apiUrl` after C45.
    pub url: String,
    /// Names and values in sending order (C46–C48); names compare case-insensitively and each
    /// appears once.
    pub headers: Vec<(String, String)>,
    /// The sent body (C49–C61).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Headers<'a>(&'a [(String, String)]);
        impl fmt::Debug for Headers<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for (name, value) in self.0 {
                    let shown = SHOWN_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(name));
                    let value = if shown { value.as_str() } else { "[REDACTED]" };
                    list.entry(&format_args!("{name}: {value}"));
                }
                list.finish()
            }
        }
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &Headers(&self.headers))
            .field("body", &format_args!("[{} bytes]", self.body.len()))
            .finish()
    }
}

/// URL normalisation of C45, over the whole string including the query: (1) one trailing `/`
/// is removed; (2) every run of two or more `/` that follows a character other than `:` becomes
/// a single `/`. A run at the very start follows no character and is kept.
pub(crate) fn normalize_url(url: &str) -> String {
    let url = url.strip_suffix('/').unwrap_or(url);
    let mut out = String::with_capacity(url.len());
    let mut prev: Option<char> = None;
    let mut chars = url.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '/' && prev.is_some_and(|p| p != ':' && p != '/') {
            // Start of a run after a character other than ':': drop the rest of the run.
            while chars.peek() == Some(&'/') {
                chars.next();
            }
        }
        prev = Some(c);
    }
    out
}

/// The total timeout of C62: `max(responseTimeout, timeout param ?? DEFAULT_TIMEOUT_MS)`.
pub fn total_timeout_ms(response_timeout_ms: u64, params_timeout_ms: Option<u64>) -> u64 {
    response_timeout_ms.max(params_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
}

/// Builds the request for one execution (C43, C45–C61). `user_agent` is the `User-Agent`
/// value sent unless a custom header replaces it (C48), e.g. `openai-connector/0.1.0`.
///
/// `responses` and `embeddings` go to the URL [`api_url::derive`] makes of `apiUrl` (an error
/// when it cannot), with the headers of chat completions (C46–C48) and the body as given,
/// except that Azure's Responses API gets the deployment as `model` when the body has none.
pub(crate) fn build_request(
    connector: &Connector,
    params: &Params,
    user_agent: &str,
) -> Result<HttpRequest, NotMapped> {
    let url = normalize_url(&connector.config.api_url);
    let (url, body) = match params.sub_action.api() {
        Api::ChatCompletions => (url, sanitize_body(connector, params)),
        api => {
            let target = api_url::derive(connector.config.provider, &url, api)?;
            let body = match &target.azure_deployment {
                Some(deployment) => with_model(&params.body, deployment),
                None => params.body.clone(),
            };
            (target.url, body)
        }
    };
    let headers = build_headers(connector, user_agent, body.len());
    Ok(HttpRequest {
        method: "POST".to_owned(),
        url,
        headers,
        body,
    })
}

/// `body` with `model` set to `model` when it has no truthy one (as C55 counts it); the body
/// is sent unchanged otherwise, and when it is not a JSON object.
fn with_model(body: &[u8], model: &str) -> Vec<u8> {
    match Value::parse(body) {
        Ok(Value::Object(mut object)) if !has_model(&object) => {
            object.insert("model".to_owned(), Value::from(model));
            Value::Object(object).to_json().into_bytes()
        }
        _ => body.to_vec(),
    }
}

/// Headers of C46–C48, in sending order.
fn build_headers(
    connector: &Connector,
    user_agent: &str,
    body_len: usize,
) -> Vec<(String, String)> {
    let config = &connector.config;
    let mut headers = HeaderList::default();
    // Step 1: custom headers, later duplicates winning (C15), transport headers dropped (C48).
    for (name, value) in &config.headers {
        if !FORBIDDEN_HEADERS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(name))
        {
            headers.set(name, value);
        }
    }
    let custom_accept = headers.contains("Accept");
    let custom_user_agent = headers.contains("User-Agent");
    // Step 2: OpenAI organisation and project, even when empty.
    if config.provider == Provider::OpenAi {
        if let Some(org) = &config.organization_id {
            headers.set("OpenAI-Organization", org);
        }
        if let Some(project) = &config.project_id {
            headers.set("OpenAI-Project", project);
        }
    }
    // Step 3: credentials and content type. Without an apiKey (PKI mode) the token is empty
    // (C47).
    let key = connector.secrets.api_key.as_deref().unwrap_or("");
    match config.provider {
        Provider::OpenAi | Provider::Other => {
            headers.set("Authorization", &format!("Bearer {key}"));
        }
        Provider::AzureOpenAi => headers.set("api-key", key),
    }
    headers.set("Content-Type", "application/json");
    if !custom_accept {
        headers.set("Accept", ACCEPT);
    }
    if !custom_user_agent {
        headers.set("User-Agent", user_agent);
    }
    headers.set("Content-Length", &body_len.to_string());
    headers.0
}

/// Headers with case-insensitive names: setting an existing name replaces name and value in
/// place (C46: a later step replaces an earlier value; the example keeps the position).
#[derive(Default)]
struct HeaderList(Vec<(String, String)>);

impl HeaderList {
    fn set(&mut self, name: &str, value: &str) {
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => *slot = (name.to_owned(), value.to_owned()),
            None => self.0.push((name.to_owned(), value.to_owned())),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// Body sanitising of C49–C61.
fn sanitize_body(connector: &Connector, params: &Params) -> Vec<u8> {
    let start = &params.body;
    let body = match Value::parse(start) {
        // C50, C51: not JSON, or not an object: sent byte-for-byte unchanged.
        Ok(Value::Object(mut body)) => match rewrite(connector, params, &mut body) {
            Rewrite::Reserialise => Value::Object(body).to_json().into_bytes(),
            Rewrite::Unchanged => start.clone(),
        },
        _ => start.clone(),
    };
    // C61: an exactly empty body is sent as `{}`; white space only is sent as it is.
    if body.is_empty() {
        b"{}".to_vec()
    } else {
        body
    }
}

/// Whether [`rewrite`] wants the body re-serialised.
enum Rewrite {
    Reserialise,
    Unchanged,
}

/// Applies the provider's rules of C54–C60 to a parsed object body.
fn rewrite(connector: &Connector, params: &Params, body: &mut Object) -> Rewrite {
    let config = &connector.config;
    let flag = params.stream;
    let stream_path = params.sub_action.is_stream_path();
    let always_streams = params.sub_action.always_streams();
    match config.provider {
        Provider::OpenAi => {
            // C54: exact comparison with the URL as configured, before C45.
            let url = config.api_url.as_str();
            if url == OPENAI_CHAT_URL || url == OPENAI_LEGACY_COMPLETION_URL {
                set_stream(body, flag, true);
            } else if always_streams {
                set_stream(body, true, false);
            }
            // C55: any URL, both paths.
            if !has_model(body) {
                let model = config.default_model.as_deref().unwrap_or(DEFAULT_MODEL);
                body.insert("model".to_owned(), Value::from(model));
            }
            strip_tool_parameters(body);
            Rewrite::Reserialise
        }
        Provider::AzureOpenAi => {
            if is_azure_completions_url(&config.api_url) {
                // C57.
                set_stream(body, flag, true);
                if let Some(model) = config.default_model.as_deref().filter(|m| !m.is_empty())
                    && !has_model(body)
                {
                    body.insert("model".to_owned(), Value::from(model));
                }
                Rewrite::Reserialise
            } else if always_streams {
                // C54/C56: a streaming sub-action must ask for a stream on every URL.
                set_stream(body, true, false);
                Rewrite::Reserialise
            } else {
                // C56, E5: byte-for-byte unchanged.
                Rewrite::Unchanged
            }
        }
        Provider::Other => {
            // C58: never `stream_options`; `model` only on the stream path.
            set_stream(body, flag, false);
            if stream_path
                && !has_model(body)
                && let Some(model) = config.default_model.as_deref()
            {
                body.insert("model".to_owned(), Value::from(model));
            }
            // C59.
            strip_tool_parameters(body);
            Rewrite::Reserialise
        }
    }
}

/// Sets `stream` to `flag`; with `with_options` and a true flag also sets `stream_options` to
/// `{"include_usage":true}`, replacing any value (C54, C57). A false flag leaves an existing
/// `stream_options` alone.
fn set_stream(body: &mut Object, flag: bool, with_options: bool) {
    body.insert("stream".to_owned(), Value::Bool(flag));
    if flag && with_options {
        let mut options = Object::default();
        options.insert("include_usage".to_owned(), Value::Bool(true));
        body.insert("stream_options".to_owned(), Value::Object(options));
    }
}

/// `true` when `model` is present and truthy (C55: `null`, `false`, `0`, `""` count as absent).
fn has_model(body: &Object) -> bool {
    body.get("model").is_some_and(Value::is_truthy)
}

/// C60: without a non-empty `tools` array, `tool_choice` and `parallel_tool_calls` go; without
/// a non-empty `functions` array, `function_call` goes.
fn strip_tool_parameters(body: &mut Object) {
    let non_empty_array =
        |v: Option<&Value>| v.and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if !non_empty_array(body.get("tools")) {
        body.shift_remove("tool_choice");
        body.shift_remove("parallel_tool_calls");
    }
    if !non_empty_array(body.get("functions")) {
        body.shift_remove("function_call");
    }
}

/// C56: `url` contains, anywhere and case-sensitively, `/openai/deployments/<seg>/` followed by
/// `chat/completions`, `completions` or `extensions/chat/completions`, `<seg>` being one or
/// more characters other than `/`.
pub(crate) fn is_azure_completions_url(url: &str) -> bool {
    const PREFIX: &str = "/openai/deployments/";
    const TAILS: [&str; 3] = [
        "chat/completions",
        "completions",
        "extensions/chat/completions",
    ];
    // Occurrences of PREFIX may overlap (its last `/` can start the next one), so step by one
    // character rather than by match.
    let mut from = 0;
    while let Some(found) = url[from..].find(PREFIX) {
        let at = from + found;
        let rest = &url[at + PREFIX.len()..];
        if let Some(slash) = rest.find('/')
            && slash > 0
        {
            let tail = &rest[slash + 1..];
            if TAILS.iter().any(|t| tail.starts_with(t)) {
                return true;
            }
        }
        from = at + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Secrets};
    use crate::params::{SubAction, parse_params};

    const USER_AGENT: &str = "openai-connector/test";

    fn connector(provider: Provider, api_url: &str, default_model: Option<&str>) -> Connector {
        Connector {
            id: "c1".to_owned(),
            name: "My connector".to_owned(),
            config: Config {
                provider,
                api_url: api_url.to_owned(),
                default_model: default_model.map(str::to_owned),
                organization_id: None,
                project_id: None,
                headers: Vec::new(),
                verification_mode: None,
                normalized: Object::default(),
            },
            secrets: Secrets {
                api_key: Some("sk-test-key-123456".to_owned()),
                ..Secrets::default()
            },
        }
    }

    fn openai(url: &str) -> Connector {
        connector(Provider::OpenAi, url, Some(DEFAULT_MODEL))
    }

    fn params(sub_action: SubAction, stream: bool, body: &str) -> Params {
        Params {
            sub_action,
            body: body.as_bytes().to_vec(),
            stream,
            timeout_ms: None,
        }
    }

    /// Run path, or stream path with `flag`.
    fn run(body: &str) -> Params {
        params(SubAction::Run, false, body)
    }

    fn stream(flag: bool, body: &str) -> Params {
        params(SubAction::Stream, flag, body)
    }

    fn build_request(c: &Connector, p: &Params, user_agent: &str) -> HttpRequest {
        super::build_request(c, p, user_agent).expect("a chat request is always built")
    }

    fn sent(c: &Connector, p: &Params) -> String {
        String::from_utf8(build_request(c, p, USER_AGENT).body).unwrap()
    }

    const E6_IN: &str =
        r#"{"messages":[],"tools":[],"parallel_tool_calls":false,"function_call":"auto"}"#;

    #[test]
    fn e1_openai_exact_url_run_path() {
        let c = openai(OPENAI_CHAT_URL);
        let p = run(
            r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert_eq!(
            sent(&c, &p),
            r#"{"messages":[{"role":"user","content":"Hi"}],"stream":false,"stream_options":{"include_usage":true},"model":"gpt-4.1"}"#
        );
    }

    #[test]
    fn e2_openai_exact_url_stream_path() {
        let c = openai(OPENAI_CHAT_URL);
        let p = stream(
            true,
            r#"{"model":"gpt-4o","stream_options":{"include_usage":false},"temperature":0.70,"seed":12345678901234567890}"#,
        );
        assert_eq!(
            sent(&c, &p),
            r#"{"model":"gpt-4o","stream_options":{"include_usage":true},"temperature":0.70,"seed":12345678901234567890,"stream":true}"#
        );
    }

    #[test]
    fn e3_trailing_slash_is_not_the_exact_url() {
        let c = openai("https://api.openai.com/v1/chat/completions/");
        let p = stream(
            true,
            r#"{"messages":[],"stream":false,"tool_choice":"auto","parallel_tool_calls":true}"#,
        );
        let req = build_request(&c, &p, USER_AGENT);
        assert_eq!(
            String::from_utf8(req.body).unwrap(),
            r#"{"messages":[],"stream":false,"model":"gpt-4.1"}"#
        );
        assert_eq!(req.url, OPENAI_CHAT_URL);
        assert_eq!(req.method, "POST");
    }

    #[test]
    fn e4_azure_matching_url() {
        let c = connector(
            Provider::AzureOpenAi,
            "https://res.openai.azure.com/openai/deployments/chat4o/chat/completions?api-version=2024-10-21",
            Some("gpt-4o"),
        );
        let p = stream(true, r#"{"messages":[],"model":"","tool_choice":"auto"}"#);
        let req = build_request(&c, &p, USER_AGENT);
        assert_eq!(
            String::from_utf8(req.body).unwrap(),
            r#"{"messages":[],"model":"gpt-4o","tool_choice":"auto","stream":true,"stream_options":{"include_usage":true}}"#
        );
        // C43: the query is sent as configured.
        assert_eq!(req.url, c.config.api_url);
    }

    #[test]
    fn e5_azure_other_url_is_unchanged() {
        let c = connector(
            Provider::AzureOpenAi,
            "https://apim.example.com/llm/chat?api-version=2024-10-21",
            Some("gpt-4o"),
        );
        for p in [
            run(r#"{ "messages": [] }"#),
            stream(true, r#"{ "messages": [] }"#),
            stream(false, r#"{ "messages": [] }"#),
            params(SubAction::InvokeAi, false, r#"{ "messages": [] }"#),
        ] {
            assert_eq!(sent(&c, &p), r#"{ "messages": [] }"#);
        }
    }

    #[test]
    fn e6_other_run_path() {
        let c = connector(
            Provider::Other,
            "http://localhost:1234/v1/chat/completions",
            Some("llama3"),
        );
        assert_eq!(
            sent(&c, &run(E6_IN)),
            r#"{"messages":[],"tools":[],"stream":false}"#
        );
    }

    #[test]
    fn e7_other_stream_path() {
        let c = connector(
            Provider::Other,
            "http://localhost:1234/v1/chat/completions",
            Some("llama3"),
        );
        assert_eq!(
            sent(&c, &stream(true, E6_IN)),
            r#"{"messages":[],"tools":[],"stream":true,"model":"llama3"}"#
        );
    }

    #[test]
    fn e8_unparseable_empty_and_non_object_bodies() {
        let connectors = [
            openai(OPENAI_CHAT_URL),
            connector(
                Provider::AzureOpenAi,
                "https://r.openai.azure.com/openai/deployments/d/chat/completions",
                Some("m"),
            ),
            connector(Provider::Other, "http://localhost/v1", Some("llama3")),
        ];
        for c in &connectors {
            for (input, output) in [
                (r#"{"messages": ["#, r#"{"messages": ["#),
                ("", "{}"),
                ("[1,2]", "[1,2]"),
                ("[ 1, 2 ]", "[ 1, 2 ]"),
                (" \"s\" ", " \"s\" "),
                ("1.0", "1.0"),
                ("null", "null"),
                ("true", "true"),
                ("   ", "   "),
                ("\n", "\n"),
            ] {
                for p in [run(input), stream(true, input)] {
                    assert_eq!(sent(c, &p), output, "{:?} {input:?}", c.config.provider);
                }
            }
        }
    }

    #[test]
    fn c50_non_utf8_deep_and_lone_surrogates_are_unchanged() {
        let c = openai(OPENAI_CHAT_URL);
        let deep = "[".repeat(129) + &"]".repeat(129);
        let wrapped = format!(r#"{{"a":{deep}}}"#);
        for body in [
            wrapped.as_bytes().to_vec(),
            br#"{"a":"\ud800"}"#.to_vec(),
            b"{\"a\":\"\xff\"}".to_vec(),
        ] {
            let p = Params {
                sub_action: SubAction::Run,
                body: body.clone(),
                stream: false,
                timeout_ms: None,
            };
            assert_eq!(build_request(&c, &p, USER_AGENT).body, body);
        }
        // 128 levels still parse and are rewritten.
        let ok = "[".repeat(127) + &"]".repeat(127);
        assert_eq!(
            sent(&c, &run(&format!(r#"{{"a":{ok}}}"#))),
            format!(r#"{{"a":{ok},"stream":false,"model":"gpt-4.1"}}"#)
        );
    }

    #[test]
    fn c50_c52_duplicates_numbers_and_escapes() {
        let c = openai("https://gw.example.com/v1");
        assert_eq!(
            sent(
                &c,
                &run(r#"{"model":"a","n":1.0,"model":"b","x":[1e2,-0]}"#)
            ),
            r#"{"model":"b","n":1.0,"x":[1e2,-0]}"#
        );
        assert_eq!(
            sent(
                &c,
                &run(r#"{ "a" : "\u00e9\/x" , "n" : 1.50, "model":"m" }"#)
            ),
            r#"{"a":"é/x","n":1.50,"model":"m"}"#
        );
        assert_eq!(
            sent(&c, &run(r#"{"model":"m","s":"\u0001\u2028\n"}"#)),
            "{\"model\":\"m\",\"s\":\"\\u0001\u{2028}\\n\"}"
        );
    }

    #[test]
    fn c54_exact_url_sets_stream() {
        for url in [OPENAI_CHAT_URL, OPENAI_LEGACY_COMPLETION_URL] {
            let c = openai(url);
            // Flag false: stream false, stream_options left alone.
            assert_eq!(
                sent(&c, &stream(false, r#"{"model":"m","stream_options":5}"#)),
                r#"{"model":"m","stream_options":5,"stream":false}"#
            );
            assert_eq!(
                sent(&c, &run(r#"{"model":"m"}"#)),
                r#"{"model":"m","stream":false}"#
            );
            assert_eq!(
                sent(&c, &stream(true, r#"{"model":"m"}"#)),
                r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
            );
        }
    }

    #[test]
    fn c54_other_openai_urls_leave_stream_alone() {
        let c = openai("https://gw.example.com/v1/chat/completions");
        assert_eq!(
            sent(&c, &stream(true, r#"{"model":"m","stream":false}"#)),
            r#"{"model":"m","stream":false}"#
        );
        assert_eq!(
            sent(&c, &run(r#"{"model":"m","stream_options":{}}"#)),
            r#"{"model":"m","stream_options":{}}"#
        );
    }

    #[test]
    fn c54_streaming_invokes_always_ask_for_a_stream() {
        let body = r#"{"messages":[],"model":"m"}"#;
        let cases = [
            // OpenAI, exact URL: stream and stream_options.
            (
                openai(OPENAI_CHAT_URL),
                r#"{"messages":[],"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
            ),
            // OpenAI, other URL: stream only.
            (
                openai("https://gw.example.com/x"),
                r#"{"messages":[],"model":"m","stream":true}"#,
            ),
            // Azure, non-matching URL: stream only, nothing else.
            (
                connector(
                    Provider::AzureOpenAi,
                    "https://apim.example.com/llm",
                    Some("d"),
                ),
                r#"{"messages":[],"model":"m","stream":true}"#,
            ),
            // Azure, matching URL.
            (
                connector(
                    Provider::AzureOpenAi,
                    "https://r.openai.azure.com/openai/deployments/d/completions",
                    None,
                ),
                r#"{"messages":[],"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
            ),
            // Other: stream, never stream_options.
            (
                connector(Provider::Other, "http://localhost/v1", Some("llama3")),
                r#"{"messages":[],"model":"m","stream":true}"#,
            ),
        ];
        for (c, expected) in &cases {
            for sub in [SubAction::InvokeStream, SubAction::InvokeAsyncIterator] {
                assert_eq!(sent(c, &params(sub, true, body)), *expected, "{sub}");
            }
        }
        // invokeAI on a non-exact OpenAI URL: stream untouched.
        assert_eq!(
            sent(&cases[1].0, &params(SubAction::InvokeAi, false, body)),
            body
        );
    }

    #[test]
    fn c55_falsy_model_gets_the_default() {
        let c = openai("https://gw.example.com/v1");
        for falsy in ["null", "false", "0", "-0", "0.0", r#""""#] {
            assert_eq!(
                sent(&c, &run(&format!(r#"{{"model":{falsy},"a":1}}"#))),
                r#"{"model":"gpt-4.1","a":1}"#,
                "{falsy}"
            );
        }
        for truthy in [r#""x""#, "1", "true", "[]", "{}"] {
            let body = format!(r#"{{"model":{truthy}}}"#);
            assert_eq!(sent(&c, &run(&body)), body, "{truthy}");
        }
        // Both paths, configured default model.
        let c = connector(
            Provider::OpenAi,
            "https://gw.example.com/v1",
            Some("gpt-4o-mini"),
        );
        assert_eq!(sent(&c, &stream(true, "{}")), r#"{"model":"gpt-4o-mini"}"#);
        // Re-serialised even when nothing changed.
        assert_eq!(sent(&c, &run(r#"{ "model" : "m" }"#)), r#"{"model":"m"}"#);
    }

    #[test]
    fn c56_azure_url_pattern() {
        for url in [
            "https://r.openai.azure.com/openai/deployments/d/chat/completions",
            "https://r.openai.azure.com/openai/deployments/d/completions?api-version=1",
            "https://r.openai.azure.com/openai/deployments/d/extensions/chat/completions",
            "https://r.openai.azure.com/openai/deployments/d/chat/completionsXYZ",
            "https://gw.example.com/proxy?to=/openai/deployments/d/chat/completions",
            "https://r.example.com/x/openai/deployments/openai/deployments/d/completions",
            "https://r.example.com/openai/deployments//openai/deployments/d/completions",
        ] {
            assert!(is_azure_completions_url(url), "{url}");
        }
        for url in [
            "https://r.openai.azure.com/openai/deployments//chat/completions",
            "https://r.openai.azure.com/openai/deployments/d/embeddings",
            "https://r.openai.azure.com/OpenAI/deployments/d/chat/completions",
            "https://r.openai.azure.com/openai/deployments/d",
            "https://r.openai.azure.com/openai/deployments/a/b/chat/completions",
            "https://apim.example.com/llm/chat?api-version=2024-10-21",
        ] {
            assert!(!is_azure_completions_url(url), "{url}");
        }
    }

    #[test]
    fn c57_azure_matching_url_rules() {
        let url = "https://r.openai.azure.com/openai/deployments/d/chat/completions";
        let with_model = connector(Provider::AzureOpenAi, url, Some("gpt-4o"));
        // Run path: stream false, model set, tools kept (C57: never stripped).
        assert_eq!(
            sent(
                &with_model,
                &run(r#"{"messages":[],"tool_choice":"auto","function_call":"auto"}"#)
            ),
            r#"{"messages":[],"tool_choice":"auto","function_call":"auto","stream":false,"model":"gpt-4o"}"#
        );
        // Flag false leaves stream_options alone.
        assert_eq!(
            sent(
                &with_model,
                &stream(false, r#"{"stream_options":1,"model":"m"}"#)
            ),
            r#"{"stream_options":1,"model":"m","stream":false}"#
        );
        // No default model, or an empty one: model never added.
        for c in [
            connector(Provider::AzureOpenAi, url, None),
            connector(Provider::AzureOpenAi, url, Some("")),
        ] {
            assert_eq!(
                sent(&c, &run(r#"{"model":null}"#)),
                r#"{"model":null,"stream":false}"#
            );
        }
    }

    #[test]
    fn c58_c59_other_provider() {
        let c = connector(
            Provider::Other,
            "http://localhost:1234/v1/chat/completions",
            Some("llama3"),
        );
        // Run path: model never added; stream set; stream_options never added.
        assert_eq!(
            sent(
                &c,
                &params(SubAction::InvokeAi, false, r#"{"messages":[]}"#)
            ),
            r#"{"messages":[],"stream":false}"#
        );
        assert_eq!(
            sent(
                &c,
                &run(r#"{"model":"","stream_options":{"include_usage":true}}"#)
            ),
            r#"{"model":"","stream_options":{"include_usage":true},"stream":false}"#
        );
        // Stream path with flag false still fills the model.
        assert_eq!(
            sent(&c, &stream(false, r#"{"model":null}"#)),
            r#"{"model":"llama3","stream":false}"#
        );
        // Tools kept when non-empty.
        assert_eq!(
            sent(
                &c,
                &run(
                    r#"{"tools":[{}],"tool_choice":"auto","parallel_tool_calls":true,"functions":[{}],"function_call":"auto"}"#
                )
            ),
            r#"{"tools":[{}],"tool_choice":"auto","parallel_tool_calls":true,"functions":[{}],"function_call":"auto","stream":false}"#
        );
    }

    #[test]
    fn c60_strip_tool_parameters() {
        let c = openai("https://gw.example.com/v1");
        assert_eq!(
            sent(
                &c,
                &run(
                    r#"{"model":"m","tools":{},"tool_choice":"auto","functions":"x","function_call":"auto","parallel_tool_calls":false}"#
                )
            ),
            r#"{"model":"m","tools":{},"functions":"x"}"#
        );
        assert_eq!(
            sent(
                &c,
                &run(
                    r#"{"model":"m","tool_choice":"auto","functions":[1],"function_call":"auto"}"#
                )
            ),
            r#"{"model":"m","functions":[1],"function_call":"auto"}"#
        );
    }

    #[test]
    fn c61_whitespace_only_body_is_sent_as_is() {
        let c = connector(Provider::Other, "http://localhost/v1", Some("m"));
        let req = build_request(&c, &run(" \t"), USER_AGENT);
        assert_eq!(req.body, b" \t");
        assert_eq!(req.header("Content-Length"), Some("2"));
        let req = build_request(&c, &run(""), USER_AGENT);
        assert_eq!(req.body, b"{}");
        assert_eq!(req.header("content-length"), Some("2"));
    }

    #[test]
    fn c38_invoke_body_through_section_4() {
        let c = openai(OPENAI_CHAT_URL);
        let p = parse_params(
            br#"{"subAction":"invokeAI","subActionParams":{"temperature":"0.2","messages":[{"role":"user","content":"Hi"}],"timeout":5000}}"#,
        )
        .unwrap();
        assert_eq!(
            sent(&c, &p),
            r#"{"temperature":0.2,"messages":[{"role":"user","content":"Hi"}],"stream":false,"model":"gpt-4.1"}"#
        );
    }

    #[test]
    fn c45_url_normalisation_table() {
        for (configured, sent) in [
            (
                "https://api.openai.com/v1/chat/completions/",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://gw.example.com//v1///chat/completions",
                "https://gw.example.com/v1/chat/completions",
            ),
            ("https://gw.example.com/a//", "https://gw.example.com/a/"),
            (
                "https://gw.example.com/v1?next=https://x//y/",
                "https://gw.example.com/v1?next=https://x/y",
            ),
            // Only one trailing slash is removed before collapsing.
            ("http://h/a///", "http://h/a/"),
            ("http://h", "http://h"),
            ("", ""),
            ("//x", "//x"),
        ] {
            assert_eq!(normalize_url(configured), sent, "{configured}");
        }
    }

    fn header_list(req: &HttpRequest) -> Vec<String> {
        req.headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect()
    }

    #[test]
    fn c46_c48_openai_headers() {
        let mut c = openai(OPENAI_CHAT_URL);
        c.secrets.api_key = Some("123".to_owned());
        c.config.headers = vec![
            ("authorization".to_owned(), "override".to_owned()),
            ("X-Team".to_owned(), "a".to_owned()),
        ];
        let req = build_request(&c, &run(r#"{"model":"m"}"#), "ua/1");
        assert_eq!(
            header_list(&req),
            [
                "Authorization: Bearer 123",
                "X-Team: a",
                "Content-Type: application/json",
                "Accept: application/json, text/plain, */*",
                "User-Agent: ua/1",
                "Content-Length: 28",
            ]
        );
        assert_eq!(req.body.len(), 28);
    }

    #[test]
    fn c46_organization_and_project_even_when_empty() {
        let mut c = openai(OPENAI_CHAT_URL);
        c.config.organization_id = Some("org-1".to_owned());
        c.config.project_id = Some(String::new());
        c.config.headers = vec![("openai-project".to_owned(), "custom".to_owned())];
        let req = build_request(&c, &run("{}"), USER_AGENT);
        assert_eq!(
            &header_list(&req)[..3],
            [
                "OpenAI-Project: ",
                "OpenAI-Organization: org-1",
                "Authorization: Bearer sk-test-key-123456",
            ]
        );
        // Not on other providers.
        let mut other = connector(Provider::Other, "http://h/v1", Some("m"));
        other.config.organization_id = Some("org-1".to_owned());
        let req = build_request(&other, &run("{}"), USER_AGENT);
        assert_eq!(req.header("OpenAI-Organization"), None);
    }

    #[test]
    fn c47_azure_api_key_beside_custom_authorization() {
        let mut c = connector(Provider::AzureOpenAi, "https://apim.example.com/x", None);
        c.secrets.api_key = Some("az-key".to_owned());
        c.config.headers = vec![
            ("Authorization".to_owned(), "Bearer user-token".to_owned()),
            ("API-KEY".to_owned(), "custom".to_owned()),
        ];
        let req = build_request(&c, &run("{}"), USER_AGENT);
        assert_eq!(
            header_list(&req),
            [
                "Authorization: Bearer user-token".to_owned(),
                "api-key: az-key".to_owned(),
                "Content-Type: application/json".to_owned(),
                format!("Accept: {ACCEPT}"),
                format!("User-Agent: {USER_AGENT}"),
                "Content-Length: 2".to_owned(),
            ]
        );
    }

    #[test]
    fn c47_pki_without_api_key_sends_empty_bearer() {
        let mut c = connector(Provider::Other, "https://h/v1", Some("m"));
        c.secrets.api_key = None;
        let req = build_request(&c, &run("{}"), USER_AGENT);
        assert_eq!(req.header("Authorization"), Some("Bearer "));
    }

    #[test]
    fn c15_c48_custom_headers() {
        let mut c = connector(Provider::Other, "https://h/v1", Some("m"));
        c.config.headers = [
            ("x-trace", "1"),
            ("host", "evil"),
            ("Content-Length", "5"),
            ("transfer-encoding", "chunked"),
            ("CONNECTION", "close"),
            ("Keep-Alive", "1"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("Trailer", "x"),
            ("Proxy-Connection", "x"),
            ("X-Trace", "2"),
            ("accept", "text/event-stream"),
            ("user-agent", "mine/2"),
            ("content-type", "text/plain"),
            ("Accept-Encoding", "gzip"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .to_vec();
        let req = build_request(&c, &run("{}"), USER_AGENT);
        assert_eq!(
            header_list(&req),
            [
                "X-Trace: 2",
                "accept: text/event-stream",
                "user-agent: mine/2",
                "Content-Type: application/json",
                "Accept-Encoding: gzip",
                "Authorization: Bearer sk-test-key-123456",
                "Content-Length: 16",
            ]
        );
    }

    #[test]
    fn c32_debug_never_shows_credentials_or_body() {
        let mut c = openai(OPENAI_CHAT_URL);
        c.config.headers = vec![("X-Secret".to_owned(), "custom-secret".to_owned())];
        let req = build_request(&c, &run(r#"{"prompt":"private text"}"#), USER_AGENT);
        let shown = format!("{req:?}");
        assert!(!shown.contains("sk-test-key-123456"), "{shown}");
        assert!(!shown.contains("custom-secret"), "{shown}");
        assert!(!shown.contains("private text"), "{shown}");
        assert!(shown.contains("Authorization: [REDACTED]"), "{shown}");
        assert!(shown.contains("Content-Type: application/json"), "{shown}");
        let azure = connector(Provider::AzureOpenAi, "https://a/b", None);
        let shown = format!("{:?}", build_request(&azure, &run("{}"), USER_AGENT));
        assert!(shown.contains("api-key: [REDACTED]"), "{shown}");
        assert!(!shown.contains("sk-test-key-123456"), "{shown}");
    }

    fn api_params(sub_action: SubAction, body: &str) -> Params {
        params(sub_action, false, body)
    }

    #[test]
    fn responses_and_embeddings_go_to_the_derived_url_with_the_body_as_given() {
        let mut c = openai("https://api.openai.com/v1/chat/completions");
        c.config.organization_id = Some("org-1".to_owned());
        let body = r#"{ "input" : "Hi", "stream" : true }"#;
        let req =
            super::build_request(&c, &api_params(SubAction::Responses, body), "ua/1").unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, "https://api.openai.com/v1/responses");
        // Byte for byte: no model, stream or tool rule of C54–C60 applies.
        assert_eq!(req.body, body.as_bytes());
        assert_eq!(
            header_list(&req),
            [
                "OpenAI-Organization: org-1".to_owned(),
                "Authorization: Bearer sk-test-key-123456".to_owned(),
                "Content-Type: application/json".to_owned(),
                format!("Accept: {ACCEPT}"),
                "User-Agent: ua/1".to_owned(),
                format!("Content-Length: {}", body.len()),
            ]
        );
        let c = connector(
            Provider::Other,
            "http://localhost:11434//v1/chat/completions/",
            Some("llama3"),
        );
        let req =
            super::build_request(&c, &api_params(SubAction::Embeddings, "{}"), USER_AGENT).unwrap();
        // C45 first (the trailing slash, the double one), then the derivation.
        assert_eq!(req.url, "http://localhost:11434/v1/embeddings");
        assert_eq!(req.body, b"{}");
    }

    #[test]
    fn responses_headers_are_chats_per_provider() {
        let custom = vec![
            ("X-Team".to_owned(), "a".to_owned()),
            ("Host".to_owned(), "evil".to_owned()),
        ];
        let cases = [
            (
                Provider::OpenAi,
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                Provider::AzureOpenAi,
                "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=1",
            ),
            (Provider::Other, "http://h/v1/chat/completions"),
        ];
        for (provider, url) in cases {
            let mut c = connector(provider, url, Some("m"));
            c.config.headers = custom.clone();
            for sub in [SubAction::Responses, SubAction::Embeddings] {
                let p = api_params(sub, r#"{"model":"m","input":"x"}"#);
                let api = super::build_request(&c, &p, USER_AGENT).unwrap();
                let chat = build_request(&c, &run(r#"{"model":"m","input":"x"}"#), USER_AGENT);
                // The same headers as chat's, but for the body's length.
                let without_length = |r: &HttpRequest| -> Vec<(String, String)> {
                    r.headers
                        .iter()
                        .filter(|(n, _)| n != "Content-Length")
                        .cloned()
                        .collect()
                };
                assert_eq!(
                    without_length(&api),
                    without_length(&chat),
                    "{provider:?} {sub}"
                );
                assert_eq!(
                    api.header("Content-Length"),
                    Some(api.body.len().to_string().as_str())
                );
                assert_eq!(api.header("Host"), None);
                assert_eq!(api.header("X-Team"), Some("a"));
                match provider {
                    Provider::AzureOpenAi => {
                        assert_eq!(api.header("api-key"), Some("sk-test-key-123456"));
                        assert_eq!(api.header("Authorization"), None);
                    }
                    _ => assert_eq!(
                        api.header("Authorization"),
                        Some("Bearer sk-test-key-123456")
                    ),
                }
            }
        }
    }

    #[test]
    fn azure_responses_name_the_deployment_as_model_when_the_body_has_none() {
        let c = connector(
            Provider::AzureOpenAi,
            "https://r.openai.azure.com/openai/deployments/gpt-5-mini/chat/completions?api-version=2025-04-01-preview",
            Some("ignored-default"),
        );
        let build = |sub, body: &str| {
            let req = super::build_request(&c, &api_params(sub, body), USER_AGENT).unwrap();
            (req.url, String::from_utf8(req.body).unwrap())
        };
        assert_eq!(
            build(SubAction::Responses, r#"{"input":"Hi"}"#),
            (
                "https://r.openai.azure.com/openai/responses?api-version=2025-04-01-preview"
                    .to_owned(),
                r#"{"input":"Hi","model":"gpt-5-mini"}"#.to_owned()
            )
        );
        // A falsy model counts as none (as C55); a model given is kept, byte for byte.
        assert_eq!(
            build(SubAction::Responses, r#"{"model":"","input":"Hi"}"#).1,
            r#"{"model":"gpt-5-mini","input":"Hi"}"#
        );
        let given = r#"{ "model" : "other-deployment", "input" : "Hi" }"#;
        assert_eq!(build(SubAction::Responses, given).1, given);
        // Embeddings keep the deployment in the URL and the body as it is.
        assert_eq!(
            build(SubAction::Embeddings, r#"{"input":"Hi"}"#),
            (
                "https://r.openai.azure.com/openai/deployments/gpt-5-mini/embeddings?api-version=2025-04-01-preview"
                    .to_owned(),
                r#"{"input":"Hi"}"#.to_owned()
            )
        );
    }

    #[test]
    fn unmappable_urls_build_no_request() {
        for (provider, url) in [
            (Provider::OpenAi, "https://api.openai.com/v1/completions"),
            (Provider::Other, "http://localhost:1234/v1"),
            (Provider::AzureOpenAi, "https://apim.example.com/llm/chat"),
        ] {
            let c = connector(provider, url, Some("m"));
            for sub in [SubAction::Responses, SubAction::Embeddings] {
                let error =
                    super::build_request(&c, &api_params(sub, "{}"), USER_AGENT).unwrap_err();
                assert_eq!(error.api, sub.api(), "{url}");
            }
            // Chat sub-actions still go to the configured URL.
            assert!(super::build_request(&c, &run("{}"), USER_AGENT).is_ok());
        }
    }

    #[test]
    fn c62_total_timeout() {
        assert_eq!(total_timeout_ms(60_000, None), 200_000);
        assert_eq!(total_timeout_ms(60_000, Some(30_000)), 60_000);
        assert_eq!(total_timeout_ms(60_000, Some(600_000)), 600_000);
        assert_eq!(total_timeout_ms(300_000, None), 300_000);
        assert_eq!(DEFAULT_TIMEOUT_MS, 200_000);
    }
}
