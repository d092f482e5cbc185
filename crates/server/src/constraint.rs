//! Turns a request's output constraint and logit bias into the engine's [`TokenFilter`].

use std::sync::Arc;

use serde_json::Value;
use tessera_api::{ApiError, OutputConstraint};
use tessera_constrain::{apply_mask, Constraint, ConstraintError, Vocabulary};

use crate::engine::TokenFilter;
use crate::http::ErrorResponse;

/// A grammar (and any logit bias) for one choice. Schemas llguidance rejects are the client's
/// mistake: a 400 naming `response_format` or `tools`.
pub fn filter_for(
    vocab: &Arc<Vocabulary>,
    constraint: &OutputConstraint,
    bias: &[(u32, f32)],
) -> Result<Box<dyn TokenFilter>, ErrorResponse> {
    let (compiled, param) = match constraint {
        OutputConstraint::JsonObject => (Constraint::json_object(vocab), "response_format"),
        OutputConstraint::JsonSchema(schema) => (Constraint::json_schema(vocab, schema), "response_format"),
        OutputConstraint::ToolCalls(calls) => {
            // Calls between tags, whitespace around them: the reply is calls only. A reply that
            // may start with free text is left unconstrained and parsed afterwards.
            if !calls.required {
                return Ok(bias_only(bias));
            }
            (
                Constraint::lark(
                    vocab,
                    &tool_calls_grammar(&calls.open, &calls.close, &calls.call_schema, calls.parallel),
                ),
                "tools",
            )
        }
    };
    let grammar = compiled.map_err(|e| match e {
        ConstraintError::Grammar(message) => {
            ErrorResponse(ApiError::invalid_param(param, format!("Invalid value for '{param}': {message}")))
        }
        other => ErrorResponse(ApiError::internal(other.to_string())),
    })?;
    Ok(Box::new(Grammar { grammar, bias: bias.to_vec() }))
}

/// Only a logit bias.
pub fn bias_only(bias: &[(u32, f32)]) -> Box<dyn TokenFilter> {
    Box::new(Bias(bias.to_vec()))
}

fn tool_calls_grammar(open: &str, close: &str, schema: &Value, parallel: bool) -> String {
    let repeat = if parallel { "+" } else { "" };
    format!(
        "start: (WS? {open} WS? call WS? {close}){repeat} WS?\ncall: %json {schema}\nWS: /[ \\t\\n]+/\n",
        open = serde_json::to_string(open).unwrap_or_default(),
        close = serde_json::to_string(close).unwrap_or_default(),
    )
}

fn add_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(token, b) in bias {
        if let Some(l) = logits.get_mut(token as usize) {
            *l += b;
        }
    }
}

struct Bias(Vec<(u32, f32)>);

impl TokenFilter for Bias {
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), String> {
        add_bias(logits, &self.0);
        Ok(())
    }

    fn commit(&mut self, _token: u32) -> Result<(), String> {
        Ok(())
    }

    fn is_finished(&self) -> bool {
        false
    }
}

struct Grammar {
    grammar: Constraint,
    bias: Vec<(u32, f32)>,
}

impl TokenFilter for Grammar {
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), String> {
        add_bias(logits, &self.bias);
        let allowed = self.grammar.allowed_tokens().map_err(|e| e.to_string())?;
        apply_mask(logits, allowed);
        Ok(())
    }

    fn commit(&mut self, token: u32) -> Result<(), String> {
        self.grammar.commit(token).map_err(|e| e.to_string())
    }

    fn is_finished(&self) -> bool {
        self.grammar.is_finished()
    }
}
