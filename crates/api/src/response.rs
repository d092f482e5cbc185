//! Response bodies: chat completions and their stream chunks, text completions (whose
//! stream chunks are `text_completion` objects too), usage, logprobs, the model list, and
//! server-sent events. Ids and timestamps are passed in (see [`IdGenerator`]).

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::request::{Role, ToolCall, ToolType};

/// The terminator of an OpenAI event stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

/// One server-sent event: `data: {json}\n\n`.
pub fn sse_event<T: Serialize>(value: &T) -> String {
    // Response types serialize infallibly (string keys, finite numbers or nulls).
    format!("data: {}\n\n", serde_json::to_string(value).unwrap_or_default())
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn or a stop sequence matched.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// The reply is tool calls.
    ToolCalls,
    ContentFilter,
}

/// Token counts of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: u32,
}

impl Usage {
    /// Counts with `total_tokens` filled in and `cached_tokens` reported (0 included).
    pub fn new(prompt_tokens: u32, completion_tokens: u32, cached_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens }),
        }
    }
}

/// Deterministic ids (`chatcmpl-…`, `cmpl-…`, `call_…`) from a seed the caller supplies, so
/// the crate has no clock or global RNG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdGenerator {
    state: u64,
}

impl IdGenerator {
    pub fn new(seed: u64) -> IdGenerator {
        IdGenerator { state: seed }
    }

    /// The next value of a SplitMix64 sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `prefix` followed by 24 letters and digits, as OpenAI's ids look.
    pub fn next_id(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id = String::with_capacity(prefix.len() + 24);
        id.push_str(prefix);
        for _ in 0..3 {
            let mut bits = self.next_u64();
            for _ in 0..8 {
                id.push(ALPHABET[(bits % 62) as usize] as char);
                bits /= 62;
            }
        }
        id
    }

    /// An independent generator seeded from this one (for example one per choice).
    pub fn fork(&mut self) -> IdGenerator {
        IdGenerator::new(self.next_u64())
    }
}

/// What every response object of one request shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseMeta {
    /// `chatcmpl-…` or `cmpl-…`, the same for every chunk of a stream.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
}

impl ResponseMeta {
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>) -> ResponseMeta {
        ResponseMeta { id: id.into(), created, model: model.into(), system_fingerprint: None }
    }

    /// A non-streamed chat response.
    pub fn chat_completion(&self, choices: Vec<ChatChoice>, usage: Usage) -> ChatCompletion {
        ChatCompletion {
            id: self.id.clone(),
            object: ChatCompletion::OBJECT.to_string(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.system_fingerprint.clone(),
            choices,
            usage: Some(usage),
        }
    }

    /// A stream chunk with these choices.
    pub fn chat_chunk(&self, choices: Vec<ChunkChoice>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: ChatCompletionChunk::OBJECT.to_string(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.system_fingerprint.clone(),
            choices,
            usage: None,
        }
    }

    /// The first chunk of choice `index`: `{"role": "assistant", "content": ""}`.
    pub fn chat_role_chunk(&self, index: u32) -> ChatCompletionChunk {
        let delta = ChatDelta { role: Some(Role::Assistant), content: Some(String::new()), ..ChatDelta::default() };
        self.chat_chunk(vec![ChunkChoice { index, delta, logprobs: None, finish_reason: None }])
    }

    /// A chunk carrying new content and/or tool-call pieces of choice `index`.
    pub fn chat_delta_chunk(
        &self,
        index: u32,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
    ) -> ChatCompletionChunk {
        self.chat_chunk(vec![ChunkChoice { index, delta, logprobs, finish_reason: None }])
    }

    /// The last chunk of choice `index`: an empty delta and the finish reason.
    pub fn chat_finish_chunk(&self, index: u32, reason: FinishReason) -> ChatCompletionChunk {
        self.chat_chunk(vec![ChunkChoice {
            index,
            delta: ChatDelta::default(),
            logprobs: None,
            finish_reason: Some(reason),
        }])
    }

    /// The chunk `stream_options.include_usage` asks for: no choices, the usage.
    pub fn chat_usage_chunk(&self, usage: Usage) -> ChatCompletionChunk {
        ChatCompletionChunk { usage: Some(usage), ..self.chat_chunk(Vec::new()) }
    }

    /// A text completion: the non-streamed response (every `finish_reason` set, `usage`
    /// given) or one stream chunk (`finish_reason` set only on a choice's last chunk, no
    /// `usage`).
    pub fn completion(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: Completion::OBJECT.to_string(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.system_fingerprint.clone(),
            choices,
            usage,
        }
    }

    /// One stream chunk of choice `index`.
    pub fn completion_chunk(
        &self,
        index: u32,
        text: impl Into<String>,
        logprobs: Option<CompletionLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> Completion {
        self.completion(vec![CompletionChoice { text: text.into(), index, logprobs, finish_reason }], None)
    }

    /// The usage chunk of a completion stream: no choices.
    pub fn completion_usage_chunk(&self, usage: Usage) -> Completion {
        self.completion(Vec::new(), Some(usage))
    }
}

/// The response of a non-streamed chat request (`object: "chat.completion"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChatChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatCompletion {
    pub const OBJECT: &'static str = "chat.completion";
}

/// One choice of a [`ChatCompletion`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: FinishReason,
}

/// The reply of a [`ChatChoice`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: Role,
    /// `null` when the reply is only tool calls.
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl AssistantMessage {
    pub fn new(content: Option<String>, tool_calls: Vec<ToolCall>) -> AssistantMessage {
        AssistantMessage { role: Role::Assistant, content, refusal: None, tool_calls }
    }
}

impl From<crate::tools::ParsedAssistant> for AssistantMessage {
    fn from(parsed: crate::tools::ParsedAssistant) -> AssistantMessage {
        AssistantMessage::new(parsed.content, parsed.tool_calls)
    }
}

/// One chunk of a streamed chat response (`object: "chat.completion.chunk"`). Its `usage`
/// is only on the final chunk of a stream with `include_usage`, whose `choices` are empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatCompletionChunk {
    pub const OBJECT: &'static str = "chat.completion.chunk";
}

/// One choice of a [`ChatCompletionChunk`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

/// What a chunk adds to a choice: the role (first chunk), content text, tool-call pieces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

impl ChatDelta {
    /// A delta with this content text.
    pub fn content(text: impl Into<String>) -> ChatDelta {
        ChatDelta { content: Some(text.into()), ..ChatDelta::default() }
    }

    /// Whether it adds nothing (no need to send it).
    pub fn is_empty(&self) -> bool {
        self.role.is_none()
            && self.content.as_deref().is_none_or(str::is_empty)
            && self.tool_calls.as_ref().is_none_or(Vec::is_empty)
    }
}

/// A piece of a tool call in a stream: `id`, `type` and `function.name` on its first piece,
/// then `function.arguments` text to append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the choice this piece belongs to.
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Log probabilities of a chat choice (`logprobs.content`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    pub content: Option<Vec<TokenLogprob>>,
    #[serde(default)]
    pub refusal: Option<Vec<TokenLogprob>>,
}

/// A sampled token, its log probability and the most likely alternatives at its position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    /// Finite: see [`clamp_logprob`].
    pub logprob: f32,
    /// The token's UTF-8 bytes (a token may hold part of a character).
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

/// OpenAI's value for an impossible token; JSON has no -infinity.
pub const MIN_LOGPROB: f32 = -9999.0;

/// A logprob JSON can carry: -infinity, NaN and anything below [`MIN_LOGPROB`] become it.
pub fn clamp_logprob(logprob: f32) -> f32 {
    if logprob >= MIN_LOGPROB {
        logprob.min(0.0)
    } else {
        MIN_LOGPROB
    }
}

/// The response of a text completion, and each chunk of its stream (`object:
/// "text_completion"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl Completion {
    pub const OBJECT: &'static str = "text_completion";
}

/// A stream chunk of a text completion has the same shape as the response.
pub type CompletionChunk = Completion;

/// One choice of a [`Completion`]; with several prompts, choice `i * n + j` is the `j`-th
/// completion of prompt `i`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    pub logprobs: Option<CompletionLogprobs>,
    /// `null` on stream chunks before a choice's last.
    pub finish_reason: Option<FinishReason>,
}

/// Log probabilities of a completion choice, one entry per token in each list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    /// `null` for the first prompt token when `echo` returns the prompt.
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<TopLogprobs>>,
    /// Byte offset of each token in the choice's text.
    pub text_offset: Vec<u32>,
}

/// Token to log probability, most likely first: a JSON object whose key order is kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopLogprobs(pub Vec<(String, f32)>);

impl Serialize for TopLogprobs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(token, logprob)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TopLogprobs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = TopLogprobs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of token to log probability")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLogprobs, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, f32>()? {
                    entries.push(entry);
                }
                Ok(TopLogprobs(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

/// The body of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(data: Vec<Model>) -> ModelList {
        ModelList { object: "list".to_string(), data }
    }
}

/// One served model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    pub owned_by: String,
}

impl Model {
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Model {
        Model { id: id.into(), object: "model".to_string(), created, owned_by: owned_by.into() }
    }
}

/// The body of `GET /health`: `{"status": "ok"}` (200) or `{"status": "loading"}` (503).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

impl Health {
    pub fn ok() -> Health {
        Health { status: "ok".to_string() }
    }

    pub fn loading() -> Health {
        Health { status: "loading".to_string() }
    }
}

#[cfg(test)]
mod tests;
