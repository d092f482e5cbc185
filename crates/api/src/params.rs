//! The validated, normalized form of a request's generation options that the engine uses,
//! and the range checks that produce it.

use serde_json::Value;

use crate::error::ApiError;
use crate::request::{ChatCompletionRequest, CompletionRequest, ResponseFormatType, Stop};

/// Most choices (`n`) one request may ask for.
pub const MAX_N: i64 = 16;
/// Most stop sequences, as OpenAI allows.
pub const MAX_STOP: usize = 4;
/// Most alternatives per token in chat (`top_logprobs`).
pub const MAX_TOP_LOGPROBS: i64 = 20;
/// Most alternatives per token in completions (`logprobs`).
pub const MAX_COMPLETION_LOGPROBS: i64 = 5;
/// Most `logit_bias` entries.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// Most prompts in one completion request.
pub const MAX_PROMPTS: usize = 32;

/// How to generate: sampling, stopping, and what shape the output must take. Defaults are
/// OpenAI's (temperature 1, top-p 1, no top-k or min-p, one choice).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    /// Most new tokens per choice; `None`: until the context is full.
    pub max_tokens: Option<u32>,
    /// 0..=2; 0 is greedy.
    pub temperature: f32,
    /// (0, 1]; 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub top_k: u32,
    /// [0, 1]; 0 disables.
    pub min_p: f32,
    /// > 0; 1 disables.
    pub repetition_penalty: f32,
    /// -2..=2.
    pub presence_penalty: f32,
    /// -2..=2.
    pub frequency_penalty: f32,
    /// `None`: the server picks one.
    pub seed: Option<u64>,
    /// Stop sequences (at most [`MAX_STOP`], none empty); the matched text is not returned.
    pub stop: Vec<String>,
    /// Choices per prompt, 1..=[`MAX_N`].
    pub n: u32,
    /// `Some(k)`: return each sampled token's logprob and the k most likely alternatives.
    pub logprobs: Option<u32>,
    /// Added to the logits of these token ids (-100..=100); the server checks the ids
    /// against the vocabulary.
    pub logit_bias: Vec<(u32, f32)>,
    /// The output must follow this; the engine turns it into a grammar.
    pub constraint: Option<OutputConstraint>,
}

impl Default for GenerationParams {
    fn default() -> GenerationParams {
        GenerationParams {
            max_tokens: None,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            stop: Vec::new(),
            n: 1,
            logprobs: None,
            logit_bias: Vec::new(),
            constraint: None,
        }
    }
}

/// A shape the output must take.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputConstraint {
    /// Any JSON object.
    JsonObject,
    /// A JSON value matching this JSON schema (the tool-call envelope of
    /// [`crate::ToolFormat::Generic`] is also one of these).
    JsonSchema(Value),
    /// Calls written as `open` + JSON matching `call_schema` + `close` (Hermes/Qwen's
    /// `<tool_call>...</tool_call>`).
    ToolCalls(ToolCallConstraint),
}

/// Tool calls between tags ([`crate::ToolFormat::Hermes`]). With `required` the output is
/// calls only (whitespace between them); otherwise free text comes first and the constraint
/// applies from the first `open` on (a lazy grammar). Without `parallel`, at most one call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCallConstraint {
    pub open: String,
    pub close: String,
    /// `{"name": const, "arguments": parameters}` objects, one `anyOf` branch per tool.
    pub call_schema: Value,
    pub required: bool,
    pub parallel: bool,
}

/// The fields chat and completion requests share, checked in one place.
struct Sampling<'a> {
    max_tokens: Option<(&'static str, i64)>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    seed: Option<i128>,
    stop: Option<&'a Stop>,
    n: Option<i64>,
    logit_bias: Option<&'a serde_json::Map<String, Value>>,
}

fn in_range(param: &str, value: Option<f64>, range: std::ops::RangeInclusive<f64>) -> Result<(), ApiError> {
    match value {
        Some(v) if !range.contains(&v) => Err(ApiError::invalid_param(
            param,
            format!("Invalid value for '{param}': {v} is not between {} and {}.", range.start(), range.end()),
        )),
        _ => Ok(()),
    }
}

fn int_in_range(param: &str, value: Option<i64>, min: i64, max: i64) -> Result<(), ApiError> {
    match value {
        Some(v) if v < min || v > max => Err(ApiError::invalid_param(
            param,
            format!("Invalid value for '{param}': {v} is not between {min} and {max}."),
        )),
        _ => Ok(()),
    }
}

impl Sampling<'_> {
    fn params(&self) -> Result<GenerationParams, ApiError> {
        if let Some((param, max_tokens)) = self.max_tokens {
            int_in_range(param, Some(max_tokens), 1, u32::MAX as i64)?;
        }
        in_range("temperature", self.temperature, 0.0..=2.0)?;
        if let Some(top_p) = self.top_p {
            if !(top_p > 0.0 && top_p <= 1.0) {
                let message = format!("Invalid value for 'top_p': {top_p} is not greater than 0 and at most 1.");
                return Err(ApiError::invalid_param("top_p", message));
            }
        }
        int_in_range("top_k", self.top_k, 0, u32::MAX as i64)?;
        in_range("min_p", self.min_p, 0.0..=1.0)?;
        if let Some(penalty) = self.repetition_penalty {
            if !(penalty > 0.0 && penalty.is_finite()) {
                let message = format!("Invalid value for 'repetition_penalty': {penalty} is not greater than 0.");
                return Err(ApiError::invalid_param("repetition_penalty", message));
            }
        }
        in_range("presence_penalty", self.presence_penalty, -2.0..=2.0)?;
        in_range("frequency_penalty", self.frequency_penalty, -2.0..=2.0)?;
        let seed = match self.seed {
            None => None,
            // Negative seeds map to their two's complement: any i64 or u64 is a distinct seed.
            Some(seed) if (i64::MIN as i128..0).contains(&seed) => Some(seed as i64 as u64),
            Some(seed) => Some(u64::try_from(seed).map_err(|_| {
                ApiError::invalid_param("seed", format!("Invalid value for 'seed': {seed} does not fit in 64 bits."))
            })?),
        };
        let stop = self.stop.map(Stop::to_vec).unwrap_or_default();
        if stop.len() > MAX_STOP {
            let message = format!("Invalid value for 'stop': at most {MAX_STOP} stop sequences, got {}.", stop.len());
            return Err(ApiError::invalid_param("stop", message));
        }
        if let Some(i) = stop.iter().position(String::is_empty) {
            let param = match self.stop {
                Some(Stop::Many(_)) => format!("stop[{i}]"),
                _ => "stop".to_string(),
            };
            return Err(ApiError::invalid_param(
                param.clone(),
                format!("Invalid value for '{param}': empty stop sequence."),
            ));
        }
        int_in_range("n", self.n, 1, MAX_N)?;
        Ok(GenerationParams {
            max_tokens: self.max_tokens.map(|(_, v)| v as u32),
            temperature: self.temperature.unwrap_or(1.0) as f32,
            top_p: self.top_p.unwrap_or(1.0) as f32,
            top_k: self.top_k.unwrap_or(0) as u32,
            min_p: self.min_p.unwrap_or(0.0) as f32,
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0) as f32,
            presence_penalty: self.presence_penalty.unwrap_or(0.0) as f32,
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0) as f32,
            seed,
            stop,
            n: self.n.unwrap_or(1) as u32,
            logprobs: None,
            logit_bias: logit_bias(self.logit_bias)?,
            constraint: None,
        })
    }
}

fn logit_bias(map: Option<&serde_json::Map<String, Value>>) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(map) = map else { return Ok(Vec::new()) };
    if map.len() > MAX_LOGIT_BIAS {
        let message = format!("Invalid value for 'logit_bias': at most {MAX_LOGIT_BIAS} entries, got {}.", map.len());
        return Err(ApiError::invalid_param("logit_bias", message));
    }
    map.iter()
        .map(|(token, bias)| {
            let param = format!("logit_bias.{token}");
            let id: u32 = token.parse().map_err(|_| {
                ApiError::invalid_param(
                    param.clone(),
                    format!("Invalid value for '{param}': '{token}' is not a token id."),
                )
            })?;
            match bias.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                _ => Err(ApiError::invalid_param(
                    param.clone(),
                    format!("Invalid value for '{param}': {bias} is not a number between -100 and 100."),
                )),
            }
        })
        .collect()
}

fn stream_options_need_stream(stream: Option<bool>, has_options: bool) -> Result<(), ApiError> {
    if has_options && stream != Some(true) {
        return Err(ApiError::invalid_param(
            "stream_options",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        ));
    }
    Ok(())
}

impl ChatCompletionRequest {
    /// Sampling and output options, checked; `constraint` comes from `response_format` only
    /// (tools are added by [`ChatCompletionRequest::prepare`]).
    pub fn generation_params(&self) -> Result<GenerationParams, ApiError> {
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(v), _) => Some(("max_completion_tokens", v)),
            (None, Some(v)) => Some(("max_tokens", v)),
            (None, None) => None,
        };
        let mut params = Sampling {
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            stop: self.stop.as_ref(),
            n: self.n,
            logit_bias: self.logit_bias.as_ref(),
        }
        .params()?;
        stream_options_need_stream(self.stream, self.stream_options.is_some())?;
        int_in_range("top_logprobs", self.top_logprobs, 0, MAX_TOP_LOGPROBS)?;
        params.logprobs = match (self.logprobs, self.top_logprobs) {
            (Some(true), top) => Some(top.unwrap_or(0) as u32),
            (_, Some(_)) => {
                return Err(ApiError::invalid_param(
                    "top_logprobs",
                    "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
                ))
            }
            _ => None,
        };
        params.constraint = self.response_constraint()?;
        Ok(params)
    }

    /// The constraint `response_format` asks for, checked.
    pub(crate) fn response_constraint(&self) -> Result<Option<OutputConstraint>, ApiError> {
        let Some(format) = &self.response_format else { return Ok(None) };
        match format.kind {
            ResponseFormatType::Text => Ok(None),
            ResponseFormatType::JsonObject => Ok(Some(OutputConstraint::JsonObject)),
            ResponseFormatType::JsonSchema => {
                let Some(spec) = &format.json_schema else {
                    return Err(ApiError::invalid_param(
                        "response_format.json_schema",
                        "Missing required parameter: 'response_format.json_schema'.",
                    ));
                };
                check_name("response_format.json_schema.name", &spec.name)?;
                match &spec.schema {
                    None => Ok(Some(OutputConstraint::JsonSchema(Value::Object(Default::default())))),
                    Some(schema @ Value::Object(_)) => Ok(Some(OutputConstraint::JsonSchema(schema.clone()))),
                    Some(_) => Err(ApiError::invalid_param(
                        "response_format.json_schema.schema",
                        "Invalid type for 'response_format.json_schema.schema': expected a JSON schema object.",
                    )),
                }
            }
        }
    }

    /// Whether the response is a stream of chunks.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a stream ends with a usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.is_stream() && self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }
}

impl CompletionRequest {
    /// Checks every field; [`crate::parse_completion_request`] calls this.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_model(&self.model)?;
        self.generation_params()?;
        Ok(())
    }

    /// Sampling and output options, checked. `max_tokens` defaults to 16, as OpenAI's does.
    pub fn generation_params(&self) -> Result<GenerationParams, ApiError> {
        let inputs = self.prompt.inputs();
        if inputs.is_empty() {
            return Err(ApiError::invalid_param("prompt", "Invalid value for 'prompt': the prompt must not be empty."));
        }
        if inputs.len() > MAX_PROMPTS {
            let message = format!("Invalid value for 'prompt': at most {MAX_PROMPTS} prompts, got {}.", inputs.len());
            return Err(ApiError::invalid_param("prompt", message));
        }
        if let Some(i) = inputs.iter().position(|p| matches!(p, crate::PromptInput::Tokens(t) if t.is_empty())) {
            let param = if inputs.len() == 1 { "prompt".to_string() } else { format!("prompt[{i}]") };
            let message = format!("Invalid value for '{param}': the prompt must not be empty.");
            return Err(ApiError::invalid_param(param, message));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid_param("suffix", "The 'suffix' parameter (insertion) is not supported."));
        }
        let mut params = Sampling {
            max_tokens: Some(("max_tokens", self.max_tokens.unwrap_or(16))),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            stop: self.stop.as_ref(),
            n: self.n,
            logit_bias: self.logit_bias.as_ref(),
        }
        .params()?;
        if let Some(best_of) = self.best_of {
            if best_of != i64::from(params.n) {
                let message =
                    format!("Invalid value for 'best_of': only best_of equal to n ({}) is supported.", params.n);
                return Err(ApiError::invalid_param("best_of", message));
            }
        }
        stream_options_need_stream(self.stream, self.stream_options.is_some())?;
        int_in_range("logprobs", self.logprobs, 0, MAX_COMPLETION_LOGPROBS)?;
        params.logprobs = self.logprobs.map(|k| k as u32);
        Ok(params)
    }

    /// Whether the response is a stream of chunks.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a stream ends with a usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.is_stream() && self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    /// Whether the prompt is returned before the completion (`echo`).
    pub fn echo(&self) -> bool {
        self.echo == Some(true)
    }
}

pub(crate) fn check_model(model: &str) -> Result<(), ApiError> {
    if model.is_empty() {
        return Err(ApiError::invalid_param("model", "Invalid value for 'model': the model name must not be empty."));
    }
    Ok(())
}

/// OpenAI's rule for function and schema names: 1 to 64 of `a-z A-Z 0-9 _ -`.
pub(crate) fn check_name(param: &str, name: &str) -> Result<(), ApiError> {
    let ok =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        let shown: String = name.chars().take(80).collect();
        return Err(ApiError::invalid_param(
            param,
            format!("Invalid value for '{param}': '{shown}' must be 1 to 64 letters, digits, underscores or dashes."),
        ));
    }
    Ok(())
}
