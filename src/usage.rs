//! Token usage with provenance (contract section 7, C106).

/// Where a usage figure came from (C106, D11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UsageSource {
    /// Numbers sent by the provider.
    Reported,
    /// Counted locally with a tokenizer.
    Estimated,
    /// No figure (no 2xx response, or a response without `usage`).
    #[default]
    Unavailable,
}

impl UsageSource {
    /// The label written to the event log (C117).
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
            UsageSource::Unavailable => "unavailable",
        }
    }
}

/// Token counts and their source. Counts are meaningful only when the source is not
/// [`UsageSource::Unavailable`] (C119).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Total tokens.
    pub total_tokens: u64,
    /// Where the numbers came from.
    pub source: UsageSource,
}

impl TokenUsage {
    /// No usage figure.
    pub const UNAVAILABLE: TokenUsage = TokenUsage {
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        source: UsageSource::Unavailable,
    };

    /// Provider-reported numbers.
    pub fn reported(prompt_tokens: u64, completion_tokens: u64, total_tokens: u64) -> Self {
        TokenUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens,
            source: UsageSource::Reported,
        }
    }
}
