//! Turns what a model writes into content and tool calls, piece by piece as it streams. The
//! non-streaming parse is the streaming one fed everything at once, so both agree.

use super::json::{scan_prefix, Node, Spanned};
use super::{ToolFormat, HERMES_CLOSE, HERMES_OPEN};
use crate::request::ToolCall;
use crate::response::{ChatDelta, FunctionCallDelta, IdGenerator, ToolCallDelta};

/// An assistant reply split into text and tool calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedAssistant {
    /// `None` when the model wrote no text (only calls, or nothing).
    pub content: Option<String>,
    /// In the order written; `arguments` is the JSON text the model wrote for them.
    pub tool_calls: Vec<ToolCall>,
}

/// Parses a whole reply written in `format`. Text that does not follow the format is
/// returned as content; ids come from `ids` (`call_...`).
pub fn parse_tool_output(text: &str, format: ToolFormat, ids: IdGenerator) -> ParsedAssistant {
    let mut parser = ToolCallParser::new(format, ids);
    parser.push(text);
    parser.finish();
    parser.result()
}

/// Incremental parser of a reply in a [`ToolFormat`]: [`push`](Self::push) each piece of
/// generated text and send the returned delta (when not empty); call
/// [`finish`](Self::finish) at the end. The deltas follow OpenAI's stream: a call first
/// appears with `id`, `type` and `name` and empty `arguments`, then argument text arrives in
/// pieces. Generic-format replies stream the decoded `response` string as content.
#[derive(Debug)]
pub struct ToolCallParser {
    ids: IdGenerator,
    buffer: String,
    state: State,
    content: String,
    calls: Vec<ToolCall>,
    /// Generic: a `response`/`tool_calls`/`tool_call` key was seen.
    recognized: bool,
    /// Hermes: text was emitted (leading whitespace is dropped).
    content_started: bool,
    /// Hermes: whitespace held back until more text follows (trailing whitespace is dropped).
    pending_space: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Generic: only whitespace so far.
    Undecided,
    /// Generic: a JSON envelope starting at this byte.
    Envelope(usize),
    /// Everything from here on is content, as written.
    Text,
    /// Hermes: everything from here on is content (the format broke before a call).
    HermesRaw,
    /// Output broke the format after parts of it were sent: the rest is dropped.
    Ignore,
    /// Hermes: text, looking for the next tag from this byte on.
    HermesText(usize),
    /// Hermes: a call's JSON starts at this byte (just after the tag); `call` is its index.
    HermesCall { start: usize, call: usize },
    /// Hermes: a call's JSON ended here; the closing tag should follow.
    HermesAfterCall(usize),
}

impl ToolCallParser {
    pub fn new(format: ToolFormat, ids: IdGenerator) -> ToolCallParser {
        let state = match format {
            ToolFormat::Generic => State::Undecided,
            ToolFormat::Hermes => State::HermesText(0),
        };
        ToolCallParser {
            ids,
            buffer: String::new(),
            state,
            content: String::new(),
            calls: Vec::new(),
            recognized: false,
            content_started: false,
            pending_space: String::new(),
        }
    }

    /// Adds generated text; returns what became known (possibly nothing).
    pub fn push(&mut self, text: &str) -> ChatDelta {
        let mut delta = ChatDelta::default();
        match self.state {
            State::Text => self.emit_content(&mut delta, text),
            State::HermesRaw => self.emit_hermes_text(&mut delta, text),
            State::Ignore => {}
            _ => {
                self.buffer.push_str(text);
                self.advance(&mut delta);
            }
        }
        delta
    }

    /// Ends the reply; returns what was held back (a partial tag, or the whole text when it
    /// turned out not to follow the format).
    pub fn finish(&mut self) -> ChatDelta {
        let mut delta = ChatDelta::default();
        match self.state {
            State::Envelope(_) if !self.recognized => {
                let all = std::mem::take(&mut self.buffer);
                self.emit_content(&mut delta, &all);
            }
            State::HermesText(pos) => {
                let rest = self.buffer[pos..].to_string();
                self.emit_hermes_text(&mut delta, &rest);
            }
            State::HermesCall { start, call } if self.calls.len() == call => {
                // A call cut off before its name: show what the model wrote.
                let rest = self.buffer[start - HERMES_OPEN.len()..].to_string();
                self.emit_hermes_text(&mut delta, &rest);
            }
            _ => {}
        }
        self.state = State::Ignore;
        delta
    }

    /// Everything parsed so far.
    pub fn result(&self) -> ParsedAssistant {
        ParsedAssistant {
            content: (!self.content.is_empty()).then(|| self.content.clone()),
            tool_calls: self.calls.clone(),
        }
    }

    fn advance(&mut self, delta: &mut ChatDelta) {
        loop {
            match self.state {
                State::Undecided => match self.buffer.find(|c: char| !c.is_ascii_whitespace()) {
                    None => return,
                    Some(at) if self.buffer[at..].starts_with('{') => self.state = State::Envelope(at),
                    Some(_) => {
                        let all = std::mem::take(&mut self.buffer);
                        self.emit_content(delta, &all);
                        self.state = State::Text;
                        return;
                    }
                },
                State::Envelope(start) => {
                    self.advance_envelope(delta, start);
                    return;
                }
                State::Text | State::HermesRaw | State::Ignore => return,
                State::HermesText(pos) => {
                    if let Some(found) = self.buffer[pos..].find(HERMES_OPEN) {
                        let text = self.buffer[pos..pos + found].to_string();
                        self.emit_hermes_text(delta, &text);
                        let start = pos + found + HERMES_OPEN.len();
                        self.state = State::HermesCall { start, call: self.calls.len() };
                    } else {
                        let safe = self.buffer.len() - partial_suffix(&self.buffer[pos..], HERMES_OPEN);
                        let text = self.buffer[pos..safe].to_string();
                        self.emit_hermes_text(delta, &text);
                        self.state = State::HermesText(safe);
                        return;
                    }
                }
                State::HermesCall { start, call } => {
                    let (value, invalid) = scan_prefix(&self.buffer, start);
                    let object = value.as_ref().filter(|v| matches!(v.node, Node::Object(_)));
                    if let Some(object) = object {
                        self.advance_call(delta, call, object);
                        if object.complete {
                            self.state = State::HermesAfterCall(object.end);
                            continue;
                        }
                    }
                    if !invalid && (object.is_some() || value.is_none()) {
                        return;
                    }
                    if self.calls.len() > call {
                        self.state = State::Ignore;
                    } else {
                        // Not a call after all: the tag and what follows are text.
                        let rest = self.buffer[start - HERMES_OPEN.len()..].to_string();
                        self.emit_hermes_text(delta, &rest);
                        self.buffer.clear();
                        self.state = State::HermesRaw;
                    }
                    return;
                }
                State::HermesAfterCall(end) => {
                    let rest = &self.buffer[end..];
                    let trimmed = rest.trim_start();
                    let at = end + (rest.len() - trimmed.len());
                    if trimmed.starts_with(HERMES_CLOSE) {
                        self.state = State::HermesText(at + HERMES_CLOSE.len());
                    } else if trimmed.is_empty() || HERMES_CLOSE.starts_with(trimmed) {
                        return;
                    } else {
                        // No closing tag: carry on with the text after the call.
                        self.state = State::HermesText(at);
                    }
                }
            }
        }
    }

    fn advance_envelope(&mut self, delta: &mut ChatDelta, start: usize) {
        let (value, invalid) = scan_prefix(&self.buffer, start);
        if let Some(value) = value {
            self.advance_members(delta, &value);
        }
        if invalid {
            if self.recognized {
                self.state = State::Ignore;
            } else {
                let all = std::mem::take(&mut self.buffer);
                self.emit_content(delta, &all);
                self.state = State::Text;
            }
        }
    }

    fn advance_members(&mut self, delta: &mut ChatDelta, value: &Spanned) {
        // The envelope state begins at a `{`, so this is an object.
        let Node::Object(members) = &value.node else { return };
        for (key, member) in members {
            match (key.as_str(), member) {
                ("response", Some(response)) => {
                    self.recognized = true;
                    let text = self.value_text(response);
                    if text.len() > self.content.len() {
                        let new = text[self.content.len()..].to_string();
                        self.emit_content(delta, &new);
                    }
                }
                ("tool_calls", Some(Spanned { node: Node::Array(items), .. })) => {
                    self.recognized = true;
                    for (index, item) in items.iter().enumerate() {
                        if matches!(item.node, Node::Object(_)) {
                            self.advance_call(delta, index, item);
                        }
                    }
                }
                ("tool_call", Some(item @ Spanned { node: Node::Object(_), .. })) => {
                    self.recognized = true;
                    self.advance_call(delta, 0, item);
                }
                ("response" | "tool_calls" | "tool_call", None) => self.recognized = true,
                _ => {}
            }
        }
    }

    /// Announces call `index` once its name is known (and all calls before it are), then
    /// sends whatever argument text is new.
    fn advance_call(&mut self, delta: &mut ChatDelta, index: usize, call: &Spanned) {
        let Node::Object(members) = &call.node else { return };
        let member = |name: &str| members.iter().find(|(key, _)| key == name).and_then(|(_, v)| v.as_ref());
        if self.calls.len() == index {
            let Some(Spanned { node: Node::Str(name), complete: true, .. }) = member("name") else { return };
            let id = self.ids.next_id("call_");
            self.calls.push(ToolCall::function(id.clone(), name.clone(), ""));
            push_call_delta(
                delta,
                ToolCallDelta {
                    index: index as u32,
                    id: Some(id),
                    kind: Some(crate::request::ToolType::Function),
                    function: Some(FunctionCallDelta { name: Some(name.clone()), arguments: Some(String::new()) }),
                },
            );
        }
        if self.calls.len() <= index {
            return;
        }
        let Some(arguments) = member("arguments") else { return };
        let text = self.value_text(arguments);
        let sent = &mut self.calls[index].function.arguments;
        if text.len() > sent.len() {
            let new = text[sent.len()..].to_string();
            sent.push_str(&new);
            push_call_delta(
                delta,
                ToolCallDelta {
                    index: index as u32,
                    id: None,
                    kind: None,
                    function: Some(FunctionCallDelta { name: None, arguments: Some(new) }),
                },
            );
        }
    }

    /// A string's decoded text; any other value's text as written.
    fn value_text(&self, value: &Spanned) -> String {
        match &value.node {
            Node::Str(text) => text.clone(),
            _ => self.buffer[value.start..value.end].to_string(),
        }
    }

    fn emit_content(&mut self, delta: &mut ChatDelta, text: &str) {
        if text.is_empty() {
            return;
        }
        self.content.push_str(text);
        delta.content.get_or_insert_with(String::new).push_str(text);
    }

    /// Hermes text around calls: leading and trailing whitespace of the whole reply is
    /// dropped (trailing whitespace is held until more text follows).
    fn emit_hermes_text(&mut self, delta: &mut ChatDelta, text: &str) {
        let text = if self.content_started { text } else { text.trim_start() };
        let body = text.trim_end();
        if body.is_empty() {
            if self.content_started {
                self.pending_space.push_str(text);
            }
            return;
        }
        let mut out = std::mem::take(&mut self.pending_space);
        out.push_str(body);
        self.pending_space = text[body.len()..].to_string();
        self.content_started = true;
        self.emit_content(delta, &out);
    }
}

/// Appends a call delta, merging argument text into the previous delta of the same call.
fn push_call_delta(delta: &mut ChatDelta, call: ToolCallDelta) {
    let calls = delta.tool_calls.get_or_insert_with(Vec::new);
    if let (Some(last), None) = (calls.last_mut(), &call.id) {
        if last.index == call.index {
            if let (Some(to), Some(FunctionCallDelta { arguments: Some(more), .. })) =
                (last.function.as_mut(), call.function.as_ref())
            {
                to.arguments.get_or_insert_with(String::new).push_str(more);
                return;
            }
        }
    }
    calls.push(call);
}

/// Length of the longest proper prefix of `tag` that `text` ends with.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len()).rev().find(|&n| text.ends_with(&tag[..n])).unwrap_or(0)
}
