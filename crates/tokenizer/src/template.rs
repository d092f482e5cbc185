//! Chat templates: the model's own Jinja template rendered with minijinja the way Hugging Face
//! `transformers` renders it (`apply_chat_template`), so prompts match what the model was trained
//! on.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{context, Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::TokenizerError;

const NAME: &str = "chat";

/// One chat turn. Templates that need more (tool calls, images) take any serializable message
/// through [`ChatTemplate::render`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("bos_token", &self.bos_token).field("eos_token", &self.eos_token).finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the texts the template sees under those names.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, TokenizerError> {
        let mut env = Environment::new();
        // transformers' sandbox settings: block tags eat their newline and leading indentation.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string())?;
        Ok(ChatTemplate { env, bos_token: bos_token.to_string(), eos_token: eos_token.to_string() })
    }

    /// Renders `messages` (each with at least `role` and `content`); with `add_generation_prompt`
    /// the prompt ends with the header of the assistant's turn.
    pub fn render<M: Serialize>(&self, messages: &[M], add_generation_prompt: bool) -> Result<String, TokenizerError> {
        self.render_with_tools::<M, ()>(messages, None, add_generation_prompt)
    }

    /// As [`ChatTemplate::render`], also giving the template `tools` (OpenAI-format function
    /// definitions) for templates that describe them to the model themselves.
    pub fn render_with_tools<M: Serialize, T: Serialize>(
        &self,
        messages: &[M],
        tools: Option<&[T]>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self.env.get_template(NAME)?;
        Ok(template.render(context! {
            messages => Value::from_serialize(messages),
            tools => tools.map(Value::from_serialize),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })?)
    }

    /// The template for models that ship none, as llama.cpp chooses: the family's own turn
    /// markers where the vocabulary has them (Gemma), ChatML otherwise. Returns its name and
    /// source.
    pub fn builtin_for(architecture: &str) -> (&'static str, &'static str) {
        const GEMMA: &str = "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == \
            'assistant' else m['role'] %}{{ '<start_of_turn>' + role + '\n' + m['content'] | trim + \
            '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";
        const CHATML: &str =
            "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}\
            {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        if architecture.starts_with("gemma") {
            ("gemma", GEMMA)
        } else {
            ("chatml", CHATML)
        }
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current UTC time (the host's time zone is not consulted).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    strftime(&format, secs as i64)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// The common `strftime` conversions for a Unix time in UTC; others are copied through.
fn strftime(format: &str, unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[month as usize - 1] + day + i64::from(leap && month > 2);
    let month_name = MONTHS[month as usize - 1];

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('B') => out.push_str(month_name),
            Some('b') | Some('h') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson` as transformers defines it: Python's `json.dumps` with `ensure_ascii=False`, so
/// non-ASCII text and `<`, `>`, `&` stay as they are (minijinja's own filter escapes them for HTML).
fn tojson(value: Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let style =
        JsonStyle { indent, sort_keys: sort_keys.unwrap_or(false), ensure_ascii: ensure_ascii.unwrap_or(false) };
    let mut out = String::new();
    style.write(&value, 0, &mut out)?;
    Ok(out)
}

struct JsonStyle {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl JsonStyle {
    fn write(&self, v: &Value, depth: usize, out: &mut String) -> Result<(), Error> {
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&python_number(v)),
            ValueKind::String => self.string(v.as_str().unwrap_or_default(), out),
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                let items = keys.into_iter().map(|k| {
                    let item = v.get_item(&k)?;
                    let mut s = String::new();
                    match k.as_str() {
                        Some(text) => self.string(text, &mut s),
                        None => self.string(&k.to_string(), &mut s),
                    }
                    s.push_str(": ");
                    self.write(&item, depth + 1, &mut s)?;
                    Ok(s)
                });
                self.container(('{', '}'), items.collect::<Result<Vec<_>, Error>>()?, depth, out);
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items = v.try_iter()?.map(|item| {
                    let mut s = String::new();
                    self.write(&item, depth + 1, &mut s)?;
                    Ok(s)
                });
                self.container(('[', ']'), items.collect::<Result<Vec<_>, Error>>()?, depth, out);
            }
            _ => self.string(&v.to_string(), out),
        }
        Ok(())
    }

    fn container(&self, (open, close): (char, char), items: Vec<String>, depth: usize, out: &mut String) {
        out.push(open);
        if !items.is_empty() {
            match self.indent {
                None => out.push_str(&items.join(", ")),
                Some(n) => {
                    let inner = format!("\n{}", " ".repeat(n * (depth + 1)));
                    out.push_str(&inner);
                    out.push_str(&items.join(&format!(",{inner}")));
                    out.push('\n');
                    out.push_str(&" ".repeat(n * depth));
                }
            }
        }
        out.push(close);
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0C}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// A number as Python's `repr` writes it (`1.0`, `1e-05`, `1e+16`).
fn python_number(v: &Value) -> String {
    if let Some(i) = v.as_i64() {
        return i.to_string();
    }
    let Ok(f) = f64::try_from(v.clone()) else { return v.to_string() };
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, messages: &[ChatMessage], gen: bool) -> String {
        ChatTemplate::new(src, "<s>", "</s>").unwrap().render(messages, gen).unwrap()
    }

    #[test]
    fn python_string_methods_and_hf_globals_work() {
        let src = "{{ bos_token }}{% for m in messages %}{{ m.content.strip().upper() }}{% if m.role.startswith('u') %}!{% endif %}{% endfor %}{% if add_generation_prompt %}>{% endif %}";
        let msgs = [ChatMessage::new("user", "  hi ")];
        assert_eq!(render(src, &msgs, true), "<s>HI!>");
    }

    #[test]
    fn raise_exception_fails_the_render() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        let err = t.render::<ChatMessage>(&[], false).unwrap_err().to_string();
        assert!(err.contains("no system role"), "{err}");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let src = "{{ messages | tojson }}|{{ {'b': [1, 2.5, none, true], 'a': 'é<\"'} | tojson(indent=2) }}";
        let out = render(src, &[ChatMessage::new("user", "x\ny")], false);
        assert_eq!(
            out,
            "[{\"role\": \"user\", \"content\": \"x\\ny\"}]|{\n  \"b\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"a\": \"é<\\\"\"\n}"
        );
    }

    #[test]
    fn strftime_formats_a_known_date() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        assert_eq!(strftime("%d %b %Y %H:%M:%S %A %j %B", 1_709_211_909), "29 Feb 2024 13:05:09 Thursday 060 February");
    }
}
