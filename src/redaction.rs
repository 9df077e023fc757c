//! The secrets a message must never show, in every form they may be echoed back in (C32, C121,
//! C121a), and their removal from text that leaves the process.
//!
//! A [`Secrets`] set is built once per connector (the API key; the component builds it when it
//! renders a failure) or per deployment (the harness adds the proxy URL's password and
//! `user:password`, the `proxyHeaders` values, and `serve`'s client and admin tokens) and applied
//! to every message before it is shown, logged or sent.
//!
//! Each secret is redacted in these forms:
//! - verbatim;
//! - base64, standard and URL-safe alphabets, with and without padding (so `user:password`
//!   covers the token of `Proxy-Authorization: Basic ...`);
//! - percent-encoded: every non-alphanumeric byte escaped, `encodeURIComponent`'s set, RFC 3986's
//!   unreserved set and `application/x-www-form-urlencoded` (space as `+`), each with upper- and
//!   lower-case hex digits;
//! - JSON-escaped (a message may quote an upstream's JSON, C71).
//!
//! Minimum length (chosen, extending C32's rule for the API key to every secret): a secret of
//! fewer than 8 characters is not redacted in any form, since so short a text is too likely to
//! be ordinary text; from 8 characters, every form of it is. Forms are replaced longest first,
//! so a form that contains another (padded base64 and its unpadded prefix, a header value and
//! its credentials) is replaced whole.
//!
//! Not covered: a secret inside a longer base64 text (the base64 of `Bearer <key>`, say) is
//! encoded differently according to its offset and is not recognised.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// The shortest secret that is redacted, in characters (C32).
pub const MIN_SECRET_CHARS: usize = 8;

/// `encodeURIComponent`: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// RFC 3986 unreserved characters stay: everything but `A-Z a-z 0-9 - . _ ~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A set of secrets, kept as the texts to replace. `Debug` shows how many there are, never
/// what they are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Every form of every secret, longest first, without duplicates.
    forms: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} forms, {REDACTED})", self.forms.len())
    }
}

impl Secrets {
    /// An empty set.
    pub fn new() -> Self {
        Secrets::default()
    }

    /// The set of one connector's API key (none when absent or short).
    pub fn api_key(api_key: Option<&str>) -> Self {
        let mut secrets = Secrets::new();
        if let Some(key) = api_key {
            secrets.add(key);
        }
        secrets
    }

    /// Adds `secret` in all its forms, unless it is shorter than [`MIN_SECRET_CHARS`].
    pub fn add(&mut self, secret: &str) {
        if secret.chars().count() < MIN_SECRET_CHARS {
            return;
        }
        let bytes = secret.as_bytes();
        let mut forms = vec![
            secret.to_owned(),
            STANDARD.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
            url::form_urlencoded::byte_serialize(bytes).collect(),
        ];
        for set in [NON_ALPHANUMERIC, URI_COMPONENT, UNRESERVED] {
            forms.push(utf8_percent_encode(secret, set).to_string());
        }
        // The same escapes with lower-case hex digits (`%2f`), as some encoders write them.
        let lower: Vec<String> = forms[5..].iter().map(|f| lower_hex(f)).collect();
        forms.extend(lower);
        let mut json = String::new();
        crate::json::write_string(secret, &mut json);
        forms.push(json[1..json.len() - 1].to_owned());
        self.insert(forms);
    }

    /// Adds every form of `other`'s secrets.
    pub fn extend(&mut self, other: &Secrets) {
        self.insert(other.forms.iter().cloned());
    }

    /// True when nothing is redacted.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every form of every secret replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for form in &self.forms {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), REDACTED);
            }
        }
        out
    }

    fn insert(&mut self, forms: impl IntoIterator<Item = String>) {
        self.forms.extend(forms);
        self.forms
            .sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.forms.dedup();
    }
}

/// `text` with the hex digits of its `%XX` escapes in lower case.
fn lower_hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_percent = 0;
    for c in text.chars() {
        if after_percent > 0 && c.is_ascii_hexdigit() {
            out.push(c.to_ascii_lowercase());
            after_percent -= 1;
        } else {
            out.push(c);
            after_percent = if c == '%' { 2 } else { 0 };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form a test secret may be echoed in, as a server would write it.
    fn forms_of(secret: &str) -> Vec<String> {
        let mut json = String::new();
        crate::json::write_string(secret, &mut json);
        vec![
            secret.to_owned(),
            STANDARD.encode(secret),
            STANDARD_NO_PAD.encode(secret),
            URL_SAFE.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
            utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
            lower_hex(&utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string()),
            utf8_percent_encode(secret, URI_COMPONENT).to_string(),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
            json[1..json.len() - 1].to_owned(),
        ]
    }

    #[test]
    fn c121a_every_form_of_every_secret_is_redacted() {
        // `?` and `>` make the standard and URL-safe alphabets differ; ` `, `/`, `"` and `é`
        // make every escaping differ from the verbatim text.
        let key = "sk-live \"key\"/?>>é~*";
        let mut secrets = Secrets::api_key(Some(key));
        let mut proxy = Secrets::new();
        proxy.add("alice:pa ss/w?rd");
        proxy.add("pa ss/w?rd");
        secrets.extend(&proxy);
        assert_ne!(STANDARD.encode(key), URL_SAFE.encode(key));
        for secret in [key, "alice:pa ss/w?rd", "pa ss/w?rd"] {
            for form in forms_of(secret) {
                let text = format!("echo: <{form}> and <{form}>");
                assert_eq!(
                    secrets.redact(&text),
                    "echo: <[REDACTED]> and <[REDACTED]>",
                    "{form}"
                );
            }
        }
        // The token of `Proxy-Authorization: Basic ...` is the base64 of `user:password`.
        let basic = format!("Basic {}", STANDARD.encode("alice:pa ss/w?rd"));
        assert_eq!(secrets.redact(&basic), "Basic [REDACTED]");
        // Decoded, the credentials show neither part that is a secret.
        assert_eq!(
            secrets.redact("user alice:pa ss/w?rd, password pa ss/w?rd"),
            "user [REDACTED], password [REDACTED]"
        );
        assert_eq!(secrets.redact("nothing secret"), "nothing secret");
    }

    #[test]
    fn c121a_short_secrets_are_not_redacted_in_any_form() {
        let mut secrets = Secrets::new();
        secrets.add("1234567");
        assert!(secrets.is_empty());
        assert_eq!(
            secrets.redact("1234567 MTIzNDU2Nw=="),
            "1234567 MTIzNDU2Nw=="
        );
        // Characters, not bytes.
        secrets.add("ééééééé");
        assert!(secrets.is_empty());
        secrets.add("éééééééé");
        assert_eq!(secrets.redact("k éééééééé"), "k [REDACTED]");
        assert!(Secrets::api_key(None).is_empty());
    }

    #[test]
    fn c121a_longest_form_first_and_debug_hides_the_secrets() {
        let mut secrets = Secrets::new();
        secrets.add("abcdefgh");
        // `YWJjZGVmZ2g=` holds its unpadded form: no `=` is left behind.
        assert_eq!(secrets.redact("x YWJjZGVmZ2g= y"), "x [REDACTED] y");
        secrets.add("Bearer abcdefgh-longer");
        assert_eq!(
            secrets.redact("Bearer abcdefgh-longer"),
            "[REDACTED]",
            "the longer secret is replaced whole"
        );
        let debug = format!("{secrets:?}");
        assert!(
            !debug.contains("abcdefgh") && !debug.contains("YWJj"),
            "{debug}"
        );
        assert_eq!(lower_hex("a%2FB%C3%A9%éC"), "a%2fB%c3%a9%éC");
    }
}
