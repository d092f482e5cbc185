//! The OpenAI-compatible API surface of Tessera: request and response bodies of
//! `/v1/chat/completions`, `/v1/completions`, `/v1/models` and `/health`, their validation
//! into 400s that name the field at fault, the normalized [`GenerationParams`] the engine
//! runs, and function calling for models whose templates do not render tools.
//!
//! This crate knows no HTTP framework, tensors, clocks or randomness: ids and timestamps are
//! passed in, and everything here is a pure function of its inputs.
//!
//! A server handles a chat request like this:
//! 1. [`parse_chat_request`] the body (a 400 [`ApiError`] on failure), check `model`
//!    ([`ApiError::model_not_found`]).
//! 2. [`ChatCompletionRequest::prepare`] with the model's [`ToolFormat::detect`]: render
//!    `messages` with the chat template, generate with `params` (its `constraint` becomes a
//!    grammar).
//! 3. Feed the generated text to a [`ToolCallParser`] when `tool_format` is set, and send
//!    [`ResponseMeta`] chunks ([`sse_event`], then [`SSE_DONE`]) or one [`ChatCompletion`].

mod chat;
mod error;
mod params;
mod parse;
mod request;
mod response;
mod tools;

pub use chat::{PreparedChat, MAX_TOOLS};
pub use error::{ApiError, ErrorBody, ErrorObject};
pub use params::{
    GenerationParams, OutputConstraint, ToolCallConstraint, MAX_COMPLETION_LOGPROBS, MAX_LOGIT_BIAS, MAX_N,
    MAX_PROMPTS, MAX_STOP, MAX_TOP_LOGPROBS,
};
pub use parse::{parse_chat_request, parse_completion_request, parse_json};
pub use request::{
    ChatCompletionRequest, ChatMessage, CompletionRequest, ContentPart, FunctionCall, FunctionDefinition,
    JsonSchemaFormat, MessageContent, Prompt, PromptInput, ResponseFormat, ResponseFormatType, Role, Stop,
    StreamOptions, Tool, ToolCall, ToolChoice, ToolType,
};
pub use response::{
    clamp_logprob, sse_event, AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatDelta,
    ChatLogprobs, ChunkChoice, Completion, CompletionChoice, CompletionChunk, CompletionLogprobs, FinishReason,
    FunctionCallDelta, Health, IdGenerator, Model, ModelList, PromptTokensDetails, ResponseMeta, TokenLogprob,
    ToolCallDelta, TopLogprob, TopLogprobs, Usage, MIN_LOGPROB, SSE_DONE,
};
pub use tools::{
    add_system, call_schema, parse_tool_output, prompt_messages, template_renders_tools, tool_call_schema,
    tool_constraint, tools_system_prompt, ParsedAssistant, PromptFunction, PromptMessage, PromptToolCall,
    ToolCallParser, ToolFormat, HERMES_CLOSE, HERMES_OPEN,
};
