//! Grammar-constrained decoding: which tokens may come next so that the output matches a JSON
//! schema, any JSON object, or a Lark grammar. Built on `llguidance` (as llama.cpp and vLLM are).
//!
//! Build one [`Vocabulary`] per model, one [`Constraint`] per request, then per decoding step:
//!
//! ```text
//! let allowed = constraint.allowed_tokens()?;   // bitset over the vocabulary
//! apply_mask(&mut logits, allowed);             // disallowed logits become -inf
//! let token = sampler.sample(&logits);
//! constraint.commit(token)?;                    // advances the grammar
//! if constraint.is_finished() || vocab.is_end_of_generation(token) { stop }
//! ```
//!
//! End-of-generation tokens are allowed exactly when the output so far is a complete match.
//! Special (control) tokens are never allowed inside the constrained text. This crate knows no
//! tensors: masks are plain bitsets and logits plain `f32` slices.

mod constraint;
mod mask;
mod vocab;

pub use constraint::Constraint;
pub use mask::{apply_mask, TokenSet};
pub use vocab::Vocabulary;

/// What can go wrong building a vocabulary, compiling a grammar, or stepping a constraint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The token table cannot be used (no tokens, ids out of range, no end-of-generation token).
    #[error("unusable vocabulary: {0}")]
    Vocabulary(String),
    /// The schema or grammar is invalid or uses something llguidance does not support; the
    /// message is llguidance's. A server answers this with 400.
    #[error("invalid grammar: {0}")]
    Grammar(String),
    /// `commit` was given a token the current mask does not allow. The constraint is unchanged.
    #[error("token {0} is not allowed here")]
    TokenNotAllowed(u32),
    /// llguidance failed while stepping (e.g. the grammar grew too complex for its limits, or no
    /// token can continue the output). The constraint cannot continue.
    #[error("constraint failed: {0}")]
    Internal(String),
}

/// llguidance reports panics it caught as "panic: msg" followed by a backtrace; keep one line.
fn first_line(message: impl std::fmt::Display) -> String {
    let message = message.to_string();
    match message.split_once("\n<backtrace>") {
        Some((head, _)) => head.to_string(),
        None => message,
    }
}
