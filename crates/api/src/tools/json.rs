//! A scanner for a JSON value that may be cut off at any point (a model still writing it):
//! it returns what has been written so far with the byte span of every value, so that the
//! tool-call parser can stream string contents and raw argument text as they grow.
//! Everything it returns for a prefix is a prefix of what it returns for a longer text.

/// A JSON value, possibly incomplete.
#[derive(Debug, PartialEq)]
pub(crate) struct Spanned {
    pub node: Node,
    /// Byte range in the scanned text; an incomplete value runs to the end of the text.
    pub start: usize,
    pub end: usize,
    pub complete: bool,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Node {
    /// Members whose key is complete, in order; the value is `None` until it begins.
    Object(Vec<(String, Option<Spanned>)>),
    Array(Vec<Spanned>),
    /// The decoded text so far (an escape sequence cut off at the end is left out).
    Str(String),
    /// A number, `true`, `false` or `null`.
    Scalar,
}

/// The text is not JSON (or nests deeper than [`MAX_DEPTH`]) from this byte on: the text
/// before it is a valid beginning.
#[derive(Debug, PartialEq)]
pub(crate) struct Invalid(pub usize);

/// Deeper nesting is treated as invalid output rather than risking the stack.
const MAX_DEPTH: usize = 128;

/// Scans one JSON value starting at byte `start` of `text` (after optional whitespace).
/// `Ok(None)`: only whitespace so far.
pub(crate) fn scan(text: &str, start: usize) -> Result<Option<Spanned>, Invalid> {
    Scanner { text, bytes: text.as_bytes(), pos: start }.value(0)
}

/// Like [`scan`], but on invalid text returns what the valid beginning holds, and `true`.
/// So the result for a text is the same whether it arrived whole or in pieces.
pub(crate) fn scan_prefix(text: &str, start: usize) -> (Option<Spanned>, bool) {
    match scan(text, start) {
        Ok(value) => (value, false),
        Err(Invalid(at)) => (text.get(..at).and_then(|valid| scan(valid, start).ok().flatten()), true),
    }
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.bytes.len() && matches!(self.bytes[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn incomplete(&self, node: Node, start: usize) -> Spanned {
        Spanned { node, start, end: self.bytes.len(), complete: false }
    }

    fn complete(&self, node: Node, start: usize) -> Spanned {
        Spanned { node, start, end: self.pos, complete: true }
    }

    fn value(&mut self, depth: usize) -> Result<Option<Spanned>, Invalid> {
        self.skip_ws();
        let Some(byte) = self.peek() else { return Ok(None) };
        if depth > MAX_DEPTH {
            return Err(Invalid(self.pos));
        }
        let start = self.pos;
        let value = match byte {
            b'{' => self.object(depth)?,
            b'[' => self.array(depth)?,
            b'"' => {
                let (text, complete) = self.string()?;
                if complete {
                    self.complete(Node::Str(text), start)
                } else {
                    self.incomplete(Node::Str(text), start)
                }
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            _ => return Err(Invalid(self.pos)),
        };
        Ok(Some(value))
    }

    fn object(&mut self, depth: usize) -> Result<Spanned, Invalid> {
        let start = self.pos;
        self.pos += 1;
        let mut members = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Ok(self.incomplete(Node::Object(members), start)),
                Some(b'}') if members.is_empty() => {
                    self.pos += 1;
                    return Ok(self.complete(Node::Object(members), start));
                }
                Some(b'"') => {}
                Some(_) => return Err(Invalid(self.pos)),
            }
            let (key, key_complete) = self.string()?;
            if !key_complete {
                return Ok(self.incomplete(Node::Object(members), start));
            }
            self.skip_ws();
            match self.peek() {
                None => {
                    members.push((key, None));
                    return Ok(self.incomplete(Node::Object(members), start));
                }
                Some(b':') => self.pos += 1,
                Some(_) => return Err(Invalid(self.pos)),
            }
            let value = self.value(depth + 1)?;
            let value_complete = value.as_ref().is_some_and(|v| v.complete);
            members.push((key, value));
            if !value_complete {
                return Ok(self.incomplete(Node::Object(members), start));
            }
            self.skip_ws();
            match self.peek() {
                None => return Ok(self.incomplete(Node::Object(members), start)),
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek().is_some_and(|b| b != b'"') {
                        return Err(Invalid(self.pos));
                    }
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(self.complete(Node::Object(members), start));
                }
                Some(_) => return Err(Invalid(self.pos)),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Spanned, Invalid> {
        let start = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(self.complete(Node::Array(items), start));
        }
        loop {
            let Some(item) = self.value(depth + 1)? else {
                return Ok(self.incomplete(Node::Array(items), start));
            };
            let item_complete = item.complete;
            items.push(item);
            if !item_complete {
                return Ok(self.incomplete(Node::Array(items), start));
            }
            self.skip_ws();
            match self.peek() {
                None => return Ok(self.incomplete(Node::Array(items), start)),
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        return Err(Invalid(self.pos));
                    }
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(self.complete(Node::Array(items), start));
                }
                Some(_) => return Err(Invalid(self.pos)),
            }
        }
    }

    /// At a `"`: the decoded string and whether its closing quote was seen. Raw control
    /// characters are accepted (models write them; the text is only being read).
    fn string(&mut self) -> Result<(String, bool), Invalid> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            while self.pos < self.bytes.len() && !matches!(self.bytes[self.pos], b'"' | b'\\') {
                self.pos += 1;
            }
            // Quotes and backslashes are ASCII, so these are character boundaries.
            out.push_str(&self.text[run_start..self.pos]);
            match self.peek() {
                None => return Ok((out, false)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok((out, true));
                }
                _ => {}
            }
            let Some(&escape) = self.bytes.get(self.pos + 1) else {
                self.pos = self.bytes.len();
                return Ok((out, false));
            };
            let simple = match escape {
                b'"' => Some('"'),
                b'\\' => Some('\\'),
                b'/' => Some('/'),
                b'b' => Some('\u{8}'),
                b'f' => Some('\u{c}'),
                b'n' => Some('\n'),
                b'r' => Some('\r'),
                b't' => Some('\t'),
                b'u' => None,
                _ => return Err(Invalid(self.pos + 1)),
            };
            if let Some(c) = simple {
                out.push(c);
                self.pos += 2;
                continue;
            }
            let Some(unit) = self.hex4(self.pos + 2)? else {
                self.pos = self.bytes.len();
                return Ok((out, false));
            };
            if (0xD800..0xDC00).contains(&unit) {
                // A high surrogate pairs with a following \uDC00-\uDFFF.
                if self.bytes.len() < self.pos + 12 && is_cut_unicode_escape(&self.bytes[self.pos + 6..]) {
                    self.pos = self.bytes.len();
                    return Ok((out, false));
                }
                if self.bytes.get(self.pos + 6..self.pos + 8) == Some(b"\\u") {
                    if let Some(low) = self.hex4(self.pos + 8)? {
                        if (0xDC00..0xE000).contains(&low) {
                            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                            self.pos += 12;
                            continue;
                        }
                    }
                }
                out.push('\u{FFFD}');
            } else {
                out.push(char::from_u32(unit).unwrap_or('\u{FFFD}'));
            }
            self.pos += 6;
        }
    }

    /// Four hex digits at `at`; `None` when the text ends before them.
    fn hex4(&self, at: usize) -> Result<Option<u32>, Invalid> {
        let digits = &self.bytes[at.min(self.bytes.len())..self.bytes.len().min(at + 4)];
        if let Some(bad) = digits.iter().position(|b| !b.is_ascii_hexdigit()) {
            return Err(Invalid(at + bad));
        }
        if digits.len() < 4 {
            return Ok(None);
        }
        Ok(Some(digits.iter().fold(0, |n, &d| n * 16 + (d as char).to_digit(16).unwrap_or(0))))
    }

    fn number(&mut self) -> Result<Spanned, Invalid> {
        let start = self.pos;
        while self.pos < self.bytes.len()
            && matches!(self.bytes[self.pos], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        {
            self.pos += 1;
        }
        if self.pos == self.bytes.len() {
            return Ok(self.incomplete(Node::Scalar, start));
        }
        // The whole token is known: check it is a number.
        let token = &self.text[start..self.pos];
        if token.parse::<f64>().is_err() || token.starts_with('+') || token.starts_with(['.', 'e', 'E']) {
            return Err(Invalid(self.pos));
        }
        Ok(self.complete(Node::Scalar, start))
    }

    fn literal(&mut self, word: &[u8]) -> Result<Spanned, Invalid> {
        let start = self.pos;
        let available = &self.bytes[start..self.bytes.len().min(start + word.len())];
        if let Some(bad) = available.iter().zip(word).position(|(a, w)| a != w) {
            return Err(Invalid(start + bad));
        }
        self.pos = start + available.len();
        if available.len() < word.len() {
            return Ok(self.incomplete(Node::Scalar, start));
        }
        Ok(self.complete(Node::Scalar, start))
    }
}

/// Whether `tail` could be the start of a `\uXXXX` escape that the text cuts off.
fn is_cut_unicode_escape(tail: &[u8]) -> bool {
    tail.len() < 6
        && tail.iter().enumerate().all(|(i, &b)| match i {
            0 => b == b'\\',
            1 => b == b'u',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_of(text: &str) -> (String, bool) {
        match scan(text, 0).unwrap().unwrap() {
            Spanned { node: Node::Str(s), complete, .. } => (s, complete),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strings_decode_and_stop_before_cut_escapes() {
        assert_eq!(string_of(r#""a\nb""#), ("a\nb".into(), true));
        assert_eq!(string_of(r#""a\"#), ("a".into(), false));
        assert_eq!(string_of(r#""a\u00"#), ("a".into(), false));
        assert_eq!(string_of(r#""a\u00e9""#), ("aé".into(), true));
        assert_eq!(string_of(r#""\ud83d"#), ("".into(), false));
        assert_eq!(string_of(r#""\ud83d\u"#), ("".into(), false));
        assert_eq!(string_of(r#""\ud83d\ude00!""#), ("😀!".into(), true));
        assert_eq!(string_of(r#""\ud83dx""#), ("\u{FFFD}x".into(), true));
        assert_eq!(string_of("\"héllo"), ("héllo".into(), false));
        assert_eq!(scan(r#""\x""#, 0), Err(Invalid(2)));
    }

    #[test]
    fn objects_report_members_and_spans() {
        let text = r#" {"a": [1, true], "b": {"c": "d"}} "#;
        let value = scan(text, 0).unwrap().unwrap();
        assert!(value.complete);
        assert_eq!(&text[value.start..value.end], r#"{"a": [1, true], "b": {"c": "d"}}"#);
        let Node::Object(members) = value.node else { panic!() };
        let b = members[1].1.as_ref().unwrap();
        assert_eq!(&text[b.start..b.end], r#"{"c": "d"}"#);
    }

    #[test]
    fn every_prefix_scans_without_error() {
        let text =
            r#"{"tool_calls": [{"name": "f\u00e9", "arguments": {"x": -1.5e3, "y": [null, false], "z": "q\"\\"}}]}"#;
        for end in 0..=text.len() {
            if !text.is_char_boundary(end) {
                continue;
            }
            let result = scan(&text[..end], 0);
            assert!(result.is_ok(), "prefix {:?}", &text[..end]);
            if end == text.len() {
                assert!(result.unwrap().unwrap().complete);
            } else if let Ok(Some(v)) = result {
                assert!(!v.complete, "prefix {:?}", &text[..end]);
            }
        }
    }

    #[test]
    fn invalid_json_is_detected() {
        let cases = [
            (r#"{"a" 1}"#, 5),
            (r#"{"a": 1,}"#, 8),
            ("[1,]", 3),
            ("[1 2]", 3),
            ("{a: 1}", 1),
            ("tx", 1),
            ("nul!", 3),
            ("hello", 0),
            ("{\"a\": +1}", 6),
            ("[1e]", 3),
            (r#""\u12x4""#, 5),
        ];
        for (text, at) in cases {
            assert_eq!(scan(text, 0), Err(Invalid(at)), "{text}");
        }
        assert!(scan(&"[".repeat(1000), 0).is_err());
        assert_eq!(scan("   ", 0), Ok(None));
    }

    #[test]
    fn invalid_text_yields_its_valid_beginning() {
        let (value, invalid) = scan_prefix(r#"{"a": [1, 2] x"#, 0);
        assert!(invalid);
        let value = value.unwrap();
        assert!(!value.complete);
        let Node::Object(members) = value.node else { panic!() };
        assert_eq!(members[0].0, "a");
        assert!(members[0].1.as_ref().unwrap().complete);
        assert_eq!(scan_prefix("x", 0), (None, true));
    }
}
