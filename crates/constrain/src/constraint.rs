//! One request's grammar state: the mask for the next token, and advancing by the chosen one.

use llguidance::api::TopLevelGrammar;
use llguidance::Matcher;
use serde_json::Value;

use crate::{first_line, ConstraintError, TokenSet, Vocabulary};

/// The grammar state of one generation: which tokens may come next, advanced token by token.
/// Made per request; `Send`, so it can be built where the request is validated and moved to the
/// thread that decodes.
pub struct Constraint {
    matcher: Matcher,
    vocab: Vocabulary,
    /// The mask for the current position, computed on demand and dropped by each commit.
    mask: Option<TokenSet>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stop_reason", &self.matcher.stop_reason())
            .field("vocab_size", &self.vocab.len())
            .finish()
    }
}

fn internal(e: impl std::fmt::Display) -> ConstraintError {
    ConstraintError::Internal(first_line(e))
}

impl Constraint {
    /// Any JSON object (OpenAI `response_format: {"type": "json_object"}`).
    pub fn json_object(vocab: &Vocabulary) -> Result<Constraint, ConstraintError> {
        Constraint::json_schema(vocab, &serde_json::json!({"type": "object"}))
    }

    /// JSON matching `schema` (OpenAI `response_format: {"type": "json_schema", "json_schema":
    /// {"schema": ...}}`, and tool calls). Any whitespace may separate JSON elements (llguidance's
    /// default; a schema carrying `"x-guidance": {"whitespace_flexible": false}` gets compact JSON
    /// instead). An invalid or unsupported schema gives [`ConstraintError::Grammar`].
    pub fn json_schema(vocab: &Vocabulary, schema: &Value) -> Result<Constraint, ConstraintError> {
        Constraint::compile(vocab, TopLevelGrammar::from_json_schema(schema.clone()))
    }

    /// Text matching a grammar in llguidance's Lark dialect (which can embed JSON schemas with
    /// `%json { ... }`).
    pub fn lark(vocab: &Vocabulary, grammar: &str) -> Result<Constraint, ConstraintError> {
        Constraint::compile(vocab, TopLevelGrammar::from_lark(grammar.to_string()))
    }

    fn compile(vocab: &Vocabulary, grammar: TopLevelGrammar) -> Result<Constraint, ConstraintError> {
        let parser = vocab.factory().create_parser(grammar).map_err(|e| ConstraintError::Grammar(first_line(e)))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Grammar(first_line(e)));
        }
        Ok(Constraint { matcher, vocab: vocab.clone(), mask: None })
    }

    /// The tokens allowed next. End-of-generation tokens are in the set exactly when the output
    /// so far is complete; once [`is_finished`](Self::is_finished), only they are. Computed once
    /// per position (the expensive step, roughly a millisecond) and cached until `commit`.
    pub fn allowed_tokens(&mut self) -> Result<&TokenSet, ConstraintError> {
        if let Some(ref mask) = self.mask {
            return Ok(mask);
        }
        let bits = self.matcher.compute_mask_or_eos().map_err(internal)?;
        Ok(self.mask.insert(TokenSet::new(bits)))
    }

    /// Advances past `token`. A token the current mask does not allow gives
    /// [`ConstraintError::TokenNotAllowed`] and leaves the constraint as it was. After
    /// [`is_finished`](Self::is_finished), committing an end-of-generation token does nothing.
    pub fn commit(&mut self, token: u32) -> Result<(), ConstraintError> {
        if self.is_finished() {
            return match self.vocab.is_end_of_generation(token) {
                true => Ok(()),
                false => Err(ConstraintError::TokenNotAllowed(token)),
            };
        }
        if !self.allowed_tokens()?.contains(token) {
            return Err(ConstraintError::TokenNotAllowed(token));
        }
        self.mask = None;
        self.matcher.consume_token(token).map_err(internal)
    }

    /// Tokens the grammar forces next (e.g. `{"name": "` in a fixed object), already committed:
    /// feed them to the model as if they had been sampled. Empty when nothing is forced, and
    /// always empty unless the vocabulary has the model's tokenizer
    /// ([`Vocabulary::has_canonical_tokenizer`]). Optional: without it the mask forces the same
    /// text one sampled token at a time.
    pub fn fast_forward(&mut self) -> Result<Vec<u32>, ConstraintError> {
        if self.matcher.is_stopped() {
            return self.matcher.get_error().map_or(Ok(Vec::new()), |e| Err(internal(e)));
        }
        let tokens = self.matcher.consume_ff_tokens();
        if let Some(e) = self.matcher.get_error() {
            return Err(internal(e));
        }
        if !tokens.is_empty() {
            self.mask = None;
        }
        Ok(tokens)
    }

    /// Whether the output so far is a complete match (so an end-of-generation token is allowed).
    /// False after an error.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// Whether generation must stop: an end-of-generation token was committed, or the output is
    /// complete and nothing may follow it. Errors are not "finished"; they surface from
    /// `allowed_tokens` and `commit`.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped() && !self.matcher.is_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn constraint_is_send_and_vocabulary_is_shareable() {
        assert_send::<Constraint>();
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Vocabulary>();
    }
}
