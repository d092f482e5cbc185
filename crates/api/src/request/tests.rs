use super::*;
use crate::{parse_chat_request, parse_completion_request};
use serde_json::json;

/// Parses `sample` (validated), serializes it back and expects the same JSON.
fn chat_round_trip(sample: Value) -> ChatCompletionRequest {
    let request = parse_chat_request(sample.to_string().as_bytes()).unwrap();
    assert_eq!(serde_json::to_value(&request).unwrap(), sample);
    request
}

fn completion_round_trip(sample: Value) -> CompletionRequest {
    let request = parse_completion_request(sample.to_string().as_bytes()).unwrap();
    assert_eq!(serde_json::to_value(&request).unwrap(), sample);
    request
}

#[test]
fn basic_chat_request() {
    let request = chat_round_trip(json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello!"}
        ]
    }));
    assert_eq!(request.messages[0].role, Role::Developer);
    assert!(!request.is_stream());
}

#[test]
fn streaming_request_with_usage() {
    let request = chat_round_trip(json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hello!"}],
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_completion_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "n": 2,
        "seed": -3,
        "stop": ["\n\n", "END"],
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100},
        "user": "user-1234"
    }));
    assert!(request.is_stream() && request.include_usage());
}

#[test]
fn text_parts_and_logprobs() {
    let request = chat_round_trip(json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in"},
            {"type": "text", "text": "this text?"}
        ]}],
        "logprobs": true,
        "top_logprobs": 2
    }));
    assert_eq!(request.messages[0].text_content(), "What is in\nthis text?");
}

#[test]
fn function_calling_request() {
    let request = chat_round_trip(json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "What's the weather like in Boston today?"}],
        "tools": [{
            "type": "function",
            "function": {
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["location"]
                }
            }
        }],
        "tool_choice": "auto"
    }));
    assert_eq!(request.tool_choice, Some(ToolChoice::Auto));
}

#[test]
fn multi_turn_tool_conversation() {
    let request = chat_round_trip(json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "18C and sunny"},
            {"role": "assistant", "content": "It is 18C and sunny in Paris."}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false
    }));
    assert_eq!(request.tool_choice, Some(ToolChoice::Function("get_weather".into())));
    assert_eq!(request.messages[2].tool_calls.as_ref().unwrap()[0].function.name, "get_weather");
}

#[test]
fn structured_output_request() {
    let request = chat_round_trip(json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Extract the event."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "calendar_event",
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "date": {"type": "string"}},
                    "required": ["name", "date"],
                    "additionalProperties": false
                },
                "strict": true
            }
        }
    }));
    assert_eq!(request.response_format.unwrap().kind, ResponseFormatType::JsonSchema);
    chat_round_trip(json!({
        "model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}
    }));
}

#[test]
fn nulls_mean_absent() {
    let request = parse_chat_request(
        json!({"model": "m", "messages": [{"role": "user", "content": "x", "tool_calls": null}],
               "temperature": null, "stop": null, "tools": null, "tool_choice": null, "seed": null})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(request.temperature, None);
    assert_eq!(request.stop, None);
}

#[test]
fn completion_prompts() {
    let request = completion_round_trip(json!({
        "model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7, "temperature": 0.0
    }));
    assert_eq!(request.prompt.inputs(), [PromptInput::Text("Say this is a test".into())]);
    let request = completion_round_trip(json!({"model": "m", "prompt": ["a", "b"], "n": 2, "best_of": 2}));
    assert_eq!(request.prompt.inputs().len(), 2);
    let request = completion_round_trip(json!({"model": "m", "prompt": [1, 2, 3], "logprobs": 5, "echo": true}));
    assert_eq!(request.prompt.inputs(), [PromptInput::Tokens(vec![1, 2, 3])]);
    assert!(request.echo());
    let request = completion_round_trip(json!({"model": "m", "prompt": [[1, 2], [3]], "stream": true,
                                               "stream_options": {"include_usage": false}}));
    assert_eq!(request.prompt.inputs(), [PromptInput::Tokens(vec![1, 2]), PromptInput::Tokens(vec![3])]);
    assert!(request.is_stream() && !request.include_usage());
}

#[test]
fn bad_prompts_name_the_element() {
    let cases = [
        (json!(["a", 1]), "prompt", "mixed array"),
        (json!([1, -2]), "prompt[1]", "token id -2 is out of range"),
        (json!([[1], [4294967296u64]]), "prompt[1][0]", "out of range"),
        (json!([[1], ["x"]]), "prompt[1][0]", "expected a token id"),
        (json!({"text": "x"}), "prompt", "expected a string, an array of strings"),
        (json!([]), "prompt", "must not be empty"),
        (json!([[1], []]), "prompt[1]", "must not be empty"),
    ];
    for (prompt, param, needle) in cases {
        let body = json!({"model": "m", "prompt": prompt});
        let error = parse_completion_request(body.to_string().as_bytes()).unwrap_err();
        assert_eq!((error.status, error.param.as_deref()), (400, Some(param)), "{prompt}: {}", error.message);
        assert!(error.message.contains(needle), "{prompt}: {}", error.message);
    }
}

#[test]
fn tool_choice_forms() {
    for (value, choice) in [
        (json!("none"), ToolChoice::None),
        (json!("auto"), ToolChoice::Auto),
        (json!("required"), ToolChoice::Required),
        (json!({"type": "function", "function": {"name": "f"}}), ToolChoice::Function("f".into())),
    ] {
        let parsed: ToolChoice = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(parsed, choice);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), value);
    }
    assert!(serde_json::from_value::<ToolChoice>(json!("sometimes")).is_err());
    assert!(serde_json::from_value::<ToolChoice>(json!({"type": "function"})).is_err());
}
