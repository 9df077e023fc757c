//! Validation problems in Kibana's wording (contract C1–C4).
//!
//! Every validator in this crate (config, secrets, params, responses) reports [`Problem`]s built
//! with the constructors here, so the texts are spelled in exactly one place.

use crate::json::{MAX_DEPTH, Number, Value};
use std::fmt;

/// One validation problem: an optional dotted path and a text (C1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Keys and array indices joined with dots; empty for a problem with the object as a whole.
    pub path: String,
    /// The problem text (C2).
    pub text: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.text)
        } else {
            write!(f, "[{}]: {}", self.path, self.text)
        }
    }
}

/// The JSON types a schema can expect (C2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expected {
    /// A JSON string.
    String,
    /// A JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

impl Expected {
    fn as_str(self) -> &'static str {
        match self {
            Expected::String => "string",
            Expected::Number => "number",
            Expected::Boolean => "boolean",
            Expected::Object => "object",
            Expected::Array => "array",
        }
    }
}

/// The name Kibana's schema library gives the type of `value` in "but got [...]" (C2).
pub(crate) fn actual_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

/// Joins a parent path and a child key or index with a dot (C1).
pub(crate) fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

impl Problem {
    /// A problem at `path` with `text`.
    pub(crate) fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            text: text.into(),
        }
    }

    /// `expected value of type [<type>] but got [undefined]` (C2, missing field).
    pub(crate) fn missing(path: impl Into<String>, expected: Expected) -> Self {
        Self::new(
            path,
            format!(
                "expected value of type [{}] but got [undefined]",
                expected.as_str()
            ),
        )
    }

    /// `expected value of type [<type>] but got [<actual>]` (C2, wrong type).
    pub(crate) fn wrong_type(path: impl Into<String>, expected: Expected, got: &Value) -> Self {
        Self::new(
            path,
            format!(
                "expected value of type [{}] but got [{}]",
                expected.as_str(),
                actual_type(got)
            ),
        )
    }

    /// `expected one of [a, b] but got [<value>]` (C2, enumeration).
    pub(crate) fn not_one_of(path: impl Into<String>, allowed: &[&str], got: &Value) -> Self {
        let shown = match got {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Self::new(
            path,
            format!("expected one of [{}] but got [{shown}]", allowed.join(", ")),
        )
    }

    /// `value has length [0] but it must have a minimum length of [1].` (C2, empty string).
    pub(crate) fn empty(path: impl Into<String>) -> Self {
        Self::new(
            path,
            "value has length [0] but it must have a minimum length of [1].",
        )
    }

    /// `nested more than 128 levels deep` (C50's limit) at the path made of `segments` (C1):
    /// where a text's nesting passed the limit (`ParseError::nesting_path`).
    pub(crate) fn too_deep(segments: &[String]) -> Self {
        Self::new(
            segments.join("."),
            format!("nested more than {MAX_DEPTH} levels deep"),
        )
    }

    /// `Unrecognized keys: "a", "b"` (C2), keys in input order.
    pub(crate) fn unknown_keys<'a>(
        path: impl Into<String>,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let list: Vec<String> = keys.into_iter().map(|k| format!("\"{k}\"")).collect();
        Self::new(path, format!("Unrecognized keys: {}", list.join(", ")))
    }
}

/// Joins several problems into one message with `; ` (C3).
pub(crate) fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads `value` as a number, accepting numeric strings (C4).
///
/// A string counts when its text, trimmed of ASCII white space, is a valid JSON number; the
/// resulting number keeps exactly those digits (D12). Returns `None` for anything else.
pub(crate) fn numeric(value: &Value) -> Option<Number> {
    match value {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => {
            let trimmed = s.trim_matches(|c: char| c.is_ascii_whitespace());
            Number::parse(trimmed)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        Value::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn c1_problem_display_with_and_without_path() {
        assert_eq!(
            Problem::missing("apiUrl", Expected::String).to_string(),
            "[apiUrl]: expected value of type [string] but got [undefined]"
        );
        assert_eq!(
            Problem::unknown_keys("", ["a", "b"]).to_string(),
            "Unrecognized keys: \"a\", \"b\""
        );
    }

    #[test]
    fn c2_actual_type_names() {
        let p = |v: Value| Problem::wrong_type("x", Expected::String, &v).to_string();
        assert_eq!(
            p(json("null")),
            "[x]: expected value of type [string] but got [null]"
        );
        assert_eq!(
            p(json("[]")),
            "[x]: expected value of type [string] but got [Array]"
        );
        assert_eq!(
            p(json("{}")),
            "[x]: expected value of type [string] but got [Object]"
        );
        assert_eq!(
            p(json("1")),
            "[x]: expected value of type [string] but got [number]"
        );
        assert_eq!(
            p(json("true")),
            "[x]: expected value of type [string] but got [boolean]"
        );
        assert_eq!(
            Problem::not_one_of(
                "verificationMode",
                &["full", "certificate", "none"],
                &Value::from("x")
            )
            .to_string(),
            "[verificationMode]: expected one of [full, certificate, none] but got [x]"
        );
        assert_eq!(
            Problem::empty("caData").to_string(),
            "[caData]: value has length [0] but it must have a minimum length of [1]."
        );
    }

    #[test]
    fn c3_problems_join_with_semicolon() {
        let ps = [Problem::empty("a"), Problem::unknown_keys("", ["k"])];
        assert_eq!(
            join_problems(&ps),
            "[a]: value has length [0] but it must have a minimum length of [1].; Unrecognized keys: \"k\""
        );
    }

    #[test]
    fn c4_numeric_strings_keep_their_digits() {
        for (input, out) in [
            ("0.5", "0.5"),
            ("-2", "-2"),
            ("1e3", "1e3"),
            (" 7 ", "7"),
            ("1.50", "1.50"),
        ] {
            assert_eq!(
                numeric(&Value::from(input)).unwrap().to_string(),
                out,
                "{input}"
            );
        }
        for bad in [".5", "0x10", "", " ", "+1", "1 2", "NaN", "\"1\""] {
            assert!(
                numeric(&Value::from(bad)).is_none(),
                "{bad:?} must not be numeric"
            );
        }
        assert!(numeric(&json("true")).is_none());
        let n = json("12345678901234567890");
        assert_eq!(numeric(&n).unwrap().to_string(), "12345678901234567890");
    }
}
