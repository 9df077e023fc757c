//! Admin and client tokens (cli.md "serve").
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time: a presented token is
//! hashed and compared with every known digest without an early exit, so neither the position
//! of the first wrong byte nor the token's length shows in the timing.

use super::limits;
use openai_connector::redaction::Secrets;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use subtle::ConstantTimeEq;

/// A token's SHA-256 digest. `Debug` never shows it.
#[derive(Clone)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &str) -> Self {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant-time equality.
    fn matches(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A client token's name for admission and client limits: 64 bits of a SHA-256 of the token,
/// domain-separated from the digest tokens are checked with, so that it is the same for the
/// same token on every replica and across reloads (`SIGHUP`), whatever its place in the file.
/// `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientId(u64);

impl ClientId {
    fn of(token: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(b"openai-connector client limits\0")
            .chain_update(token.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        ClientId(u64::from_be_bytes(first))
    }

    /// 16 hex digits, for the names of shared counters (`serve::limits`).
    pub(crate) fn hex(self) -> String {
        format!("{:016x}", self.0)
    }

    /// An id for tests of the modules that take callers.
    #[cfg(test)]
    pub(crate) fn for_test(n: u64) -> Self {
        ClientId(n)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientId([REDACTED])")
    }
}

/// Who is calling, for the admission shares (`serve::admission`) and client limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Caller {
    /// The admin token.
    Admin,
    /// A client token of the `--client-tokens` file.
    Client(ClientId),
    /// Nobody in particular: auth is off (`--insecure-no-auth`).
    Open,
}

/// Which connectors a client token may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// `"*"`: every connector.
    All,
    /// These connector ids.
    Only(BTreeSet<String>),
}

impl Grant {
    fn allows(&self, connector_id: &str) -> bool {
        match self {
            Grant::All => true,
            Grant::Only(ids) => ids.contains(connector_id),
        }
    }
}

#[derive(Clone, Debug)]
struct ClientToken {
    digest: TokenDigest,
    id: ClientId,
    grant: Grant,
    /// `limits` (`serve::limits`); `None` when the entry has none.
    limits: Option<limits::Entry>,
}

/// Who may call what.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    /// `None` only with `--insecure-no-auth` and no admin token: every route is open.
    admin: Option<TokenDigest>,
    clients: Vec<ClientToken>,
}

/// Why a client tokens file was refused. Names the file and the field, never a token.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub(crate) struct TokensError {
    /// The tokens file.
    pub(crate) file: String,
    /// What is wrong.
    pub(crate) message: String,
}

impl Auth {
    /// Admin routes need `admin_token`; `None` opens every route (`--insecure-no-auth`).
    pub(crate) fn new(admin_token: Option<&str>) -> Self {
        Auth {
            admin: admin_token.map(TokenDigest::of),
            clients: Vec::new(),
        }
    }

    /// Adds the client tokens of a `--client-tokens` file; `known` lists the connector ids, so
    /// that a grant naming an unknown connector is reported instead of silently useless. The
    /// tokens themselves go to `secrets` only, for redaction (C121a).
    pub(crate) fn with_client_tokens_file(
        mut self,
        path: &Path,
        known: &BTreeSet<String>,
        secrets: &mut Secrets,
    ) -> Result<Self, TokensError> {
        let file = path.display().to_string();
        let err = |message: String| TokensError {
            file: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read the client tokens file: {e}")))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        self.clients = parse_tokens(&value, base, known, secrets).map_err(err)?;
        Ok(self)
    }

    /// Whether `headers` carry the admin token (always true when auth is off).
    pub(crate) fn is_admin(&self, headers: &http::HeaderMap) -> bool {
        self.admin_token_matches(bearer(headers))
    }

    /// Whether `token` (from a dashboard URL's `?token=`) is the admin token.
    pub(crate) fn admin_token_matches(&self, token: Option<&str>) -> bool {
        let Some(admin) = &self.admin else {
            return true;
        };
        token.is_some_and(|t| admin.matches(&TokenDigest::of(t)))
    }

    /// Who `headers` show to be calling, if that caller may use `connector_id`: the admin
    /// token, or a client token granted it.
    pub(crate) fn caller(&self, headers: &http::HeaderMap, connector_id: &str) -> Option<Caller> {
        let Some(admin) = &self.admin else {
            return Some(Caller::Open);
        };
        let token = bearer(headers)?;
        let presented = TokenDigest::of(token);
        // Every digest is compared, whatever matched first.
        let mut caller = admin.matches(&presented).then_some(Caller::Admin);
        for client in &self.clients {
            if client.digest.matches(&presented) && client.grant.allows(connector_id) {
                caller = caller.or(Some(Caller::Client(client.id)));
            }
        }
        caller
    }

    /// The caller of an admin route, if `headers` carry the admin token.
    pub(crate) fn admin_caller(&self, headers: &http::HeaderMap) -> Option<Caller> {
        match &self.admin {
            None => Some(Caller::Open),
            Some(_) => self.is_admin(headers).then_some(Caller::Admin),
        }
    }

    /// The client limits of `caller`, if it has any.
    pub(crate) fn limits_of(&self, caller: Caller) -> Option<&limits::Entry> {
        let Caller::Client(id) = caller else {
            return None;
        };
        self.clients
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.limits.as_ref())
    }

    /// Gives every limited token the counters `limiter` already keeps for it, so that a reload
    /// that keeps a token keeps its counts.
    pub(crate) fn adopt_counters(&mut self, limiter: &limits::Limiter) {
        for entry in self.clients.iter_mut().filter_map(|c| c.limits.as_mut()) {
            limiter.adopt(entry);
        }
    }

    /// How many client tokens there are.
    pub(crate) fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Every caller there can be, each with its own admission share.
    pub(crate) fn callers(&self) -> Vec<Caller> {
        match &self.admin {
            None => vec![Caller::Open],
            Some(_) => std::iter::once(Caller::Admin)
                .chain(self.clients.iter().map(|c| Caller::Client(c.id)))
                .collect(),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client tokens of `value`; each token is also added to `secrets`.
fn parse_tokens(
    value: &Value,
    base: &Path,
    known: &BTreeSet<String>,
    secrets: &mut Secrets,
) -> Result<Vec<ClientToken>, String> {
    let Value::Object(top) = value else {
        return Err("expected an object {\"tokens\": [...]}".to_owned());
    };
    if let Some(key) = top.keys().find(|k| *k != "tokens") {
        return Err(format!("unknown key \"{key}\""));
    }
    let Some(Value::Array(entries)) = top.get("tokens") else {
        return Err("[tokens]: expected an array".to_owned());
    };
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("tokens.{i}");
        let Value::Object(entry) = entry else {
            return Err(format!("[{at}]: expected an object"));
        };
        if let Some(key) = entry
            .keys()
            .find(|k| !["token", "connectors", "limits"].contains(&k.as_str()))
        {
            return Err(format!("[{at}]: unknown key \"{key}\""));
        }
        let token = match entry.get("token") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(r)) => match (r.get("env"), r.get("file"), r.len()) {
                (Some(Value::String(var)), None, 1) => std::env::var(var).map_err(|_| {
                    format!("[{at}.token]: environment variable {var} is not set or not UTF-8")
                })?,
                (None, Some(Value::String(file)), 1) => {
                    let path = base.join(file);
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        format!("[{at}.token]: cannot read {}: {e}", path.display())
                    })?;
                    text.trim_end_matches(['\n', '\r']).to_owned()
                }
                _ => {
                    return Err(format!(
                        "[{at}.token]: expected a string, {{\"env\": \"VAR\"}} or {{\"file\": \"path\"}}"
                    ));
                }
            },
            Some(_) => {
                return Err(format!(
                    "[{at}.token]: expected a string, {{\"env\": \"VAR\"}} or {{\"file\": \"path\"}}"
                ));
            }
            None => return Err(format!("[{at}.token]: required")),
        };
        if token.trim().is_empty() {
            return Err(format!("[{at}.token]: must not be empty"));
        }
        let Some(Value::Array(ids)) = entry.get("connectors") else {
            return Err(format!(
                "[{at}.connectors]: expected an array of connector ids"
            ));
        };
        let mut grant = BTreeSet::new();
        let mut all = false;
        for (j, id) in ids.iter().enumerate() {
            match id.as_str() {
                Some("*") => all = true,
                Some(id) if known.contains(id) => {
                    grant.insert(id.to_owned());
                }
                Some(id) => {
                    return Err(format!(
                        "[{at}.connectors.{j}]: no connector with id \"{id}\""
                    ));
                }
                None => return Err(format!("[{at}.connectors.{j}]: expected a string")),
            }
        }
        secrets.add(token.trim());
        let limits = match entry.get("limits") {
            Some(value) => limits::ClientLimits::parse(value, &format!("{at}.limits"))?,
            None => limits::ClientLimits::default(),
        };
        let id = ClientId::of(token.trim());
        out.push(ClientToken {
            digest: TokenDigest::of(token.trim()),
            id,
            grant: if all { Grant::All } else { Grant::Only(grant) },
            limits: limits::Entry::new(id, limits),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn known() -> BTreeSet<String> {
        ["a".to_owned(), "b".to_owned()].into()
    }

    #[test]
    fn admin_and_client_grants() {
        let mut auth = Auth::new(Some("admin-secret"));
        auth.clients = parse_tokens(
            &serde_json::json!({"tokens": [
                {"token": "client-a", "connectors": ["a"]},
                {"token": "client-all", "connectors": ["*"]},
            ]}),
            Path::new("."),
            &known(),
            &mut Secrets::new(),
        )
        .unwrap();
        assert!(auth.is_admin(&headers("Bearer admin-secret")));
        assert!(auth.is_admin(&headers("bearer admin-secret")));
        assert!(!auth.is_admin(&headers("Bearer admin-secreT")));
        assert!(!auth.is_admin(&headers("Bearer client-all")));
        assert!(!auth.is_admin(&headers("Basic admin-secret")));
        assert!(!auth.is_admin(&http::HeaderMap::new()));
        let caller = |h: &str, id: &str| auth.caller(&headers(h), id);
        assert_eq!(caller("Bearer admin-secret", "b"), Some(Caller::Admin));
        let a = Caller::Client(ClientId::of("client-a"));
        let all = Caller::Client(ClientId::of("client-all"));
        assert_ne!(a, all);
        assert_eq!(caller("Bearer client-a", "a"), Some(a));
        assert_eq!(caller("Bearer client-a", "b"), None);
        assert_eq!(caller("Bearer client-all", "b"), Some(all));
        assert_eq!(caller("Bearer nobody", "a"), None);
        assert_eq!(caller("Bearer ", "a"), None);
        assert_eq!(auth.callers(), [Caller::Admin, a, all]);
        // Debug shows neither tokens nor digests.
        let debug = format!("{auth:?}");
        assert!(!debug.contains("admin-secret") && !debug.contains("client-a\""));
        assert!(debug.contains("[REDACTED]"));
    }

    #[test]
    fn limits_belong_to_their_entry() {
        let mut auth = Auth::new(Some("admin-secret"));
        auth.clients = parse_tokens(
            &serde_json::json!({"tokens": [
                {"token": "client-a", "connectors": ["a"]},
                {"token": "client-b", "connectors": ["*"], "limits": {"concurrentRequests": 2}},
            ]}),
            Path::new("."),
            &known(),
            &mut Secrets::new(),
        )
        .unwrap();
        let of = |token: &str| auth.limits_of(Caller::Client(ClientId::of(token)));
        assert!(of("client-a").is_none() && of("client-b").is_some());
        assert!(auth.limits_of(Caller::Admin).is_none());
        // The id is the same for the same token, never the token, and Debug hides it.
        assert_eq!(ClientId::of("client-b"), ClientId::of("client-b"));
        assert_eq!(ClientId::of("client-b").hex().len(), 16);
        assert!(
            !format!("{:?}", ClientId::of("client-b")).contains(&ClientId::of("client-b").hex())
        );
    }

    #[test]
    fn open_auth_allows_everything() {
        let auth = Auth::new(None);
        assert!(auth.admin.is_none());
        assert!(auth.is_admin(&http::HeaderMap::new()));
        assert_eq!(
            auth.caller(&http::HeaderMap::new(), "a"),
            Some(Caller::Open)
        );
        assert_eq!(auth.callers(), [Caller::Open]);
    }

    #[test]
    fn bad_token_files_name_the_field() {
        let cases = [
            (serde_json::json!([]), "expected an object"),
            (
                serde_json::json!({"tokens": [], "x": 1}),
                "unknown key \"x\"",
            ),
            (
                serde_json::json!({"tokens": [{"connectors": ["a"]}]}),
                "[tokens.0.token]: required",
            ),
            (
                serde_json::json!({"tokens": [{"token": "t", "connectors": ["zz"]}]}),
                "[tokens.0.connectors.0]: no connector with id \"zz\"",
            ),
            (
                serde_json::json!({"tokens": [{"token": {"env": "OC_UNSET_TOKEN_VAR_1"}, "connectors": ["a"]}]}),
                "[tokens.0.token]: environment variable OC_UNSET_TOKEN_VAR_1 is not set",
            ),
            (
                serde_json::json!({"tokens": [{"token": " ", "connectors": ["a"]}]}),
                "[tokens.0.token]: must not be empty",
            ),
            (
                serde_json::json!({"tokens": [{"token": "t", "connectors": ["a"], "limits": {"requestsPerMinute": -1}}]}),
                "[tokens.0.limits.requestsPerMinute]: expected a whole number of at least 1",
            ),
        ];
        for (value, expected) in cases {
            let e =
                parse_tokens(&value, Path::new("."), &known(), &mut Secrets::new()).unwrap_err();
            assert!(e.contains(expected), "{e} does not contain {expected}");
        }
    }
}
