use super::*;
use crate::request::{FunctionDefinition, ToolCall, ToolType};
use crate::response::{ChatDelta, IdGenerator};
use proptest::prelude::*;
use serde_json::json;

/// SmolLM2-135M-Instruct's template, as its GGUF file carries it.
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}\
{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The shape of Gemma 3's template: no tools.
const GEMMA3_TEMPLATE: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}\
{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}\
{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\
{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}{%- endif -%}\
{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{%- endfor -%}\
{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}";

/// An excerpt of Qwen2.5's template, which renders tools and uses `<tool_call>`.
const QWEN25_TEMPLATE: &str = "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    \
{{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n<tools>\" }}\n    \
{%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    \
{{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n\
{%- endif %}{%- for message in messages %}{%- if message.tool_calls %}{%- for tool_call in message.tool_calls %}\
{{- '<tool_call>\\n{\"name\": \"' }}{{- tool_call.function.name }}{{- '\", \"arguments\": ' }}\
{{- tool_call.function.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}{%- endif %}{%- endfor %}";

/// Llama 3.1 renders tools but writes calls its own way.
const LLAMA31_TEMPLATE: &str =
    "{%- if tools is not none and not tools_in_user_message %}{{- \"Environment: ipython\\n\" }}\
{%- endif %}{%- for t in tools %}{{- t | tojson(indent=4) }}{%- endfor %}{{- '<|python_tag|>' }}";

fn tool(name: &str, parameters: serde_json::Value) -> Tool {
    Tool {
        kind: ToolType::Function,
        function: FunctionDefinition {
            name: name.to_string(),
            description: Some(format!("Does {name}.")),
            parameters: Some(parameters),
            strict: None,
        },
    }
}

fn weather() -> Tool {
    tool("get_weather", json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}))
}

fn time() -> Tool {
    tool("get_time", json!({"type": "object", "properties": {"zone": {"type": "string"}}}))
}

#[test]
fn detects_templates_that_render_tools() {
    assert!(!template_renders_tools(SMOLLM2_TEMPLATE));
    assert!(!template_renders_tools(GEMMA3_TEMPLATE));
    assert!(template_renders_tools(QWEN25_TEMPLATE));
    assert!(template_renders_tools(LLAMA31_TEMPLATE));
    // A mention in a string, in text outside Jinja, or a longer name is not a use.
    assert!(!template_renders_tools("{{ raise_exception('tools are not supported') }}"));
    assert!(!template_renders_tools("tools {{ message.content }}"));
    assert!(!template_renders_tools("{% for c in message.tool_calls %}{{ tools_count }}{% endfor %}"));
    assert_eq!(ToolFormat::detect(SMOLLM2_TEMPLATE), ToolFormat::Generic);
    assert_eq!(ToolFormat::detect(GEMMA3_TEMPLATE), ToolFormat::Generic);
    assert_eq!(ToolFormat::detect(QWEN25_TEMPLATE), ToolFormat::Hermes);
    assert_eq!(ToolFormat::detect(LLAMA31_TEMPLATE), ToolFormat::Generic);
}

#[test]
fn system_prompt_describes_tools_and_reply_shape() {
    let tools = [weather(), time()];
    let auto = tools_system_prompt(&tools, &ToolChoice::Auto, true);
    assert!(auto.contains("\"name\": \"get_weather\"") && auto.contains("\"name\": \"get_time\""), "{auto}");
    assert!(auto.contains("Does get_weather.") && auto.contains("\"city\""), "{auto}");
    assert!(auto.contains("`tool_calls`") && auto.contains("{\"response\": \"<your reply>\"}"), "{auto}");
    assert!(auto.contains("several tools at once"), "{auto}");

    let required = tools_system_prompt(&tools, &ToolChoice::Required, false);
    assert!(!required.contains("\"response\""), "{required}");
    assert!(required.contains("at most one tool"), "{required}");

    let named = tools_system_prompt(&tools, &ToolChoice::Function("get_time".into()), true);
    assert!(named.contains("the tool `get_time`") && !named.contains("get_weather"), "{named}");
}

#[test]
fn envelope_schema_for_each_choice() {
    let tools = [weather()];
    let auto = tool_call_schema(&tools, &ToolChoice::Auto, true, None).unwrap();
    let call = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "const": "get_weather"},
            "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
        "required": ["name", "arguments"],
        "additionalProperties": false,
    });
    let tool_calls = json!({
        "type": "object",
        "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1}},
        "required": ["tool_calls"],
        "additionalProperties": false,
    });
    let response = json!({
        "type": "object",
        "properties": {"response": {"type": "string"}},
        "required": ["response"],
        "additionalProperties": false,
    });
    assert_eq!(auto, json!({"anyOf": [tool_calls, response]}));
    // The grammar writes properties in schema order: the name comes before the arguments.
    let text = auto.to_string();
    assert!(text.find("\"name\"").unwrap() < text.find("\"arguments\"").unwrap(), "{text}");

    assert_eq!(tool_call_schema(&tools, &ToolChoice::Required, true, None).unwrap(), tool_calls);
    let single = tool_call_schema(&tools, &ToolChoice::Required, false, None).unwrap();
    assert_eq!(single["properties"]["tool_calls"]["maxItems"], 1);
    assert_eq!(tool_call_schema(&tools, &ToolChoice::None, true, None), None);
    assert_eq!(tool_call_schema(&[], &ToolChoice::Auto, true, None), None);

    let two = [weather(), time()];
    let any = tool_call_schema(&two, &ToolChoice::Auto, true, None).unwrap();
    let branches = &any["anyOf"][0]["properties"]["tool_calls"]["items"]["anyOf"];
    assert_eq!(branches.as_array().unwrap().len(), 2);
    assert_eq!(branches[1]["properties"]["name"]["const"], "get_time");
    let named = tool_call_schema(&two, &ToolChoice::Function("get_time".into()), true, None).unwrap();
    assert_eq!(named["properties"]["tool_calls"]["items"]["properties"]["name"]["const"], "get_time");

    let shaped = tool_call_schema(&tools, &ToolChoice::Auto, true, Some(&json!({"type": "object"}))).unwrap();
    assert_eq!(shaped["anyOf"][1]["properties"]["response"], json!({"type": "object"}));
}

#[test]
fn tool_without_parameters_takes_an_empty_object() {
    let mut bare = weather();
    bare.function.parameters = None;
    let schema = call_schema(&[bare], &ToolChoice::Auto);
    assert_eq!(schema["properties"]["arguments"], json!({"type": "object", "properties": {}}));
}

#[test]
fn hermes_constraint() {
    let tools = [weather(), time()];
    let Some(OutputConstraint::ToolCalls(constraint)) =
        tool_constraint(ToolFormat::Hermes, &tools, &ToolChoice::Required, false, None)
    else {
        panic!()
    };
    assert_eq!((constraint.open.as_str(), constraint.close.as_str()), ("<tool_call>", "</tool_call>"));
    assert!(constraint.required && !constraint.parallel);
    assert_eq!(constraint.call_schema, call_schema(&tools, &ToolChoice::Required));
    let auto = tool_constraint(ToolFormat::Hermes, &tools, &ToolChoice::Auto, true, None);
    assert!(matches!(auto, Some(OutputConstraint::ToolCalls(ToolCallConstraint { required: false, .. }))));
    assert_eq!(tool_constraint(ToolFormat::Hermes, &tools, &ToolChoice::None, true, None), None);
    let generic = tool_constraint(ToolFormat::Generic, &tools, &ToolChoice::Auto, true, None);
    assert_eq!(generic, tool_call_schema(&tools, &ToolChoice::Auto, true, None).map(OutputConstraint::JsonSchema));
}

fn conversation() -> Vec<ChatMessage> {
    let assistant_calls = ChatMessage {
        tool_calls: Some(vec![
            ToolCall::function("call_1", "get_weather", r#"{"city": "Paris"}"#),
            ToolCall::function("call_2", "get_time", "not json"),
        ]),
        content: None,
        ..ChatMessage::text(Role::Assistant, "")
    };
    let result =
        |id: &str, text: &str| ChatMessage { tool_call_id: Some(id.into()), ..ChatMessage::text(Role::Tool, text) };
    vec![
        ChatMessage::text(Role::Developer, "Be brief."),
        ChatMessage::text(Role::User, "Weather and time in Paris?"),
        assistant_calls,
        result("call_1", "18C"),
        result("call_2", "12:00"),
        ChatMessage::text(Role::Assistant, "18C at noon."),
        ChatMessage::text(Role::User, "Thanks"),
    ]
}

#[test]
fn generic_messages_are_plain_text_with_alternating_roles() {
    let messages = prompt_messages(&conversation(), ToolFormat::Generic);
    let pairs: Vec<(&str, &str)> = messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("system", "Be brief."),
            ("user", "Weather and time in Paris?"),
            (
                "assistant",
                r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_time","arguments":"not json"}]}"#
            ),
            (
                "user",
                "{\"tool_response\":{\"tool\":\"get_weather\",\"tool_call_id\":\"call_1\",\"content\":\"18C\"}}\n\
                 {\"tool_response\":{\"tool\":\"get_time\",\"tool_call_id\":\"call_2\",\"content\":\"12:00\"}}"
            ),
            ("assistant", "18C at noon."),
            ("user", "Thanks"),
        ]
    );
    assert!(messages.iter().all(|m| m.tool_calls.is_empty() && m.tool_call_id.is_none()));
    // Serialized for a template: only role and content.
    assert_eq!(serde_json::to_value(&messages[0]).unwrap(), json!({"role": "system", "content": "Be brief."}));
}

#[test]
fn generic_user_turn_after_tool_results_joins_them() {
    let mut messages = conversation();
    messages.truncate(5);
    messages.push(ChatMessage::text(Role::User, "And tomorrow?"));
    let converted = prompt_messages(&messages, ToolFormat::Generic);
    assert_eq!(converted.len(), 4);
    assert_eq!(converted[3].role, "user");
    assert!(converted[3].content.ends_with("}}\nAnd tomorrow?"), "{}", converted[3].content);
}

#[test]
fn hermes_messages_keep_calls_for_the_template() {
    let messages = prompt_messages(&conversation(), ToolFormat::Hermes);
    assert_eq!(messages.len(), 7);
    assert_eq!(messages[0].role, "system");
    let calls = serde_json::to_value(&messages[2]).unwrap();
    assert_eq!(
        calls,
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "not json"}}
        ]})
    );
    assert_eq!(
        serde_json::to_value(&messages[3]).unwrap(),
        json!({"role": "tool", "content": "18C", "tool_call_id": "call_1"})
    );
}

#[test]
fn system_text_is_merged_or_inserted() {
    let mut with_system = prompt_messages(&[ChatMessage::text(Role::System, "Hi.")], ToolFormat::Generic);
    add_system(&mut with_system, "TOOLS");
    assert_eq!(with_system[0].content, "Hi.\n\nTOOLS");
    let mut without = prompt_messages(&[ChatMessage::text(Role::User, "Q")], ToolFormat::Generic);
    add_system(&mut without, "TOOLS");
    assert_eq!((without[0].role.as_str(), without[0].content.as_str()), ("system", "TOOLS"));
    assert_eq!(without[1].role, "user");
}

// --- Parsing what the model wrote ---

fn parse(text: &str, format: ToolFormat) -> ParsedAssistant {
    parse_tool_output(text, format, IdGenerator::new(1))
}

/// Streams `text` in pieces of `step` characters and rebuilds the reply from the deltas
/// alone, as a client would.
fn stream(text: &str, format: ToolFormat, step: usize) -> ParsedAssistant {
    let mut parser = ToolCallParser::new(format, IdGenerator::new(1));
    let mut deltas: Vec<ChatDelta> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(step.max(1)) {
        deltas.push(parser.push(&piece.iter().collect::<String>()));
    }
    deltas.push(parser.finish());
    let mut content = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    for delta in deltas {
        content.push_str(delta.content.as_deref().unwrap_or(""));
        for call in delta.tool_calls.unwrap_or_default() {
            let function = call.function.expect("every call delta has a function");
            if let Some(id) = call.id {
                assert_eq!(call.index as usize, calls.len(), "calls are announced in order");
                assert_eq!(call.kind, Some(ToolType::Function));
                let name = function.name.expect("the first piece names the call");
                calls.push(ToolCall::function(id, name, function.arguments.unwrap_or_default()));
            } else {
                assert!(function.name.is_none());
                calls[call.index as usize].function.arguments.push_str(&function.arguments.unwrap_or_default());
            }
        }
    }
    let rebuilt = ParsedAssistant { content: (!content.is_empty()).then_some(content), tool_calls: calls };
    assert_eq!(rebuilt, parser.result(), "deltas add up to the parser's result");
    rebuilt
}

/// Parses `text` whole and streamed in several piece sizes; all must agree.
fn parse_all_ways(text: &str, format: ToolFormat) -> ParsedAssistant {
    let whole = parse(text, format);
    for step in [1, 2, 3, 7, 1000] {
        assert_eq!(stream(text, format, step), whole, "step {step}: {text:?}");
    }
    whole
}

fn call(id_index: usize, name: &str, arguments: &str) -> ToolCall {
    let mut ids = IdGenerator::new(1);
    let id = (0..=id_index).map(|_| ids.next_id("call_")).last().unwrap();
    ToolCall::function(id, name, arguments)
}

#[test]
fn generic_tool_calls() {
    let text = r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]}"#;
    let parsed = parse_all_ways(text, ToolFormat::Generic);
    assert_eq!(parsed.content, None);
    assert_eq!(parsed.tool_calls, [call(0, "get_weather", r#"{"city": "Paris"}"#), call(1, "get_time", "{}")]);
    assert!(parsed.tool_calls[0].id.starts_with("call_"));
    // llama.cpp's single-call form, and arguments written as a string.
    let single = parse_all_ways(r#"{"tool_call": {"name": "f", "arguments": "{\"x\": 1}"}}"#, ToolFormat::Generic);
    assert_eq!(single.tool_calls, [call(0, "f", r#"{"x": 1}"#)]);
    // Arguments before the name: the call is announced when the name arrives.
    let late = parse_all_ways(r#"{"tool_calls": [{"arguments": {"a": [1, 2]}, "name": "g"}]}"#, ToolFormat::Generic);
    assert_eq!(late.tool_calls, [call(0, "g", r#"{"a": [1, 2]}"#)]);
}

#[test]
fn generic_response_is_content() {
    let parsed = parse_all_ways(r#"  {"response": "Hello \"you\"\n\u00e9\ud83d\ude00"}  "#, ToolFormat::Generic);
    assert_eq!(parsed, ParsedAssistant { content: Some("Hello \"you\"\né😀".into()), tool_calls: vec![] });
    // A response under a JSON schema is an object: its text is the content.
    let object = parse_all_ways(r#"{"response": {"answer": 42}}"#, ToolFormat::Generic);
    assert_eq!(object.content.as_deref(), Some(r#"{"answer": 42}"#));
    let empty = parse_all_ways(r#"{"response": ""}"#, ToolFormat::Generic);
    assert_eq!(empty, ParsedAssistant::default());
}

#[test]
fn generic_output_that_ignores_the_format_is_content() {
    for text in ["Just text.", "  {not json at all", r#"{"answer": 42}"#, "[1, 2]", r#"{"answer": "#] {
        let parsed = parse_all_ways(text, ToolFormat::Generic);
        assert_eq!(parsed, ParsedAssistant { content: Some(text.to_string()), tool_calls: vec![] }, "{text:?}");
    }
    assert_eq!(parse_all_ways("", ToolFormat::Generic), ParsedAssistant::default());
    assert_eq!(parse_all_ways(" \n ", ToolFormat::Generic), ParsedAssistant::default());
}

#[test]
fn generic_output_cut_off_keeps_what_was_written() {
    let parsed =
        parse_all_ways(r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Par"#, ToolFormat::Generic);
    assert_eq!(parsed.tool_calls, [call(0, "get_weather", r#"{"city": "Par"#)]);
    let parsed = parse_all_ways(r#"{"tool_calls": [{"name": "get_wea"#, ToolFormat::Generic);
    assert_eq!(parsed, ParsedAssistant::default());
    let parsed = parse_all_ways(r#"{"response": "Hel\u00"#, ToolFormat::Generic);
    assert_eq!(parsed.content.as_deref(), Some("Hel"));
    // Broken after a call was announced: what was sent stands, the rest is dropped.
    let parsed = parse_all_ways(r#"{"tool_calls": [{"name": "f", "arguments": {"a": 1}} oops"#, ToolFormat::Generic);
    assert_eq!(parsed.tool_calls, [call(0, "f", r#"{"a": 1}"#)]);
}

#[test]
fn hermes_calls_after_text() {
    let text =
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n\
                <tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    let parsed = parse_all_ways(text, ToolFormat::Hermes);
    assert_eq!(parsed.content.as_deref(), Some("Let me check."));
    assert_eq!(parsed.tool_calls, [call(0, "get_weather", r#"{"city": "Paris"}"#), call(1, "get_time", "{}")]);
}

#[test]
fn hermes_plain_text_and_near_tags() {
    let parsed = parse_all_ways("\n  Hello <b>there</b>\n\n", ToolFormat::Hermes);
    assert_eq!(parsed.content.as_deref(), Some("Hello <b>there</b>"));
    let parsed = parse_all_ways("a < b, see <tool", ToolFormat::Hermes);
    assert_eq!(parsed.content.as_deref(), Some("a < b, see <tool"));
    // Not JSON inside the tag: the model's text is shown as it is.
    let parsed = parse_all_ways("x <tool_call> nope </tool_call> y", ToolFormat::Hermes);
    assert_eq!(
        parsed,
        ParsedAssistant { content: Some("x <tool_call> nope </tool_call> y".into()), tool_calls: vec![] }
    );
    // Cut off before the name.
    let parsed = parse_all_ways("x\n<tool_call>\n{\"na", ToolFormat::Hermes);
    assert_eq!(parsed.content.as_deref(), Some("x\n<tool_call>\n{\"na"));
    assert!(parsed.tool_calls.is_empty());
    // No closing tag: text after the call is content.
    let parsed = parse_all_ways("<tool_call>{\"name\": \"f\", \"arguments\": {}} and more", ToolFormat::Hermes);
    assert_eq!(parsed.tool_calls, [call(0, "f", "{}")]);
    assert_eq!(parsed.content.as_deref(), Some("and more"));
}

#[test]
fn streamed_deltas_follow_openai_order() {
    let mut parser = ToolCallParser::new(ToolFormat::Generic, IdGenerator::new(9));
    assert!(parser.push(r#"{"tool_calls": [{"name": "get_"#).is_empty());
    let first = parser.push(r#"weather", "argu"#);
    let calls = first.tool_calls.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].function.as_ref().unwrap().name.as_deref(), Some("get_weather"));
    assert!(calls[0].id.as_deref().unwrap().starts_with("call_"));
    let args = parser.push(r#"ments": {"city""#).tool_calls.unwrap();
    assert_eq!(args[0].id, None);
    assert_eq!(args[0].function.as_ref().unwrap().arguments.as_deref(), Some(r#"{"city""#));
    assert!(parser.finish().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_in_any_pieces_parses_consistently(text in "[ a-z{}\\[\\]\":,\\\\<>/_0-9\n]{0,80}", step in 1usize..6) {
        for format in [ToolFormat::Generic, ToolFormat::Hermes] {
            // Consistency of deltas and result is asserted inside `stream`.
            stream(&text, format, step);
        }
    }

    #[test]
    fn envelopes_stream_like_they_parse(
        city in "[a-zA-Z \"\\\\é😀]{0,12}",
        reply in "[a-zA-Z \"\\\\\n]{0,12}",
        cut in 0usize..200,
        step in 1usize..5,
    ) {
        let arguments = json!({"city": city}).to_string();
        let texts = [
            format!(r#"{{"tool_calls": [{{"name": "get_weather", "arguments": {arguments}}}]}}"#),
            json!({"response": reply}).to_string(),
            format!("{reply}<tool_call>{{\"name\": \"get_weather\", \"arguments\": {arguments}}}</tool_call>"),
        ];
        for (i, text) in texts.iter().enumerate() {
            let format = if i == 2 { ToolFormat::Hermes } else { ToolFormat::Generic };
            let whole = parse(text, format);
            prop_assert_eq!(&stream(text, format, step), &whole);
            if i == 0 {
                prop_assert_eq!(&whole.tool_calls[0].function.arguments, &arguments);
            }
            // Any prefix (a reply cut off by max_tokens) parses without panicking.
            let mut end = cut.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            stream(&text[..end], format, step);
        }
    }
}
