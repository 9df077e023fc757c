//! Following redirects (C66, C67): at most [`MAX_REDIRECTS`], each target checked against the
//! allow-list, 301–303 turned into a body-less `GET`, credentials kept for their own host.

use crate::config;
use crate::failure::{Failure, FailureKind};
use crate::plan::Deployment;
use crate::request::HttpRequest;
use crate::transport::{Head, Limits, Transport};

/// Redirects followed at most (C66).
pub(crate) const MAX_REDIRECTS: usize = 20;

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
        let target = url::Url::parse(&request.url)
            .and_then(|base| base.join(&location))
            .map_err(|_| {
                failed(
                    "ERR_FR_REDIRECTION_FAILURE",
                    &format!("Redirected request failed: invalid location \"{location}\""),
                )
            })?;
        let target_host = config::url_host_name(target.as_str()).unwrap_or_default();
        if !config::host_is_allowed(target.as_str(), &deployment.allowed_hosts) {
            return Err(failed(
                "ERR_FR_REDIRECTION_FAILURE",
                &format!(
                    "Redirected request failed: target hostname \"{target_host}\" is not added to the Kibana config xpack.actions.allowedHosts"
                ),
            ));
        }
        let current_host = config::url_host_name(&request.url).unwrap_or_default();
        if !matches!(status, 307 | 308) {
            // C67: 301, 302 and 303 continue as a GET without a body.
            request.method = "GET".to_owned();
            request.body.clear();
            request.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("content-type")
                    && !name.eq_ignore_ascii_case("content-length")
            });
        }
        if !target_host.eq_ignore_ascii_case(&current_host) {
            // C67: credentials stay with the host they were configured for.
            request.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("authorization") && !name.eq_ignore_ascii_case("api-key")
            });
        }
        request.url = target.into();
    }
}
