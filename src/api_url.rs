//! Where the `responses` and `embeddings` sub-actions send their request: a URL derived from
//! the connector's `apiUrl` (cli.md, "`serve`: the rest of the OpenAI API that clients call").
//!
//! A connector is configured with a chat-completions URL; the other APIs live beside it:
//! - OpenAI and Other: a URL whose path ends in `/chat/completions` becomes the same URL with
//!   `/responses` or `/embeddings` in place of that ending; the query is kept.
//! - Azure OpenAI: a deployment URL, `.../openai/deployments/{name}/chat/completions?api-version=V`,
//!   becomes `.../openai/responses?api-version=V` (the Responses API is per resource; the
//!   request names the deployment as its `model`, see [`Target::azure_deployment`]) or
//!   `.../openai/deployments/{name}/embeddings?api-version=V`. Azure's v1 API URL,
//!   `.../openai/v1/chat/completions`, becomes `.../openai/v1/responses` or
//!   `.../openai/v1/embeddings` (chosen: that API names the model in the body already).
//!
//! Anything else cannot be mapped ([`NotMapped`]). Paths compare case-sensitively, as C56 does.
//! The derivation works on the URL after C45's normalisation, so a trailing `/` does not
//! matter. Messages never quote the URL (a query may hold a credential).

use crate::config::Provider;
use crate::params::Api;
use std::fmt;

/// The path ending every derivable URL has.
const CHAT_COMPLETIONS: &str = "/chat/completions";

/// The start of an Azure deployment path.
const AZURE_DEPLOYMENTS: &str = "/openai/deployments/";

/// The path of Azure's v1 API.
const AZURE_V1: &str = "/openai/v1";

/// Where a `responses` or `embeddings` request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// The derived URL.
    pub(crate) url: String,
    /// The Azure deployment the URL was derived from, when the API's URL no longer names it
    /// (Azure's Responses API): the request body's `model` when it has none.
    pub(crate) azure_deployment: Option<String>,
}

/// Why the connector's URL cannot be mapped to an API: the execution fails as `not-mapped`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NotMapped {
    /// The API that was asked for.
    pub(crate) api: Api,
    /// Why, without the URL.
    pub(crate) reason: Reason,
}

/// Why a URL cannot be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// OpenAI or Other: the path does not end in `/chat/completions`.
    NotChatCompletions,
    /// Azure: the URL is neither a deployment URL nor a v1 API URL.
    NotAzureDeployment,
}

impl fmt::Display for NotMapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            Reason::NotChatCompletions => "apiUrl does not end in /chat/completions",
            Reason::NotAzureDeployment => {
                "Azure URL is not a deployment URL (.../openai/deployments/{name}/chat/completions?api-version=...)"
            }
        };
        write!(
            f,
            "The connector's URL cannot be mapped to the {} API: {why}",
            self.api.name()
        )
    }
}

/// The URL of `api` for a connector of `provider` whose normalised `apiUrl` (C45) is `url`.
/// Chat completions are sent to `url` itself.
pub(crate) fn derive(provider: Provider, url: &str, api: Api) -> Result<Target, NotMapped> {
    let (path, rest) = split_path(url);
    let plain = |url: String| Target {
        url,
        azure_deployment: None,
    };
    if api == Api::ChatCompletions {
        return Ok(plain(url.to_owned()));
    }
    let ending = match api {
        Api::Responses => "/responses",
        Api::Embeddings => "/embeddings",
        Api::ChatCompletions => unreachable!("returned above"),
    };
    let not_mapped = |reason| NotMapped { api, reason };
    let Some(base) = path.strip_suffix(CHAT_COMPLETIONS) else {
        return Err(not_mapped(match provider {
            Provider::AzureOpenAi => Reason::NotAzureDeployment,
            Provider::OpenAi | Provider::Other => Reason::NotChatCompletions,
        }));
    };
    if provider != Provider::AzureOpenAi || base.ends_with(AZURE_V1) {
        return Ok(plain(format!("{base}{ending}{rest}")));
    }
    // `base` is `<resource>/openai/deployments/<name>`, the name one segment.
    let deployment = base
        .rfind(AZURE_DEPLOYMENTS)
        .map(|at| (&base[..at], &base[at + AZURE_DEPLOYMENTS.len()..]))
        .filter(|(_, name)| !name.is_empty() && !name.contains('/'));
    let Some((resource, name)) = deployment else {
        return Err(not_mapped(Reason::NotAzureDeployment));
    };
    Ok(match api {
        Api::Responses => Target {
            url: format!("{resource}/openai/responses{rest}"),
            azure_deployment: Some(name.to_owned()),
        },
        _ => plain(format!("{base}{ending}{rest}")),
    })
}

/// `url` split before its query or fragment: the scheme, authority and path, then the rest
/// (empty, or starting with `?` or `#`).
fn split_path(url: &str) -> (&str, &str) {
    let at = url.find(['?', '#']).unwrap_or(url.len());
    url.split_at(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(provider: Provider, configured: &str, api: Api) -> Result<String, String> {
        derive(provider, configured, api)
            .map(|t| t.url)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn openai_and_other_replace_the_chat_completions_ending_and_keep_the_query() {
        for provider in [Provider::OpenAi, Provider::Other] {
            assert_eq!(
                url(
                    provider,
                    "https://api.openai.com/v1/chat/completions",
                    Api::Responses
                ),
                Ok("https://api.openai.com/v1/responses".to_owned())
            );
            assert_eq!(
                url(
                    provider,
                    "http://127.0.0.1:8080/llm/v1/chat/completions?tenant=a&x=/chat/completions",
                    Api::Embeddings
                ),
                Ok(
                    "http://127.0.0.1:8080/llm/v1/embeddings?tenant=a&x=/chat/completions"
                        .to_owned()
                )
            );
            let target = derive(provider, "https://h/chat/completions#f", Api::Responses).unwrap();
            assert_eq!(target.url, "https://h/responses#f");
            assert_eq!(target.azure_deployment, None);
        }
    }

    #[test]
    fn chat_completions_go_to_the_configured_url() {
        for provider in [Provider::OpenAi, Provider::AzureOpenAi, Provider::Other] {
            assert_eq!(
                url(
                    provider,
                    "https://gw.example.com/x?y=1",
                    Api::ChatCompletions
                ),
                Ok("https://gw.example.com/x?y=1".to_owned())
            );
        }
    }

    #[test]
    fn urls_without_the_chat_completions_ending_are_not_mapped() {
        for configured in [
            "https://api.openai.com/v1",
            "https://api.openai.com/v1/completions",
            "https://api.openai.com/v1/chat/completions/extra",
            "https://api.openai.com/v1/Chat/Completions",
            "https://gw.example.com/proxy?to=/chat/completions",
            "",
        ] {
            for provider in [Provider::OpenAi, Provider::Other] {
                let error = derive(provider, configured, Api::Responses).unwrap_err();
                assert_eq!(error.reason, Reason::NotChatCompletions, "{configured}");
                assert_eq!(
                    error.to_string(),
                    "The connector's URL cannot be mapped to the Responses API: apiUrl does not end in /chat/completions"
                );
            }
        }
        let error = derive(Provider::Other, "http://h/v1", Api::Embeddings).unwrap_err();
        assert_eq!(
            error.to_string(),
            "The connector's URL cannot be mapped to the embeddings API: apiUrl does not end in /chat/completions"
        );
    }

    #[test]
    fn azure_deployment_url_maps_to_the_resources_responses_api_and_names_the_deployment() {
        let configured = "https://r.openai.azure.com/openai/deployments/gpt-5-mini/chat/completions?api-version=2025-04-01-preview";
        let target = derive(Provider::AzureOpenAi, configured, Api::Responses).unwrap();
        assert_eq!(
            target.url,
            "https://r.openai.azure.com/openai/responses?api-version=2025-04-01-preview"
        );
        assert_eq!(target.azure_deployment.as_deref(), Some("gpt-5-mini"));
        let target = derive(Provider::AzureOpenAi, configured, Api::Embeddings).unwrap();
        assert_eq!(
            target.url,
            "https://r.openai.azure.com/openai/deployments/gpt-5-mini/embeddings?api-version=2025-04-01-preview"
        );
        assert_eq!(target.azure_deployment, None);
        // A path before /openai (an API gateway in front of the resource) is kept.
        assert_eq!(
            url(
                Provider::AzureOpenAi,
                "https://apim.example.com/aoai/openai/deployments/d/chat/completions?api-version=1",
                Api::Responses
            ),
            Ok("https://apim.example.com/aoai/openai/responses?api-version=1".to_owned())
        );
    }

    #[test]
    fn azure_v1_api_url_keeps_its_path() {
        let configured = "https://r.openai.azure.com/openai/v1/chat/completions";
        let target = derive(Provider::AzureOpenAi, configured, Api::Responses).unwrap();
        assert_eq!(target.url, "https://r.openai.azure.com/openai/v1/responses");
        assert_eq!(target.azure_deployment, None);
        assert_eq!(
            url(Provider::AzureOpenAi, configured, Api::Embeddings),
            Ok("https://r.openai.azure.com/openai/v1/embeddings".to_owned())
        );
    }

    #[test]
    fn azure_urls_that_are_not_deployment_urls_are_not_mapped() {
        for configured in [
            "https://apim.example.com/llm/chat?api-version=2024-10-21",
            "https://r.openai.azure.com/openai/deployments/d/completions?api-version=1",
            "https://r.openai.azure.com/openai/deployments//chat/completions",
            "https://r.openai.azure.com/openai/deployments/a/b/chat/completions",
            "https://r.openai.azure.com/OpenAI/deployments/d/chat/completions",
            "https://r.openai.azure.com/chat/completions",
            "https://r.openai.azure.com/openai/deployments/d/extensions/chat/completions",
        ] {
            let error = derive(Provider::AzureOpenAi, configured, Api::Responses).unwrap_err();
            assert_eq!(error.reason, Reason::NotAzureDeployment, "{configured}");
            assert_eq!(
                error.to_string(),
                "The connector's URL cannot be mapped to the Responses API: Azure URL is not a deployment URL (.../openai/deployments/{name}/chat/completions?api-version=...)"
            );
        }
    }

    #[test]
    fn not_mapped_messages_never_quote_the_url() {
        let configured = "https://h/v1?key=sk-secret-in-query";
        let error = derive(Provider::Other, configured, Api::Responses).unwrap_err();
        assert!(!error.to_string().contains("sk-secret"), "{error}");
    }
}
