//! Sub-actions and their params (contract section 3, C33–C38).
//!
//! [`parse_params`] takes the `params` object of Kibana's `_execute` API
//! (`{"subAction": ..., "subActionParams": {...}}`), validates it strictly and reduces it to a
//! [`Params`]: the sub-action, the starting request body (C38), the stream flag (C49) and the
//! `timeout` param (C62). Every problem is reported, in schema order, in Kibana's wording
//! (C1–C3).

use crate::config::{CONNECTOR_TYPE_ID, CONNECTOR_TYPE_NAME};
use crate::json::{Number, Object, ParseError, Value};
use crate::schema::{Expected, Problem, actual_type, join_path, join_problems, numeric};
use std::fmt;

/// A sub-action of the connector (C33).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubAction {
    /// `run`: the body as given, run path, not streaming.
    Run,
    /// `test`: identical to `run`.
    Test,
    /// `stream`: the body as given, stream path, streaming iff its `stream` param is `true`.
    Stream,
    /// `invokeAI`: structured params, run path, returns `{message, usage}` (C39).
    InvokeAi,
    /// `invokeStream`: structured params, stream path, raw bytes (C41).
    InvokeStream,
    /// `invokeAsyncIterator`: structured params, stream path, parsed chunks (C42, D10).
    InvokeAsyncIterator,
    /// `responses` (this project's, not Kibana's): the body as given to OpenAI's Responses API;
    /// streaming iff the body has `"stream": true`.
    Responses,
    /// `embeddings` (this project's, not Kibana's): the body as given to the embeddings API;
    /// never streaming.
    Embeddings,
}

impl SubAction {
    /// Every sub-action: Kibana's in the order of C33, then this project's.
    pub const ALL: [SubAction; 8] = [
        SubAction::Run,
        SubAction::Test,
        SubAction::Stream,
        SubAction::InvokeAi,
        SubAction::InvokeStream,
        SubAction::InvokeAsyncIterator,
        SubAction::Responses,
        SubAction::Embeddings,
    ];

    /// Kibana's name for the sub-action.
    pub fn as_str(self) -> &'static str {
        match self {
            SubAction::Run => "run",
            SubAction::Test => "test",
            SubAction::Stream => "stream",
            SubAction::InvokeAi => "invokeAI",
            SubAction::InvokeStream => "invokeStream",
            SubAction::InvokeAsyncIterator => "invokeAsyncIterator",
            SubAction::Responses => "responses",
            SubAction::Embeddings => "embeddings",
        }
    }

    /// Parses Kibana's name (exact, case-sensitive). `getDashboard` is not a sub-action (D13).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The upstream API the sub-action calls.
    pub fn api(self) -> Api {
        match self {
            SubAction::Responses => Api::Responses,
            SubAction::Embeddings => Api::Embeddings,
            _ => Api::ChatCompletions,
        }
    }

    /// `true` for the sub-actions on the stream path (C49): `stream`, `invokeStream`,
    /// `invokeAsyncIterator`.
    pub(crate) fn is_stream_path(self) -> bool {
        matches!(
            self,
            SubAction::Stream | SubAction::InvokeStream | SubAction::InvokeAsyncIterator
        )
    }

    /// `true` for `invokeStream` and `invokeAsyncIterator`, which always stream and always ask
    /// for a stream (C49, C54).
    pub(crate) fn always_streams(self) -> bool {
        matches!(
            self,
            SubAction::InvokeStream | SubAction::InvokeAsyncIterator
        )
    }
}

/// The upstream API a sub-action calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// Chat completions at the connector's `apiUrl` (Kibana's sub-actions, C33).
    ChatCompletions,
    /// OpenAI's Responses API, at a URL derived from `apiUrl`.
    Responses,
    /// The embeddings API, at a URL derived from `apiUrl`.
    Embeddings,
}

impl Api {
    /// The API's name in messages: `Responses` or `embeddings`.
    pub fn name(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat completions",
            Api::Responses => "Responses",
            Api::Embeddings => "embeddings",
        }
    }
}

impl fmt::Display for SubAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Validated params of one execution.
#[derive(Clone, PartialEq, Eq)]
pub struct Params {
    /// The sub-action.
    pub sub_action: SubAction,
    /// The starting request body (C38): `body` as given for `run`, `test` and `stream`; the
    /// compact JSON of the params without `signal`, `timeout` and `telemetryMetadata` for the
    /// Invoke sub-actions. Section 4.3 then sanitises it.
    pub body: Vec<u8>,
    /// The stream flag of C49: `false` for `run`, `test` and `invokeAI`, the `stream` param for
    /// `stream`, `true` for `invokeStream` and `invokeAsyncIterator`.
    pub stream: bool,
    /// The `timeout` param in milliseconds (C37, C62): fractions are dropped and negative values
    /// count as 0 (chosen); `None` when not given.
    pub timeout_ms: Option<u64>,
}

impl fmt::Debug for Params {
    // The body is user content (C121): show its size, not its text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("sub_action", &self.sub_action)
            .field("body", &format_args!("[{} bytes]", self.body.len()))
            .field("stream", &self.stream)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Why params were refused. Both kinds fail the execution with `retry: false` (C77).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ParamsError {
    /// The sub-action name is not one of C33 (C34).
    #[error("Sub action \"{name}\" is not registered")]
    NotRegistered {
        /// The name as given.
        name: String,
    },
    /// The params break their schema (C35, C36); every problem, in schema order.
    #[error("Request validation failed ({})", join_problems(.0))]
    Invalid(Vec<Problem>),
    /// The params are not JSON at all (chosen: reported like a validation failure).
    #[error("Request validation failed (params are not valid JSON: {0})")]
    NotJson(ParseError),
}

impl ParamsError {
    /// The service message for connector `connector_id` (C34, C35).
    pub(crate) fn message(&self, connector_id: &str) -> String {
        match self {
            ParamsError::NotRegistered { name } => format!(
                "Sub action \"{name}\" is not registered. Connector id: {connector_id}. \
                 Connector name: {CONNECTOR_TYPE_NAME}. Connector type: {CONNECTOR_TYPE_ID}"
            ),
            other => other.to_string(),
        }
    }
}

/// Parses and validates the `params` object of an execution (C33–C38).
///
/// Order (chosen, as in Kibana): the envelope `{subAction, subActionParams}` first (C35), then
/// the sub-action name (C34), then `subActionParams` against the sub-action's schema (C36) with
/// paths relative to `subActionParams`.
pub(crate) fn parse_params(params_json: &[u8]) -> Result<Params, ParamsError> {
    let envelope = Value::parse(params_json).map_err(|e| match &e.nesting_path {
        // C50's limit, reported where it was passed; paths are relative to `subActionParams`
        // (C35) unless the deep value is an envelope key.
        Some(path) => {
            let path = match path.split_first() {
                Some((first, rest)) if first == "subActionParams" => rest,
                _ => path,
            };
            ParamsError::Invalid(vec![Problem::too_deep(path)])
        }
        None => ParamsError::NotJson(e),
    })?;
    let mut problems = Vec::new();
    let Some(envelope) = expect_object(&envelope, "", &mut problems) else {
        return Err(ParamsError::Invalid(problems));
    };

    let name = match envelope.get("subAction") {
        None => {
            problems.push(Problem::missing("subAction", Expected::String));
            None
        }
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            problems.push(Problem::wrong_type("subAction", Expected::String, other));
            None
        }
    };
    let empty = Object::default();
    let sub_params = match envelope.get("subActionParams") {
        None => Some(&empty),
        Some(v) => expect_object(v, "subActionParams", &mut problems),
    };
    unknown_keys(
        envelope,
        &["subAction", "subActionParams"],
        "",
        &mut problems,
    );
    let (Some(name), Some(sub_params), true) = (name, sub_params, problems.is_empty()) else {
        return Err(ParamsError::Invalid(problems));
    };

    let sub_action = SubAction::parse(name).ok_or_else(|| ParamsError::NotRegistered {
        name: name.to_owned(),
    })?;

    let params = match sub_action {
        SubAction::Run | SubAction::Test => check_run(sub_action, sub_params, false, &mut problems),
        SubAction::Stream => check_run(sub_action, sub_params, true, &mut problems),
        SubAction::InvokeAi | SubAction::InvokeStream | SubAction::InvokeAsyncIterator => {
            check_invoke(sub_action, sub_params, &mut problems)
        }
        SubAction::Responses | SubAction::Embeddings => {
            check_api(sub_action, sub_params, &mut problems)
        }
    };
    if problems.is_empty() {
        Ok(params)
    } else {
        Err(ParamsError::Invalid(problems))
    }
}

/// Run and Stream params (C36): `body`, `signal`, `timeout`, `telemetryMetadata`, and for
/// `stream` also `stream`.
fn check_run(
    sub_action: SubAction,
    obj: &Object,
    with_stream: bool,
    out: &mut Vec<Problem>,
) -> Params {
    let body = required(obj, "body", "", Expected::String, out)
        .and_then(|v| check_string(v, "body", out))
        .unwrap_or_default();
    let timeout = check_common(obj, out);
    let mut stream = false;
    let mut allowed = vec!["body", "signal", "timeout", "telemetryMetadata"];
    if with_stream {
        allowed.push("stream");
        if let Some(v) = obj.get("stream") {
            // Not coerced: "true" is a wrong type (C36).
            stream = check_bool(v, "stream", out).unwrap_or(false);
        }
    }
    unknown_keys(obj, &allowed, "", out);
    Params {
        sub_action,
        body: body.as_bytes().to_vec(),
        stream,
        timeout_ms: timeout.as_ref().map(number_to_ms),
    }
}

/// `responses` and `embeddings` params (this project's): `body`, the JSON text of an object,
/// and `signal`, `timeout`, `telemetryMetadata` as for `run`. `responses` streams when the
/// body's `stream` is `true`.
fn check_api(sub_action: SubAction, obj: &Object, out: &mut Vec<Problem>) -> Params {
    let body =
        required(obj, "body", "", Expected::String, out).and_then(|v| check_string(v, "body", out));
    let mut stream = false;
    if let Some(body) = body {
        match Value::parse(body.as_bytes()) {
            Ok(Value::Object(parsed)) => {
                stream = sub_action == SubAction::Responses
                    && matches!(parsed.get("stream"), Some(Value::Bool(true)));
            }
            Ok(other) => out.push(Problem::new(
                "body",
                format!(
                    "expected the JSON text of an [Object] but got [{}]",
                    actual_type(&other)
                ),
            )),
            Err(e) => out.push(Problem::new("body", format!("not valid JSON: {e}"))),
        }
    }
    let timeout = check_common(obj, out);
    unknown_keys(
        obj,
        &["body", "signal", "timeout", "telemetryMetadata"],
        "",
        out,
    );
    Params {
        sub_action,
        body: body.unwrap_or_default().as_bytes().to_vec(),
        stream,
        timeout_ms: timeout.as_ref().map(number_to_ms),
    }
}

/// Keys of Invoke params that never reach the body (C37).
const NOT_IN_BODY: [&str; 3] = ["signal", "timeout", "telemetryMetadata"];

/// Invoke params (C36) and the starting body built from them (C38).
fn check_invoke(sub_action: SubAction, obj: &Object, out: &mut Vec<Problem>) -> Params {
    match required(obj, "messages", "", Expected::Array, out) {
        Some(Value::Array(messages)) => {
            for (i, message) in messages.iter().enumerate() {
                check_message(message, &join_path("messages", &i.to_string()), out);
            }
        }
        Some(other) => out.push(Problem::wrong_type("messages", Expected::Array, other)),
        None => {}
    }
    if let Some(v) = obj.get("model") {
        check_string(v, "model", out);
    }
    if let Some(v) = obj.get("tools") {
        check_array(v, "tools", out, check_tool);
    }
    if let Some(v) = obj.get("tool_choice") {
        check_tool_choice(v, "tool_choice", out);
    }
    if let Some(v) = obj.get("functions") {
        check_array(v, "functions", out, check_function);
    }
    if let Some(v) = obj.get("function_call") {
        check_function_call(v, "function_call", out);
    }
    for key in ["n", "temperature"] {
        if let Some(v) = obj.get(key) {
            check_numeric(v, key, out);
        }
    }
    if let Some(v) = obj.get("stop") {
        match v {
            Value::Null | Value::String(_) => {}
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_string(item, &join_path("stop", &i.to_string()), out);
                }
            }
            other => out.push(Problem::wrong_type("stop", Expected::String, other)),
        }
    }
    // response_format: any JSON value.
    let timeout = check_common(obj, out);
    unknown_keys(
        obj,
        &[
            "messages",
            "model",
            "tools",
            "tool_choice",
            "functions",
            "function_call",
            "n",
            "temperature",
            "stop",
            "response_format",
            "signal",
            "timeout",
            "telemetryMetadata",
        ],
        "",
        out,
    );

    let mut body = Object::default();
    for (key, value) in obj {
        if NOT_IN_BODY.contains(&key.as_str()) {
            continue;
        }
        let value = match (key.as_str(), numeric(value)) {
            ("n" | "temperature", Some(n)) => Value::Number(n),
            _ => value.clone(),
        };
        body.insert(key.clone(), value);
    }
    Params {
        sub_action,
        body: Value::Object(body).to_json().into_bytes(),
        stream: sub_action.always_streams(),
        timeout_ms: timeout.as_ref().map(number_to_ms),
    }
}

/// `signal` (anything), `timeout` (numeric) and `telemetryMetadata` (strict object), shared by
/// every params schema (C36). Returns the timeout.
fn check_common(obj: &Object, out: &mut Vec<Problem>) -> Option<Number> {
    let timeout = obj
        .get("timeout")
        .and_then(|v| check_numeric(v, "timeout", out));
    if let Some(v) = obj.get("telemetryMetadata")
        && let Some(meta) = expect_object(v, "telemetryMetadata", out)
    {
        let fields = ["pluginId", "aggregateBy", "useCase"];
        for key in fields {
            if let Some(v) = meta.get(key) {
                check_string(v, &join_path("telemetryMetadata", key), out);
            }
        }
        unknown_keys(meta, &fields, "telemetryMetadata", out);
    }
    timeout
}

/// Message (strict, C36): `role`, `content`, `name`, `function_call`, `tool_calls`,
/// `tool_call_id`.
fn check_message(value: &Value, path: &str, out: &mut Vec<Problem>) {
    let Some(obj) = expect_object(value, path, out) else {
        return;
    };
    for key in ["role", "content"] {
        if let Some(v) = required(obj, key, path, Expected::String, out) {
            check_string(v, &join_path(path, key), out);
        }
    }
    if let Some(v) = obj.get("name") {
        check_string(v, &join_path(path, "name"), out);
    }
    if let Some(v) = obj.get("function_call") {
        check_name_arguments(v, &join_path(path, "function_call"), out);
    }
    if let Some(v) = obj.get("tool_calls") {
        check_array(v, &join_path(path, "tool_calls"), out, |call, path, out| {
            let Some(call) = expect_object(call, path, out) else {
                return;
            };
            for key in ["id", "type"] {
                if let Some(v) = required(call, key, path, Expected::String, out) {
                    check_string(v, &join_path(path, key), out);
                }
            }
            if let Some(v) = required(call, "function", path, Expected::Object, out) {
                check_name_arguments(v, &join_path(path, "function"), out);
            }
            unknown_keys(call, &["id", "type", "function"], path, out);
        });
    }
    if let Some(v) = obj.get("tool_call_id") {
        check_string(v, &join_path(path, "tool_call_id"), out);
    }
    unknown_keys(
        obj,
        &[
            "role",
            "content",
            "name",
            "function_call",
            "tool_calls",
            "tool_call_id",
        ],
        path,
        out,
    );
}

/// `{name, arguments}`, both required strings, strict (C36).
fn check_name_arguments(value: &Value, path: &str, out: &mut Vec<Problem>) {
    let Some(obj) = expect_object(value, path, out) else {
        return;
    };
    for key in ["name", "arguments"] {
        if let Some(v) = required(obj, key, path, Expected::String, out) {
            check_string(v, &join_path(path, key), out);
        }
    }
    unknown_keys(obj, &["name", "arguments"], path, out);
}

/// A `tools` entry (open, C36):
/// `{type:"function", function:{name, description?, parameters, strict?}}`.
fn check_tool(value: &Value, path: &str, out: &mut Vec<Problem>) {
    let Some(obj) = expect_object(value, path, out) else {
        return;
    };
    check_function_literal(obj, path, out);
    let Some(function) = required(obj, "function", path, Expected::Object, out) else {
        return;
    };
    let fpath = join_path(path, "function");
    let Some(function) = expect_object(function, &fpath, out) else {
        return;
    };
    if let Some(v) = required(function, "name", &fpath, Expected::String, out) {
        check_string(v, &join_path(&fpath, "name"), out);
    }
    if let Some(v) = function.get("description") {
        check_string(v, &join_path(&fpath, "description"), out);
    }
    if let Some(v) = required(function, "parameters", &fpath, Expected::Object, out) {
        expect_object(v, &join_path(&fpath, "parameters"), out);
    }
    if let Some(v) = function.get("strict") {
        check_bool(v, &join_path(&fpath, "strict"), out);
    }
}

/// `tool_choice` (open, C36): `none`, `auto`, `required` or
/// `{type:"function", function:{name}}`.
fn check_tool_choice(value: &Value, path: &str, out: &mut Vec<Problem>) {
    const NAMES: [&str; 3] = ["none", "auto", "required"];
    let Value::Object(obj) = value else {
        if !value.as_str().is_some_and(|s| NAMES.contains(&s)) {
            out.push(Problem::not_one_of(path, &NAMES, value));
        }
        return;
    };
    check_function_literal(obj, path, out);
    let Some(function) = required(obj, "function", path, Expected::Object, out) else {
        return;
    };
    let fpath = join_path(path, "function");
    if let Some(function) = expect_object(function, &fpath, out)
        && let Some(v) = required(function, "name", &fpath, Expected::String, out)
    {
        check_string(v, &join_path(&fpath, "name"), out);
    }
}

/// The required `type` literal `"function"` of tools and tool choices.
fn check_function_literal(obj: &Object, path: &str, out: &mut Vec<Problem>) {
    if let Some(v) = required(obj, "type", path, Expected::String, out)
        && v.as_str() != Some("function")
    {
        out.push(Problem::not_one_of(
            join_path(path, "type"),
            &["function"],
            v,
        ));
    }
}

/// A `functions` entry (open, C36): `{name, description, parameters:{type, properties,
/// additionalProperties, $schema}}`, every field required as in Kibana's schema.
fn check_function(value: &Value, path: &str, out: &mut Vec<Problem>) {
    let Some(obj) = expect_object(value, path, out) else {
        return;
    };
    for key in ["name", "description"] {
        if let Some(v) = required(obj, key, path, Expected::String, out) {
            check_string(v, &join_path(path, key), out);
        }
    }
    let Some(parameters) = required(obj, "parameters", path, Expected::Object, out) else {
        return;
    };
    let ppath = join_path(path, "parameters");
    let Some(parameters) = expect_object(parameters, &ppath, out) else {
        return;
    };
    if let Some(v) = required(parameters, "type", &ppath, Expected::String, out) {
        check_string(v, &join_path(&ppath, "type"), out);
    }
    if let Some(v) = required(parameters, "properties", &ppath, Expected::Object, out) {
        expect_object(v, &join_path(&ppath, "properties"), out);
    }
    if let Some(v) = required(
        parameters,
        "additionalProperties",
        &ppath,
        Expected::Boolean,
        out,
    ) {
        check_bool(v, &join_path(&ppath, "additionalProperties"), out);
    }
    if let Some(v) = required(parameters, "$schema", &ppath, Expected::String, out) {
        check_string(v, &join_path(&ppath, "$schema"), out);
    }
}

/// `function_call` (C36): `none`, `auto` or `{name}` (strict).
fn check_function_call(value: &Value, path: &str, out: &mut Vec<Problem>) {
    const NAMES: [&str; 2] = ["none", "auto"];
    let Value::Object(obj) = value else {
        if !value.as_str().is_some_and(|s| NAMES.contains(&s)) {
            out.push(Problem::not_one_of(path, &NAMES, value));
        }
        return;
    };
    if let Some(v) = required(obj, "name", path, Expected::String, out) {
        check_string(v, &join_path(path, "name"), out);
    }
    unknown_keys(obj, &["name"], path, out);
}

// ---- schema helpers -------------------------------------------------------------------------

/// The object, or a wrong-type problem at `path`.
fn expect_object<'v>(value: &'v Value, path: &str, out: &mut Vec<Problem>) -> Option<&'v Object> {
    match value {
        Value::Object(obj) => Some(obj),
        other => {
            out.push(Problem::wrong_type(path, Expected::Object, other));
            None
        }
    }
}

/// The member `key` of `obj`, or a missing-field problem at `parent.key` (C2).
fn required<'v>(
    obj: &'v Object,
    key: &str,
    parent: &str,
    expected: Expected,
    out: &mut Vec<Problem>,
) -> Option<&'v Value> {
    let value = obj.get(key);
    if value.is_none() {
        out.push(Problem::missing(join_path(parent, key), expected));
    }
    value
}

/// The string, or a wrong-type problem (`null` included, C3).
fn check_string<'v>(value: &'v Value, path: &str, out: &mut Vec<Problem>) -> Option<&'v str> {
    match value {
        Value::String(s) => Some(s),
        other => {
            out.push(Problem::wrong_type(path, Expected::String, other));
            None
        }
    }
}

/// The boolean, or a wrong-type problem (no coercion).
fn check_bool(value: &Value, path: &str, out: &mut Vec<Problem>) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        other => {
            out.push(Problem::wrong_type(path, Expected::Boolean, other));
            None
        }
    }
}

/// A number, numeric strings accepted (C4), or a wrong-type problem.
fn check_numeric(value: &Value, path: &str, out: &mut Vec<Problem>) -> Option<Number> {
    let n = numeric(value);
    if n.is_none() {
        out.push(Problem::wrong_type(path, Expected::Number, value));
    }
    n
}

/// An array whose elements `each` checks at `path.<index>`.
fn check_array(
    value: &Value,
    path: &str,
    out: &mut Vec<Problem>,
    each: impl Fn(&Value, &str, &mut Vec<Problem>),
) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                each(item, &join_path(path, &i.to_string()), out);
            }
        }
        other => out.push(Problem::wrong_type(path, Expected::Array, other)),
    }
}

/// One `Unrecognized keys` problem listing every key of `obj` not in `allowed`, in input order
/// (C2, C3: after the field problems of the same object).
fn unknown_keys(obj: &Object, allowed: &[&str], path: &str, out: &mut Vec<Problem>) {
    let unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if !unknown.is_empty() {
        out.push(Problem::unknown_keys(path, unknown));
    }
}

/// A timeout number in whole milliseconds: fractions dropped, negative values 0, huge values
/// saturate (chosen; only `max` with `responseTimeout` is ever taken, C62).
fn number_to_ms(n: &Number) -> u64 {
    if let Some(ms) = n.as_u64() {
        return ms;
    }
    let f = n.as_f64();
    if f.is_nan() || f <= 0.0 {
        0
    } else {
        // `as` saturates at u64::MAX for values beyond it (and for infinity).
        f.floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Params, ParamsError> {
        parse_params(json.as_bytes())
    }

    fn invalid(json: &str) -> String {
        match parse(json) {
            Err(e @ ParamsError::Invalid(_)) => e.message("c1"),
            other => panic!("expected a validation failure for {json}, got {other:?}"),
        }
    }

    fn body(json: &str) -> String {
        String::from_utf8(parse(json).unwrap().body).unwrap()
    }

    #[test]
    fn c35_c50_nesting_too_deep_names_the_path() {
        // params(1) > subActionParams(2) > signal's value and 126 objects inside it: the
        // last is at level 129, the first one too many.
        let deep = "{\"a\":".repeat(127) + "1" + &"}".repeat(127);
        let message = invalid(&format!(
            r#"{{"subAction":"run","subActionParams":{{"body":"{{}}","signal":{deep}}}}}"#
        ));
        let path = format!("signal{}", ".a".repeat(126));
        assert_eq!(
            message,
            format!("Request validation failed ([{path}]: nested more than 128 levels deep)")
        );
        // One level less is valid (C36: `signal` may be any value).
        let deep = "{\"a\":".repeat(126) + "1" + &"}".repeat(126);
        let result = parse(&format!(
            r#"{{"subAction":"run","subActionParams":{{"body":"{{}}","signal":{deep}}}}}"#
        ));
        assert!(result.is_ok(), "{result:?}");
        // Outside subActionParams the path starts at the envelope key.
        let deep = "[".repeat(128) + &"]".repeat(128);
        assert_eq!(
            invalid(&format!(r#"{{"subAction":"run","extra":{deep}}}"#)),
            format!(
                "Request validation failed ([extra{}]: nested more than 128 levels deep)",
                ".0".repeat(127)
            )
        );
    }

    #[test]
    fn c33_sub_action_names_round_trip() {
        for s in SubAction::ALL {
            assert_eq!(SubAction::parse(s.as_str()), Some(s));
        }
        assert_eq!(SubAction::parse("invokeai"), None);
        assert_eq!(SubAction::parse("getDashboard"), None);
        assert_eq!(SubAction::parse("responses"), Some(SubAction::Responses));
        assert_eq!(SubAction::parse("embeddings"), Some(SubAction::Embeddings));
        assert_eq!(SubAction::parse("Responses"), None);
    }

    #[test]
    fn c49_paths_and_stream_flags() {
        let flag = |sub: &str, extra: &str| {
            let p = if sub.starts_with("invoke") {
                format!(r#"{{"subAction":"{sub}","subActionParams":{{"messages":[]{extra}}}}}"#)
            } else {
                format!(r#"{{"subAction":"{sub}","subActionParams":{{"body":"{{}}"{extra}}}}}"#)
            };
            parse(&p).unwrap().stream
        };
        assert!(!flag("run", ""));
        assert!(!flag("test", ""));
        assert!(!flag("stream", ""));
        assert!(flag("stream", r#","stream":true"#));
        assert!(!flag("stream", r#","stream":false"#));
        assert!(!flag("invokeAI", ""));
        assert!(flag("invokeStream", ""));
        assert!(flag("invokeAsyncIterator", ""));
        assert!(SubAction::Stream.is_stream_path());
        assert!(!SubAction::InvokeAi.is_stream_path());
        assert!(SubAction::InvokeAsyncIterator.is_stream_path());
    }

    #[test]
    fn c34_unknown_sub_action() {
        let err = parse(r#"{"subAction":"getDashboard","subActionParams":{}}"#).unwrap_err();
        assert_eq!(
            err.message("my-openai"),
            "Sub action \"getDashboard\" is not registered. Connector id: my-openai. Connector name: OpenAI. Connector type: .gen-ai"
        );
        // The name is checked before the sub-action's params.
        let err = parse(r#"{"subAction":"nope","subActionParams":{"x":1}}"#).unwrap_err();
        assert!(matches!(err, ParamsError::NotRegistered { name } if name == "nope"));
    }

    #[test]
    fn c35_envelope() {
        assert_eq!(
            invalid(r#"{"subAction":5,"subActionParams":{}}"#),
            "Request validation failed ([subAction]: expected value of type [string] but got [number])"
        );
        assert_eq!(
            invalid(r#"{"subActionParams":{}}"#),
            "Request validation failed ([subAction]: expected value of type [string] but got [undefined])"
        );
        assert_eq!(
            invalid(r#"{"subAction":"run","subActionParams":null,"extra":1,"more":2}"#),
            "Request validation failed ([subActionParams]: expected value of type [object] but got [null]; Unrecognized keys: \"extra\", \"more\")"
        );
        assert_eq!(
            invalid("[1]"),
            "Request validation failed (expected value of type [object] but got [Array])"
        );
        // A missing subActionParams is {}: run then misses its body.
        assert_eq!(
            invalid(r#"{"subAction":"run"}"#),
            "Request validation failed ([body]: expected value of type [string] but got [undefined])"
        );
        assert!(parse(r#"{"subAction":"invokeAI"}"#).is_err());
        let err = parse("{").unwrap_err();
        assert!(matches!(err, ParamsError::NotJson(_)));
        assert!(err.message("c").starts_with("Request validation failed ("));
    }

    #[test]
    fn c36_contract_examples() {
        assert_eq!(
            invalid(
                r#"{"subAction":"invokeAI","subActionParams":{"messages":[],"max_tokens":10}}"#
            ),
            "Request validation failed (Unrecognized keys: \"max_tokens\")"
        );
        assert_eq!(
            invalid(
                r#"{"subAction":"invokeAI","subActionParams":{"messages":[{"role":"user","content":null}]}}"#
            ),
            "Request validation failed ([messages.0.content]: expected value of type [string] but got [null])"
        );
        assert_eq!(
            invalid(r#"{"subAction":"run","subActionParams":{"body":{}}}"#),
            "Request validation failed ([body]: expected value of type [string] but got [Object])"
        );
    }

    #[test]
    fn c36_run_params() {
        let p = parse(
            r#"{"subAction":"test","subActionParams":{"body":"x","signal":{"a":1},"timeout":"30000","telemetryMetadata":{"pluginId":"p","aggregateBy":"a","useCase":"u"}}}"#,
        )
        .unwrap();
        assert_eq!(p.sub_action, SubAction::Test);
        assert_eq!(p.body, b"x");
        assert_eq!(p.timeout_ms, Some(30000));
        assert!(!p.stream);
        // All problems, in schema order, unknown keys last (C3).
        assert_eq!(
            invalid(
                r#"{"subAction":"run","subActionParams":{"zz":1,"telemetryMetadata":{"pluginId":1,"x":2},"timeout":"abc","stream":true}}"#
            ),
            "Request validation failed ([body]: expected value of type [string] but got [undefined]; \
             [timeout]: expected value of type [number] but got [string]; \
             [telemetryMetadata.pluginId]: expected value of type [string] but got [number]; \
             [telemetryMetadata]: Unrecognized keys: \"x\"; \
             Unrecognized keys: \"zz\", \"stream\")"
        );
        assert_eq!(
            invalid(
                r#"{"subAction":"run","subActionParams":{"body":"","telemetryMetadata":null}}"#
            ),
            "Request validation failed ([telemetryMetadata]: expected value of type [object] but got [null])"
        );
        // The body is used as given, not a template (C38), even when empty.
        assert_eq!(
            parse(r#"{"subAction":"run","subActionParams":{"body":""}}"#)
                .unwrap()
                .body,
            b""
        );
    }

    #[test]
    fn c36_stream_flag_is_not_coerced() {
        assert_eq!(
            invalid(r#"{"subAction":"stream","subActionParams":{"body":"{}","stream":"true"}}"#),
            "Request validation failed ([stream]: expected value of type [boolean] but got [string])"
        );
        assert_eq!(
            invalid(r#"{"subAction":"stream","subActionParams":{"body":"{}","stream":null}}"#),
            "Request validation failed ([stream]: expected value of type [boolean] but got [null])"
        );
    }

    #[test]
    fn c36_invoke_params_accept_the_full_schema() {
        let p = parse(
            r#"{"subAction":"invokeAI","subActionParams":{
                "messages":[
                  {"role":"system","content":"s","name":"n"},
                  {"role":"assistant","content":"","function_call":{"name":"f","arguments":"{}"},
                   "tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                  {"role":"tool","content":"r","tool_call_id":"c1"}],
                "model":"m",
                "tools":[{"type":"function","extra":1,"function":{"name":"f","description":"d","parameters":{"type":"object","x":1},"strict":true,"more":2}}],
                "tool_choice":{"type":"function","function":{"name":"f","x":1},"y":2},
                "functions":[{"name":"f","description":"d","parameters":{"type":"object","properties":{"a":{}},"additionalProperties":false,"$schema":"s","z":1},"w":1}],
                "function_call":{"name":"f"},
                "n":"2","temperature":0.5,"stop":["a","b"],"response_format":{"type":"json_object"},
                "signal":null,"timeout":1000,"telemetryMetadata":{}}}"#,
        )
        .unwrap();
        assert_eq!(p.timeout_ms, Some(1000));
        for ok in [
            r#""tool_choice":"none""#,
            r#""tool_choice":"auto""#,
            r#""tool_choice":"required""#,
            r#""function_call":"none""#,
            r#""function_call":"auto""#,
            r#""stop":null"#,
            r#""stop":"x""#,
            r#""response_format":5"#,
            r#""tools":[]"#,
        ] {
            let json = format!(
                r#"{{"subAction":"invokeStream","subActionParams":{{"messages":[],{ok}}}}}"#
            );
            assert!(parse(&json).is_ok(), "{ok}");
        }
    }

    #[test]
    fn c36_invoke_params_are_strict_where_not_open() {
        let check = |inner: &str| {
            invalid(&format!(
                r#"{{"subAction":"invokeAI","subActionParams":{{{inner}}}}}"#
            ))
        };
        assert_eq!(
            check(r#""messages":"hi""#),
            "Request validation failed ([messages]: expected value of type [array] but got [string])"
        );
        assert_eq!(
            check(r#""model":"m""#),
            "Request validation failed ([messages]: expected value of type [array] but got [undefined])"
        );
        assert_eq!(
            check(r#""messages":[{"role":"user","content":"x","weight":1}]"#),
            "Request validation failed ([messages.0]: Unrecognized keys: \"weight\")"
        );
        assert_eq!(
            check(r#""messages":[{"content":[{"type":"text","text":"x"}]},5]"#),
            "Request validation failed ([messages.0.role]: expected value of type [string] but got [undefined]; \
             [messages.0.content]: expected value of type [string] but got [Array]; \
             [messages.1]: expected value of type [object] but got [number])"
        );
        assert_eq!(
            check(
                r#""messages":[{"role":"a","content":"b","function_call":{"name":"f","x":1},"tool_calls":[{"id":"1","function":{"name":"f","arguments":"a","q":1}}]}]"#
            ),
            "Request validation failed ([messages.0.function_call.arguments]: expected value of type [string] but got [undefined]; \
             [messages.0.function_call]: Unrecognized keys: \"x\"; \
             [messages.0.tool_calls.0.type]: expected value of type [string] but got [undefined]; \
             [messages.0.tool_calls.0.function]: Unrecognized keys: \"q\")"
        );
        assert_eq!(
            check(r#""messages":[],"function_call":{"name":"f","arguments":"{}"}"#),
            "Request validation failed ([function_call]: Unrecognized keys: \"arguments\")"
        );
        assert_eq!(
            check(r#""messages":[],"tool_choice":"any","function_call":"required""#),
            "Request validation failed ([tool_choice]: expected one of [none, auto, required] but got [any]; \
             [function_call]: expected one of [none, auto] but got [required])"
        );
        assert_eq!(
            check(r#""messages":[],"tools":[{"type":"fn","function":{"parameters":[]}}]"#),
            "Request validation failed ([tools.0.type]: expected one of [function] but got [fn]; \
             [tools.0.function.name]: expected value of type [string] but got [undefined]; \
             [tools.0.function.parameters]: expected value of type [object] but got [Array])"
        );
        assert_eq!(
            check(r#""messages":[],"functions":[{"name":"f","parameters":{}}]"#),
            "Request validation failed ([functions.0.description]: expected value of type [string] but got [undefined]; \
             [functions.0.parameters.type]: expected value of type [string] but got [undefined]; \
             [functions.0.parameters.properties]: expected value of type [object] but got [undefined]; \
             [functions.0.parameters.additionalProperties]: expected value of type [boolean] but got [undefined]; \
             [functions.0.parameters.$schema]: expected value of type [string] but got [undefined])"
        );
        assert_eq!(
            check(r#""messages":[],"n":".5","temperature":true,"stop":[1],"model":null"#),
            "Request validation failed ([model]: expected value of type [string] but got [null]; \
             [n]: expected value of type [number] but got [string]; \
             [temperature]: expected value of type [number] but got [boolean]; \
             [stop.0]: expected value of type [string] but got [number])"
        );
    }

    #[test]
    fn c38_invoke_body_is_compact_params_without_c37_keys() {
        assert_eq!(
            body(
                r#"{"subAction":"invokeAI","subActionParams":{"temperature":"0.2","messages":[{"role":"user","content":"Hi"}],"timeout":5000}}"#
            ),
            r#"{"temperature":0.2,"messages":[{"role":"user","content":"Hi"}]}"#
        );
        assert_eq!(
            body(
                r#"{"subAction":"invokeStream","subActionParams":{ "signal" : 1, "n" : " 1e0 ", "messages" : [ ] }}"#
            ),
            r#"{"n":1e0,"messages":[]}"#
        );
        // Numbers as written, other keys untouched, including open extras.
        assert_eq!(
            body(
                r#"{"subAction":"invokeAI","subActionParams":{"messages":[],"temperature":0.70,"telemetryMetadata":{"useCase":"x"},"response_format":{"n":"1"}}}"#
            ),
            r#"{"messages":[],"temperature":0.70,"response_format":{"n":"1"}}"#
        );
    }

    #[test]
    fn c37_c62_timeout_ms() {
        let t = |v: &str| {
            parse(&format!(
                r#"{{"subAction":"invokeStream","subActionParams":{{"messages":[],"timeout":{v}}}}}"#
            ))
            .unwrap()
            .timeout_ms
        };
        assert_eq!(t(r#""600000""#), Some(600000));
        assert_eq!(t("1e3"), Some(1000));
        assert_eq!(t("1.9"), Some(1));
        assert_eq!(t("-5"), Some(0));
        assert_eq!(t("1e400"), Some(u64::MAX));
        assert_eq!(
            parse(r#"{"subAction":"run","subActionParams":{"body":"{}"}}"#)
                .unwrap()
                .timeout_ms,
            None
        );
    }

    #[test]
    fn responses_and_embeddings_take_a_json_object_body() {
        let p = parse(
            r#"{"subAction":"responses","subActionParams":{"body":"{\"model\":\"gpt-4.1\",\"input\":\"Hi\"}","timeout":5000}}"#,
        )
        .unwrap();
        assert_eq!(p.sub_action, SubAction::Responses);
        assert_eq!(p.body, br#"{"model":"gpt-4.1","input":"Hi"}"#);
        assert!(!p.stream);
        assert_eq!(p.timeout_ms, Some(5000));
        assert_eq!(p.sub_action.api(), Api::Responses);
        let p =
            parse(r#"{"subAction":"embeddings","subActionParams":{"body":"{\"input\":\"x\"}"}}"#)
                .unwrap();
        assert_eq!(p.sub_action.api(), Api::Embeddings);
        assert!(!p.sub_action.is_stream_path());
    }

    #[test]
    fn responses_stream_when_the_body_says_stream_true() {
        let stream = |sub: &str, body: &str| {
            parse(&format!(
                r#"{{"subAction":"{sub}","subActionParams":{{"body":{}}}}}"#,
                crate::json::quote(body)
            ))
            .unwrap()
            .stream
        };
        assert!(stream("responses", r#"{"input":"Hi","stream":true}"#));
        assert!(!stream("responses", r#"{"input":"Hi","stream":false}"#));
        assert!(!stream("responses", r#"{"input":"Hi","stream":"true"}"#));
        // Embeddings never stream.
        assert!(!stream("embeddings", r#"{"input":"Hi","stream":true}"#));
    }

    #[test]
    fn responses_and_embeddings_refuse_a_body_that_is_not_a_json_object() {
        assert_eq!(
            invalid(r#"{"subAction":"responses","subActionParams":{"body":"[1]"}}"#),
            "Request validation failed ([body]: expected the JSON text of an [Object] but got [Array])"
        );
        assert_eq!(
            invalid(r#"{"subAction":"embeddings","subActionParams":{"body":"{"}}"#),
            "Request validation failed ([body]: not valid JSON: unexpected end of JSON input at position 1)"
        );
        assert_eq!(
            invalid(r#"{"subAction":"responses","subActionParams":{"body":{},"stream":true}}"#),
            "Request validation failed ([body]: expected value of type [string] but got [Object]; Unrecognized keys: \"stream\")"
        );
        assert_eq!(
            invalid(r#"{"subAction":"embeddings","subActionParams":{}}"#),
            "Request validation failed ([body]: expected value of type [string] but got [undefined])"
        );
    }

    #[test]
    fn debug_hides_the_body() {
        let p = parse(r#"{"subAction":"run","subActionParams":{"body":"secret prompt"}}"#).unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("13 bytes"), "{shown}");
    }
}
