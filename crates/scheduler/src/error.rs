use crate::SeqId;

/// What the scheduler refuses, and why a sequence was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid scheduler configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("request {0}: the prompt is empty")]
    EmptyPrompt(SeqId),
    #[error("request {0}: max_new_tokens must be at least 1")]
    NoNewTokens(SeqId),
    /// The sequence needs more KV blocks than the whole pool has: at admission (the prompt) or
    /// while running alone (prompt plus generated tokens).
    #[error("request {id}: {tokens} tokens do not fit in a KV cache of {capacity} tokens")]
    TooLong { id: SeqId, tokens: usize, capacity: usize },
    #[error("request {0} already exists")]
    DuplicateId(SeqId),
    #[error("no request {0}")]
    UnknownId(SeqId),
    #[error("step {plan} is not the step in flight")]
    StalePlan { plan: u64 },
    #[error("cannot fork request {id}: {reason}")]
    CannotFork { id: SeqId, reason: &'static str },
}
