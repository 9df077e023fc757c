//! Following redirects (C66, C67 as amended in section 11): at most [`MAX_REDIRECTS`], each
//! target `http` or `https` and checked against the allow-list, 301–303 turned into a body-less
//! `GET`, and nothing configured for one origin sent to another.
//!
//! **Origins.** Two URLs have the same origin when scheme, host name ([`config::same_host`]:
//! ASCII case and one trailing dot ignored) and port are equal, a default port counting as
//! written (`https://h` and `https://h:443` are the same, [`url::Url::port_or_known_default`]).
//!
//! **Credentials stay with their origin.** Which configured headers carry a credential cannot
//! be told from their names (`Ocp-Apim-Subscription-Key`, `X-Goog-Api-Key`, `Helicone-Auth`,
//! `cf-access-client-secret`, …), and every one of them was configured for the connector's own
//! origin. So when a redirect leaves the origin the request keeps only what the connector sends
//! to any origin whatever its config: `Content-Type` and `Content-Length` (written by the
//! connector itself, C46–C48), and `Accept` and `User-Agent` with the connector's own values.
//! Everything else stays behind: `Authorization`, `api-key`, `OpenAI-Organization`,
//! `OpenAI-Project` and every custom header (a custom `Accept` or `User-Agent` included). What
//! was dropped is not restored when a later redirect comes back to the first origin.
//!
//! **Nothing is re-sent from `https` to `http`.** A 301, 302 or 303 from `https` to `http` is
//! followed: it becomes a `GET` without body and, the origin having changed, without credentials
//! or configured headers, so nothing of the original request goes out in clear text. A 307 or
//! 308 from `https` to `http` would send the request body (the prompt) in clear text; it is not
//! followed and fails with `ERR_FR_REDIRECTION_FAILURE` (chosen).
//!
//! **Schemes.** Only `http` and `https` targets are followed; any other fails with
//! `ERR_FR_REDIRECTION_FAILURE`, `Redirected request failed: Unsupported protocol <scheme>:`,
//! before anything is sent.

use crate::config;
use crate::failure::{Failure, FailureKind};
use crate::plan::{Deployment, USER_AGENT};
use crate::request::{ACCEPT, HttpRequest};
use crate::transport::{Head, Limits, Transport};
use url::Url;

/// Redirects followed at most (C66).
pub(crate) const MAX_REDIRECTS: usize = 20;

/// Headers that follow a redirect to another origin, with their values (C67 amended): the
/// connector writes `Content-Type` and `Content-Length` itself for every origin.
const CROSS_ORIGIN_HEADERS: [&str; 2] = ["Content-Type", "Content-Length"];

/// Sends `first` and follows redirects (C66, C67). The failure names the request that failed.
pub(crate) fn open<T: Transport>(
    first: &HttpRequest,
    limits: &Limits,
    deployment: &Deployment,
    api_key: Option<&str>,
    transport: &mut T,
) -> Result<Head<T::Body>, Failure> {
    let failed = |code: &str, message: &str| {
        Failure::coded(
            FailureKind::Transport {
                code: code.to_owned(),
            },
            None,
            code,
            message,
            api_key,
        )
    };
    let redirection_failure = |message: &str| {
        failed(
            "ERR_FR_REDIRECTION_FAILURE",
            &format!("Redirected request failed: {message}"),
        )
    };
    let mut request = first.clone();
    let mut redirects = 0;
    loop {
        let head = transport
            .open(&request, limits)
            .map_err(|e| Failure::transport(&e, &request, limits, None, api_key))?;
        if !matches!(head.status, 301 | 302 | 303 | 307 | 308) {
            return Ok(head);
        }
        let Some(location) = head.header("location").map(str::to_owned) else {
            return Ok(head);
        };
        let status = head.status;
        // The redirect's own body is abandoned with its head.
        drop(head);
        if redirects == MAX_REDIRECTS {
            return Err(failed(
                "ERR_FR_TOO_MANY_REDIRECTS",
                "Maximum number of redirects exceeded",
            ));
        }
        redirects += 1;
        let (current, target) = Url::parse(&request.url)
            .and_then(|base| Ok((base.clone(), base.join(&location)?)))
            .map_err(|_| redirection_failure(&format!("invalid location \"{location}\"")))?;
        if !matches!(target.scheme(), "http" | "https") {
            return Err(redirection_failure(&format!(
                "Unsupported protocol {}:",
                target.scheme()
            )));
        }
        if !config::host_is_allowed(target.as_str(), &deployment.allowed_hosts) {
            let target_host = config::url_host_name(target.as_str()).unwrap_or_default();
            return Err(redirection_failure(&format!(
                "target hostname \"{target_host}\" is not added to the Kibana config xpack.actions.allowedHosts"
            )));
        }
        let resends_body = matches!(status, 307 | 308);
        if resends_body && current.scheme() == "https" && target.scheme() == "http" {
            return Err(redirection_failure(&format!(
                "a {status} redirect from https to http is not followed (the request body would be sent unencrypted)"
            )));
        }
        if !resends_body {
            // C67: 301, 302 and 303 continue as a GET without a body.
            request.method = "GET".to_owned();
            request.body.clear();
            request.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("content-type")
                    && !name.eq_ignore_ascii_case("content-length")
            });
        }
        if !same_origin(&current, &target) {
            request.headers = cross_origin_headers(&request.headers);
        }
        request.url = target.into();
    }
}

/// True when `a` and `b` have the same scheme, host name ([`config::same_host`]) and port, a
/// default port counting as written (C67 amended).
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.port_or_known_default() == b.port_or_known_default()
        && match (a.host_str(), b.host_str()) {
            (Some(a), Some(b)) => config::same_host(a, b),
            _ => false,
        }
}

/// The headers of a request that leaves its origin (C67 amended): those of
/// [`CROSS_ORIGIN_HEADERS`] that `headers` has, then the connector's own `Accept` and
/// `User-Agent`; no credential and no configured header.
fn cross_origin_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| {
            CROSS_ORIGIN_HEADERS
                .iter()
                .any(|kept| kept.eq_ignore_ascii_case(name))
        })
        .cloned()
        .collect();
    kept.push(("Accept".to_owned(), ACCEPT.to_owned()));
    kept.push(("User-Agent".to_owned(), USER_AGENT.to_owned()));
    kept
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::json::Value;
    use crate::transport::{Body, TransportError};
    use std::collections::VecDeque;

    const KEY: &str = "sk-unit-SECRET-0123456789";

    struct NoBody;

    impl Body for NoBody {
        fn next_chunk(&mut self, _: Option<u64>) -> Result<Option<Vec<u8>>, TransportError> {
            Ok(None)
        }
    }

    /// Answers with the scripted statuses and locations in turn (200 when the script is done),
    /// recording every request it is handed.
    #[derive(Default)]
    struct Scripted {
        replies: VecDeque<(u16, Option<String>)>,
        sent: Vec<HttpRequest>,
    }

    impl Scripted {
        fn new(replies: &[(u16, &str)]) -> Self {
            Scripted {
                replies: replies
                    .iter()
                    .map(|(s, l)| (*s, Some((*l).to_owned())))
                    .collect(),
                sent: Vec::new(),
            }
        }
    }

    impl Transport for Scripted {
        type Body = NoBody;

        fn open(
            &mut self,
            request: &HttpRequest,
            _: &Limits,
        ) -> Result<Head<NoBody>, TransportError> {
            self.sent.push(request.clone());
            let (status, location) = self.replies.pop_front().unwrap_or((200, None));
            Ok(Head {
                status,
                headers: location
                    .map(|l| ("location".into(), l))
                    .into_iter()
                    .collect(),
                body: NoBody,
            })
        }

        fn time_left_ms(&self, limits: &Limits) -> u64 {
            limits.total_timeout_ms
        }

        fn pause(&mut self, _ms: u64) -> Result<(), TransportError> {
            unreachable!("redirects are followed without pausing")
        }

        fn unix_time_secs(&self) -> u64 {
            0
        }

        fn random_u64(&mut self) -> u64 {
            0
        }
    }

    /// The request of a connector for `url` with custom headers, organisation and project
    /// (OpenAI: `Authorization`) or `api-key` (Azure), built as an execution builds it.
    fn first_request(provider: &str, url: &str) -> HttpRequest {
        let config = format!(
            r#"{{"apiProvider":"{provider}","apiUrl":"{url}","organizationId":"org-1","projectId":"proj-1",
               "headers":{{"X-Gateway-Key":"gw-SECRET","Ocp-Apim-Subscription-Key":"apim-SECRET","Accept":"text/custom","User-Agent":"custom-agent"}}}}"#
        );
        let config = if provider == "Azure OpenAI" {
            config
                .replace(r#""organizationId":"org-1","projectId":"proj-1","#, "")
                .to_owned()
        } else {
            config
        };
        let secrets = format!(r#"{{"apiKey":"{KEY}"}}"#);
        let connector = config::validate_connector(
            "id",
            "name",
            &Value::parse(config.as_bytes()).unwrap(),
            &Value::parse(secrets.as_bytes()).unwrap(),
            &["*".to_owned()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        crate::plan::plan(
            &connector,
            &Deployment::default(),
            r#"{"subAction":"run","subActionParams":{"body":"{\"a\":1}"}}"#,
        )
        .unwrap()
        .request
    }

    fn limits() -> Limits {
        Limits {
            total_timeout_ms: 1_000,
            max_body_bytes: 1_000,
        }
    }

    /// Follows `replies` from a request to `url`; the requests sent and the outcome.
    fn follow(
        provider: &str,
        url: &str,
        replies: &[(u16, &str)],
    ) -> (Vec<HttpRequest>, Result<u16, Failure>) {
        let mut transport = Scripted::new(replies);
        let first = first_request(provider, url);
        let outcome = open(
            &first,
            &limits(),
            &Deployment::default(),
            Some(KEY),
            &mut transport,
        )
        .map(|head| head.status);
        (transport.sent, outcome)
    }

    fn names(request: &HttpRequest) -> Vec<String> {
        request
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect()
    }

    fn no_configured_value_in(request: &HttpRequest) {
        let shown = format!("{:?}", request.headers);
        for secret in [
            KEY,
            "gw-SECRET",
            "apim-SECRET",
            "org-1",
            "proj-1",
            "text/custom",
            "custom-agent",
        ] {
            assert!(!shown.contains(secret), "{secret} followed: {shown}");
        }
    }

    #[test]
    fn c67_same_origin_keeps_every_header() {
        for (from, to) in [
            ("https://h.example/v1", "/v2"),
            // Default port written or implied: the same origin.
            ("https://h.example/v1", "https://h.example:443/v2"),
            ("https://h.example:443/v1", "https://H.EXAMPLE/v2"),
            ("http://h.example/v1", "http://h.example:80/v2"),
            // A trailing dot names the same host.
            ("https://h.example/v1", "https://h.example./v2"),
        ] {
            for provider in ["OpenAI", "Azure OpenAI"] {
                let (sent, outcome) = follow(provider, from, &[(307, to)]);
                assert_eq!(outcome.unwrap(), 200);
                assert_eq!(sent.len(), 2);
                assert_eq!(
                    sent[1].headers, sent[0].headers,
                    "{provider} {from} -> {to}"
                );
                assert_eq!(sent[1].body, sent[0].body);
                assert_eq!(sent[1].method, "POST");
            }
        }
    }

    #[test]
    fn c67_another_origin_gets_no_credential_and_no_configured_header() {
        for (from, to) in [
            // Another port of the same host.
            ("https://h.example/v1", "https://h.example:8443/v2"),
            ("http://h.example:8080/v1", "http://h.example/v2"),
            // Another scheme, same host and port number.
            ("http://h.example:8443/v1", "https://h.example:8443/v2"),
            // Another host.
            ("https://h.example/v1", "https://other.example/v2"),
        ] {
            for provider in ["OpenAI", "Azure OpenAI"] {
                let (sent, outcome) = follow(provider, from, &[(308, to)]);
                assert_eq!(outcome.unwrap(), 200, "{from} -> {to}");
                assert_eq!(sent.len(), 2);
                let credential = if provider == "OpenAI" {
                    "authorization"
                } else {
                    "api-key"
                };
                assert!(names(&sent[0]).contains(&credential.to_owned()));
                assert_eq!(
                    names(&sent[1]),
                    ["content-type", "content-length", "accept", "user-agent"],
                    "{provider} {from} -> {to}"
                );
                assert_eq!(sent[1].header("Accept"), Some(ACCEPT));
                assert_eq!(sent[1].header("User-Agent"), Some(USER_AGENT));
                assert_eq!(sent[1].header("Content-Type"), Some("application/json"));
                no_configured_value_in(&sent[1]);
                // 308 keeps method and body.
                assert_eq!(sent[1].method, "POST");
                assert_eq!(sent[1].body, sent[0].body);
            }
        }
    }

    #[test]
    fn c67_dropped_credentials_do_not_come_back_with_the_first_origin() {
        let (sent, outcome) = follow(
            "OpenAI",
            "https://h.example/v1",
            &[
                (307, "https://other.example/a"),
                (307, "https://h.example/v1"),
            ],
        );
        assert_eq!(outcome.unwrap(), 200);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[2].url, "https://h.example/v1");
        no_configured_value_in(&sent[2]);
    }

    #[test]
    fn c67_https_to_http_sends_nothing_of_the_request() {
        // 302: followed as a GET without body, credentials or configured headers.
        for status in [301, 302, 303] {
            let (sent, outcome) = follow(
                "OpenAI",
                "https://h.example/v1",
                &[(status, "http://h.example/v1")],
            );
            assert_eq!(outcome.unwrap(), 200);
            assert_eq!(sent[1].url, "http://h.example/v1");
            assert_eq!(sent[1].method, "GET");
            assert!(sent[1].body.is_empty());
            assert_eq!(names(&sent[1]), ["accept", "user-agent"]);
            no_configured_value_in(&sent[1]);
        }
        // 307 and 308 would re-send the body in clear text: not followed.
        for status in [307, 308] {
            let (sent, outcome) = follow(
                "OpenAI",
                "https://h.example/v1",
                &[(status, "http://h.example/v1")],
            );
            let failure = outcome.unwrap_err();
            assert_eq!(
                failure.kind,
                FailureKind::Transport {
                    code: "ERR_FR_REDIRECTION_FAILURE".to_owned()
                }
            );
            assert_eq!(
                failure.service_message,
                format!(
                    "Status code: undefined. Message: Unexpected API Error: ERR_FR_REDIRECTION_FAILURE - Redirected request failed: a {status} redirect from https to http is not followed (the request body would be sent unencrypted)"
                )
            );
            assert_eq!(sent.len(), 1, "nothing sent to the http target");
        }
        // http to http keeps 307 as it was.
        let (sent, outcome) = follow("OpenAI", "http://h.example/v1", &[(307, "/v2")]);
        assert_eq!(outcome.unwrap(), 200);
        assert_eq!(sent[1].headers, sent[0].headers);
    }

    #[test]
    fn c67_only_http_and_https_targets_are_followed() {
        for (location, scheme) in [
            ("ftp://h.example/x", "ftp"),
            ("ws://h.example/x", "ws"),
            ("wss://h.example/x", "wss"),
            ("gopher://h.example:70/x", "gopher"),
            ("file:///etc/passwd", "file"),
            ("data:text/plain,hi", "data"),
            ("FTP://h.example/x", "ftp"),
        ] {
            let (sent, outcome) = follow("OpenAI", "https://h.example/v1", &[(307, location)]);
            let failure = outcome.unwrap_err();
            assert_eq!(
                failure.service_message,
                format!(
                    "Status code: undefined. Message: Unexpected API Error: ERR_FR_REDIRECTION_FAILURE - Redirected request failed: Unsupported protocol {scheme}:"
                ),
                "{location}"
            );
            assert_eq!(
                failure.kind,
                FailureKind::Transport {
                    code: "ERR_FR_REDIRECTION_FAILURE".to_owned()
                }
            );
            assert_eq!(sent.len(), 1, "nothing sent to {location}");
        }
    }

    #[test]
    fn c66_c67_allow_list_matches_with_or_without_trailing_dot() {
        let first = first_request("OpenAI", "https://h.example/v1");
        for (entries, location, followed) in [
            (vec!["h.example"], "https://h.example./v2", true),
            (vec!["h.example."], "https://h.example/v2", true),
            (vec!["h.example"], "https://h.example../v2", false),
            (vec!["h.example", "."], "https://./v2", false),
        ] {
            let deployment = Deployment {
                allowed_hosts: entries.iter().map(|e| (*e).to_owned()).collect(),
                ..Deployment::default()
            };
            let mut transport = Scripted::new(&[(302, location)]);
            let outcome = open(&first, &limits(), &deployment, Some(KEY), &mut transport);
            assert_eq!(outcome.is_ok(), followed, "{entries:?} {location}");
            assert_eq!(transport.sent.len(), if followed { 2 } else { 1 });
        }
    }
}
