//! Function calling for models whose chat template knows nothing about tools, the way
//! llama.cpp's `common_chat` "generic" format does it: the tools and the JSON reply shape are
//! described in the system message, a JSON schema forces the reply into
//! `{"tool_calls": [...]}` or `{"response": "..."}`, and earlier tool turns are rewritten as
//! plain text. Templates that render `tools` themselves and use Hermes/Qwen's
//! `<tool_call>{...}</tool_call>` convention get that convention instead.

mod json;
mod parser;

pub use parser::{parse_tool_output, ParsedAssistant, ToolCallParser};

use serde::Serialize;
use serde_json::{json, Value};

use crate::params::{OutputConstraint, ToolCallConstraint};
use crate::request::{ChatMessage, Role, Tool, ToolChoice};

/// Opening tag of a Hermes/Qwen tool call.
pub const HERMES_OPEN: &str = "<tool_call>";
/// Closing tag of a Hermes/Qwen tool call.
pub const HERMES_CLOSE: &str = "</tool_call>";

/// How a model writes tool calls, which decides the prompt, the constraint and the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ToolFormat {
    /// The template does not render tools: the system message describes them and the reply
    /// is a JSON envelope (`{"tool_calls": [...]}` or `{"response": "..."}`).
    Generic,
    /// The template renders `tools` itself and the model writes
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` after optional text.
    Hermes,
}

impl ToolFormat {
    /// The format for a model with this chat template source.
    pub fn detect(template_source: &str) -> ToolFormat {
        if template_renders_tools(template_source) && template_source.contains(HERMES_OPEN) {
            ToolFormat::Hermes
        } else {
            ToolFormat::Generic
        }
    }
}

/// Whether a Jinja chat template uses the `tools` variable (so it renders tool definitions
/// itself): `tools` as a whole identifier inside `{% %}` or `{{ }}`, outside string literals.
pub fn template_renders_tools(template_source: &str) -> bool {
    let bytes = template_source.as_bytes();
    let mut i = 0;
    let mut in_code = false;
    while i < bytes.len() {
        let pair = &bytes[i..bytes.len().min(i + 2)];
        if !in_code {
            in_code = pair == b"{%" || pair == b"{{";
            i += if in_code { 2 } else { 1 };
            continue;
        }
        match bytes[i] {
            b'%' | b'}' if pair == b"%}" || pair == b"}}" => {
                in_code = false;
                i += 2;
            }
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if &bytes[start..i] == b"tools" {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

/// The text to merge into the system message in [`ToolFormat::Generic`]: the tools (only the
/// named one for a named `tool_choice`) and the JSON the reply must be.
pub fn tools_system_prompt(tools: &[Tool], choice: &ToolChoice, parallel: bool) -> String {
    let listed: Vec<Value> = offered(tools, choice)
        .map(|tool| {
            let mut entry = json!({"name": tool.function.name});
            if let Some(description) = &tool.function.description {
                entry["description"] = Value::from(description.as_str());
            }
            entry["parameters"] = tool.function.parameters_schema();
            entry
        })
        .collect();
    let listing = serde_json::to_string_pretty(&listed).unwrap_or_default();
    let calls = if parallel {
        r#"{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}, ...]}"#
    } else {
        r#"{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}"#
    };
    let mut prompt = format!("You can call the following tools:\n{listing}\n\n");
    match choice {
        ToolChoice::Required => {
            prompt += &format!("Respond in JSON format with `tool_calls`, a request to call tools:\n{calls}");
        }
        ToolChoice::Function(name) => {
            prompt +=
                &format!("Respond in JSON format with `tool_calls`, a request to call the tool `{name}`:\n{calls}");
        }
        ToolChoice::Auto | ToolChoice::None => {
            prompt += &format!(
                "Respond in JSON format, either with `tool_calls` (a request to call tools) or with `response` \
                 (a reply to the user's request):\n{calls}\nor\n{{\"response\": \"<your reply>\"}}"
            );
        }
    }
    prompt += if parallel { "\nYou may call several tools at once." } else { "\nCall at most one tool at a time." };
    prompt
}

/// The tools a choice allows: all, or only the named one.
fn offered<'a>(tools: &'a [Tool], choice: &'a ToolChoice) -> impl Iterator<Item = &'a Tool> + 'a {
    tools.iter().filter(move |tool| match choice {
        ToolChoice::Function(name) => &tool.function.name == name,
        _ => true,
    })
}

/// The schema of one call, `{"name": const, "arguments": <parameters>}`, with one `anyOf`
/// branch per tool the choice allows (a single tool needs no `anyOf`).
pub fn call_schema(tools: &[Tool], choice: &ToolChoice) -> Value {
    let mut branches: Vec<Value> = offered(tools, choice)
        .map(|tool| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "const": tool.function.name},
                    "arguments": tool.function.parameters_schema(),
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    if branches.len() == 1 {
        branches.remove(0)
    } else {
        json!({"anyOf": branches})
    }
}

/// The JSON schema of a [`ToolFormat::Generic`] reply, `None` for `tool_choice: none` or no
/// tools. `auto`: `{"tool_calls": [call, ...]}` or `{"response": <response_schema or string>}`;
/// `required` and a named function: the `tool_calls` branch only. Without `parallel`, one call.
pub fn tool_call_schema(
    tools: &[Tool],
    choice: &ToolChoice,
    parallel: bool,
    response_schema: Option<&Value>,
) -> Option<Value> {
    if tools.is_empty() || *choice == ToolChoice::None {
        return None;
    }
    let mut calls = json!({"type": "array", "items": call_schema(tools, choice), "minItems": 1});
    if !parallel {
        calls["maxItems"] = Value::from(1);
    }
    let tool_calls = json!({
        "type": "object",
        "properties": {"tool_calls": calls},
        "required": ["tool_calls"],
        "additionalProperties": false,
    });
    if *choice != ToolChoice::Auto {
        return Some(tool_calls);
    }
    let response = response_schema.cloned().unwrap_or_else(|| json!({"type": "string"}));
    let response = json!({
        "type": "object",
        "properties": {"response": response},
        "required": ["response"],
        "additionalProperties": false,
    });
    Some(json!({"anyOf": [tool_calls, response]}))
}

/// The constraint for a tool request in `format`; `None` for `tool_choice: none` or no tools.
/// `response_schema` (from `response_format`) shapes the `response` branch of the generic
/// envelope.
pub fn tool_constraint(
    format: ToolFormat,
    tools: &[Tool],
    choice: &ToolChoice,
    parallel: bool,
    response_schema: Option<&Value>,
) -> Option<OutputConstraint> {
    if tools.is_empty() || *choice == ToolChoice::None {
        return None;
    }
    match format {
        ToolFormat::Generic => {
            tool_call_schema(tools, choice, parallel, response_schema).map(OutputConstraint::JsonSchema)
        }
        ToolFormat::Hermes => Some(OutputConstraint::ToolCalls(ToolCallConstraint {
            open: HERMES_OPEN.to_string(),
            close: HERMES_CLOSE.to_string(),
            call_schema: call_schema(tools, choice),
            required: *choice != ToolChoice::Auto,
            parallel,
        })),
    }
}

/// A message ready for a chat template: `role` and `content` always; `tool_calls` and
/// `tool_call_id` only in [`ToolFormat::Hermes`], for templates that render them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromptMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<PromptToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl PromptMessage {
    fn plain(role: &str, content: String) -> PromptMessage {
        PromptMessage { role: role.to_string(), content, tool_calls: Vec::new(), tool_call_id: None }
    }
}

/// An earlier call as templates expect it: `arguments` as a JSON value (Qwen's template
/// writes `arguments | tojson`), not a string.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromptToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: PromptFunction,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromptFunction {
    pub name: String,
    pub arguments: Value,
}

/// Arguments text as a JSON value; text that is not JSON stays a string.
fn arguments_value(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::from(arguments))
}

/// The request's messages as a template can render them. `developer` becomes `system`. In
/// [`ToolFormat::Generic`] (as llama.cpp polyfills templates without tool support) an
/// assistant turn with calls becomes the JSON envelope the model is asked to write, and a
/// `tool` result becomes a `user` message `{"tool_response": {"tool", "tool_call_id",
/// "content"}}`; consecutive results (and a user turn right after them) are merged into one
/// message so that roles still alternate (Gemma's template insists). In
/// [`ToolFormat::Hermes`] calls and results are passed through for the template.
pub fn prompt_messages(messages: &[ChatMessage], format: ToolFormat) -> Vec<PromptMessage> {
    let mut out: Vec<PromptMessage> = Vec::with_capacity(messages.len());
    // Whether the last message in `out` holds tool results, so the next one merges into it.
    let mut last_is_tool_result = false;
    for (i, message) in messages.iter().enumerate() {
        let text = message.text_content();
        let calls = message.tool_calls.as_deref().unwrap_or_default();
        let converted = match (message.role, format) {
            (Role::System | Role::Developer, _) => PromptMessage::plain("system", text),
            (Role::User, ToolFormat::Generic) if last_is_tool_result => {
                // Tool results became a user message: a user turn right after joins it.
                if let Some(last) = out.last_mut() {
                    last.content.push('\n');
                    last.content.push_str(&text);
                }
                last_is_tool_result = false;
                continue;
            }
            (Role::User, _) => PromptMessage::plain("user", text),
            (Role::Assistant, ToolFormat::Generic) if !calls.is_empty() => {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|call| json!({"name": call.function.name, "arguments": arguments_value(&call.function.arguments)}))
                    .collect();
                let mut envelope = json!({"tool_calls": calls});
                if !text.is_empty() {
                    envelope["response"] = Value::from(text);
                }
                PromptMessage::plain("assistant", envelope.to_string())
            }
            (Role::Assistant, _) => PromptMessage {
                tool_calls: calls
                    .iter()
                    .map(|call| PromptToolCall {
                        id: call.id.clone(),
                        kind: "function",
                        function: PromptFunction {
                            name: call.function.name.clone(),
                            arguments: arguments_value(&call.function.arguments),
                        },
                    })
                    .collect(),
                ..PromptMessage::plain("assistant", text)
            },
            (Role::Tool, ToolFormat::Generic) => {
                let mut response = json!({});
                if let Some(name) = tool_name(&messages[..i], message.tool_call_id.as_deref()) {
                    response["tool"] = Value::from(name);
                }
                if let Some(id) = &message.tool_call_id {
                    response["tool_call_id"] = Value::from(id.as_str());
                }
                response["content"] = Value::from(text);
                let content = json!({"tool_response": response}).to_string();
                match out.last_mut() {
                    Some(last) if last_is_tool_result => {
                        last.content.push('\n');
                        last.content.push_str(&content);
                        continue;
                    }
                    _ => {
                        out.push(PromptMessage::plain("user", content));
                        last_is_tool_result = true;
                        continue;
                    }
                }
            }
            (Role::Tool, ToolFormat::Hermes) => {
                PromptMessage { tool_call_id: message.tool_call_id.clone(), ..PromptMessage::plain("tool", text) }
            }
        };
        last_is_tool_result = false;
        out.push(converted);
    }
    out
}

/// The function name of the call `id` answers, from the latest assistant turn that made it.
fn tool_name<'a>(earlier: &'a [ChatMessage], id: Option<&str>) -> Option<&'a str> {
    let id = id?;
    earlier
        .iter()
        .rev()
        .filter_map(|m| m.tool_calls.as_deref())
        .flatten()
        .find(|call| call.id == id)
        .map(|call| call.function.name.as_str())
}

/// Puts `extra` into the system message: appended to a leading system message after a blank
/// line, or as a new first message (llama.cpp's `add_system`).
pub fn add_system(messages: &mut Vec<PromptMessage>, extra: &str) {
    match messages.first_mut() {
        Some(first) if first.role == "system" => {
            if !first.content.is_empty() {
                first.content.push_str("\n\n");
            }
            first.content.push_str(extra);
        }
        _ => messages.insert(0, PromptMessage::plain("system", extra.to_string())),
    }
}

#[cfg(test)]
mod tests;
