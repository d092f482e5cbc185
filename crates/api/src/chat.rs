//! Checks of a chat request's messages and tools, and its preparation for the engine: the
//! messages a template renders, the generation options, and how to read the reply.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::ApiError;
use crate::params::{check_model, check_name, GenerationParams, OutputConstraint};
use crate::request::{ChatCompletionRequest, ChatMessage, MessageContent, Role, Tool, ToolChoice};
use crate::tools::{add_system, prompt_messages, tool_constraint, tools_system_prompt, PromptMessage, ToolFormat};

/// Most tools one request may define, as OpenAI allows.
pub const MAX_TOOLS: usize = 128;

/// A chat request made ready for the engine by [`ChatCompletionRequest::prepare`].
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedChat {
    /// Messages for the chat template (tools described in the system message in
    /// [`ToolFormat::Generic`]); render them with the generation prompt added.
    pub messages: Vec<PromptMessage>,
    /// OpenAI-format tool definitions to give the template as `tools`; set only in
    /// [`ToolFormat::Hermes`], whose templates render them.
    pub template_tools: Option<Vec<Tool>>,
    /// Sampling, stopping and the output constraint (tool calls or `response_format`).
    pub params: GenerationParams,
    /// `Some`: read the reply with [`crate::ToolCallParser`] in this format; `None`: the
    /// reply is plain content.
    pub tool_format: Option<ToolFormat>,
}

impl ChatCompletionRequest {
    /// Checks every field; [`crate::parse_chat_request`] calls this.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_model(&self.model)?;
        if self.messages.is_empty() {
            return Err(ApiError::invalid_param(
                "messages",
                "Invalid value for 'messages': at least one message is required.",
            ));
        }
        for (i, message) in self.messages.iter().enumerate() {
            check_message(i, message)?;
        }
        self.check_tools()?;
        self.generation_params()?;
        Ok(())
    }

    /// `tools` when tools are in play: some defined and `tool_choice` not `none`.
    pub fn active_tools(&self) -> Option<&[Tool]> {
        let tools = self.tools.as_deref().filter(|t| !t.is_empty())?;
        (self.tool_choice() != ToolChoice::None).then_some(tools)
    }

    /// `tool_choice`, with OpenAI's default: `auto` when tools are given, else `none`.
    pub fn tool_choice(&self) -> ToolChoice {
        match &self.tool_choice {
            Some(choice) => choice.clone(),
            None if self.tools.as_ref().is_some_and(|t| !t.is_empty()) => ToolChoice::Auto,
            None => ToolChoice::None,
        }
    }

    /// `parallel_tool_calls`, default true.
    pub fn parallel_tool_calls(&self) -> bool {
        self.parallel_tool_calls.unwrap_or(true)
    }

    fn check_tools(&self) -> Result<(), ApiError> {
        let tools = self.tools.as_deref().unwrap_or_default();
        if tools.len() > MAX_TOOLS {
            let message = format!("Invalid value for 'tools': at most {MAX_TOOLS} tools, got {}.", tools.len());
            return Err(ApiError::invalid_param("tools", message));
        }
        let mut names = HashSet::new();
        for (i, tool) in tools.iter().enumerate() {
            let param = format!("tools[{i}].function.name");
            check_name(&param, &tool.function.name)?;
            if !names.insert(tool.function.name.as_str()) {
                let message = format!("Invalid value for '{param}': the name '{}' is used twice.", tool.function.name);
                return Err(ApiError::invalid_param(param, message));
            }
            if tool.function.parameters.as_ref().is_some_and(|p| !p.is_object()) {
                let param = format!("tools[{i}].function.parameters");
                let message = format!("Invalid type for '{param}': expected a JSON schema object.");
                return Err(ApiError::invalid_param(param, message));
            }
        }
        match &self.tool_choice {
            Some(ToolChoice::Required) if tools.is_empty() => Err(ApiError::invalid_param(
                "tool_choice",
                "Invalid value for 'tool_choice': 'required' is only allowed when 'tools' are specified.",
            )),
            Some(ToolChoice::Function(name)) if !names.contains(name.as_str()) => Err(ApiError::invalid_param(
                "tool_choice",
                format!("Invalid value for 'tool_choice': no function named '{name}' in 'tools'."),
            )),
            _ => Ok(()),
        }
    }

    /// Everything the engine needs for this request when the model writes tool calls in
    /// `format` (see [`ToolFormat::detect`]): template messages, generation options with the
    /// constraint, and how to parse the reply. Validates first, so it never panics.
    pub fn prepare(&self, format: ToolFormat) -> Result<PreparedChat, ApiError> {
        self.validate()?;
        let mut params = self.generation_params()?;
        let mut messages = prompt_messages(&self.messages, format);
        let Some(tools) = self.active_tools() else {
            return Ok(PreparedChat { messages, template_tools: None, params, tool_format: None });
        };
        let choice = self.tool_choice();
        let parallel = self.parallel_tool_calls();
        let response_schema = params.constraint.as_ref().and_then(response_schema);
        if format == ToolFormat::Hermes && response_schema.is_some() {
            return Err(ApiError::invalid_param(
                "response_format",
                "Invalid value for 'response_format': a JSON response format cannot be combined with tools for \
                 this model.",
            ));
        }
        params.constraint = tool_constraint(format, tools, &choice, parallel, response_schema.as_ref());
        let template_tools = match format {
            ToolFormat::Generic => {
                add_system(&mut messages, &tools_system_prompt(tools, &choice, parallel));
                None
            }
            ToolFormat::Hermes => Some(tools.to_vec()),
        };
        Ok(PreparedChat { messages, template_tools, params, tool_format: Some(format) })
    }
}

fn check_message(i: usize, message: &ChatMessage) -> Result<(), ApiError> {
    let param = |field: &str| format!("messages[{i}].{field}");
    let has_calls = message.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
    match &message.content {
        None if message.role == Role::Assistant && has_calls => {}
        None => {
            let param = param("content");
            return Err(ApiError::invalid_param(param.clone(), format!("Missing required parameter: '{param}'.")));
        }
        Some(MessageContent::Text(_)) => {}
        Some(MessageContent::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                if part.kind != "text" {
                    let param = param(&format!("content[{j}].type"));
                    let message = format!(
                        "Invalid value for '{param}': content parts of type '{}' are not supported; this server \
                         accepts text parts only.",
                        part.kind
                    );
                    return Err(ApiError::invalid_param(param, message));
                }
                if part.text.is_none() {
                    let param = param(&format!("content[{j}].text"));
                    return Err(ApiError::invalid_param(
                        param.clone(),
                        format!("Missing required parameter: '{param}'."),
                    ));
                }
            }
        }
    }
    if has_calls && message.role != Role::Assistant {
        let param = param("tool_calls");
        let message = format!("Invalid parameter '{param}': only assistant messages may have tool calls.");
        return Err(ApiError::invalid_param(param, message));
    }
    for (j, call) in message.tool_calls.iter().flatten().enumerate() {
        if call.function.name.is_empty() {
            let param = param(&format!("tool_calls[{j}].function.name"));
            return Err(ApiError::invalid_param(param.clone(), format!("Invalid value for '{param}': empty name.")));
        }
    }
    if message.role == Role::Tool && message.tool_call_id.as_deref().is_none_or(str::is_empty) {
        let param = param("tool_call_id");
        return Err(ApiError::invalid_param(param.clone(), format!("Missing required parameter: '{param}'.")));
    }
    Ok(())
}

/// The schema of a `response_format` constraint, for the `response` branch of the envelope.
fn response_schema(constraint: &OutputConstraint) -> Option<Value> {
    match constraint {
        OutputConstraint::JsonObject => Some(serde_json::json!({"type": "object"})),
        OutputConstraint::JsonSchema(schema) => Some(schema.clone()),
        OutputConstraint::ToolCalls(_) => None,
    }
}

#[cfg(test)]
mod tests;
