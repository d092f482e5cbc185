//! Unicode facts the pre-tokenizers need: general category per code point, the White_Space set,
//! and GPT-2's byte-to-character table.
//!
//! Categories come from `regex-syntax`'s Unicode tables, so the hand-written splitters and the
//! regex-based ones agree on what `\p{L}` or `\p{N}` means. Both are pinned to the Unicode version
//! llama.cpp's tables were generated from ([`UNICODE_AGE`]): a character assigned later counts as
//! unassigned, as it does there.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// Characters assigned after this Unicode version are treated as unassigned.
const UNICODE_AGE: &str = r"\p{Age=V15_1}";

/// `class` (a `\p{..}` property) limited to characters assigned by [`UNICODE_AGE`]; valid inside
/// or outside a bracketed class.
pub(crate) fn pinned(class: &str) -> String {
    format!("[{class}&&{UNICODE_AGE}]")
}

/// Rewrites every general-category property in a regex (`\p{L}`, `\p{N}`, ...) to its pinned form.
pub(crate) fn pin_categories(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut rest = pattern;
    while let Some(i) = rest.find(r"\p{") {
        out.push_str(&rest[..i]);
        let Some(close) = rest[i..].find('}') else { break };
        out.push_str(&pinned(&rest[i..i + close + 1]));
        rest = &rest[i + close + 1..];
    }
    out.push_str(rest);
    out
}

/// The general category group of a code point, as the pre-tokenizer regexes see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Category {
    /// Unassigned (`Cn`).
    Undefined,
    Number,
    Letter,
    Separator,
    Mark,
    Punctuation,
    Symbol,
    /// `Cc`, `Cf`, `Co`, `Cs`.
    Control,
}

/// What the splitters ask about one code point. `Flags::default()` stands for "outside the
/// current fragment": no category, not whitespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub category: Option<Category>,
    pub whitespace: bool,
}

impl Flags {
    pub fn is_letter(self) -> bool {
        self.category == Some(Category::Letter)
    }

    pub fn is_mark(self) -> bool {
        self.category == Some(Category::Mark)
    }

    pub fn is_number(self) -> bool {
        self.category == Some(Category::Number)
    }

    /// True for any code point inside the fragment (llama.cpp tests its flag word for non-zero).
    pub fn is_some(self) -> bool {
        self.category.is_some()
    }
}

/// Unicode White_Space, the set both `\s` and llama.cpp's splitters use.
pub(crate) fn is_whitespace(c: char) -> bool {
    matches!(
        c as u32,
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    )
}

pub(crate) fn flags(c: char) -> Flags {
    Flags { category: Some(category(c)), whitespace: is_whitespace(c) }
}

pub(crate) fn category(c: char) -> Category {
    let table = category_table();
    let cp = c as u32;
    // Ranges are sorted and disjoint; find the last one starting at or before `cp`.
    let idx = table.partition_point(|&(start, _, _)| start <= cp);
    match idx.checked_sub(1).map(|i| table[i]) {
        Some((_, end, cat)) if cp <= end => cat,
        _ => Category::Undefined,
    }
}

/// Sorted `(first, last, category)` ranges covering every assigned code point.
fn category_table() -> &'static [(u32, u32, Category)] {
    static TABLE: OnceLock<Vec<(u32, u32, Category)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let groups = [
            (r"\p{N}", Category::Number),
            (r"\p{L}", Category::Letter),
            (r"\p{Z}", Category::Separator),
            (r"\p{M}", Category::Mark),
            (r"\p{P}", Category::Punctuation),
            (r"\p{S}", Category::Symbol),
            // Surrogates (`Cs`) cannot occur in a `char`.
            (r"\p{Cc}", Category::Control),
            (r"\p{Cf}", Category::Control),
            (r"\p{Co}", Category::Control),
        ];
        let mut ranges = Vec::new();
        for (pattern, cat) in groups {
            // The patterns are constants known to parse; were one rejected, its code points would
            // read as unassigned rather than panic.
            let Ok(hir) = regex_syntax::Parser::new().parse(&pinned(pattern)) else {
                continue;
            };
            if let HirKind::Class(Class::Unicode(class)) = hir.kind() {
                ranges.extend(class.ranges().iter().map(|r| (r.start() as u32, r.end() as u32, cat)));
            }
        }
        ranges.sort_unstable_by_key(|&(start, _, _)| start);
        ranges
    })
}

/// GPT-2's reversible map from bytes to printable characters, used by byte-level BPE vocabularies.
pub(crate) fn byte_to_char(b: u8) -> char {
    byte_tables().0[b as usize]
}

/// The inverse of [`byte_to_char`].
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    byte_tables().1.get(&c).copied()
}

type ByteTables = ([char; 256], std::collections::HashMap<char, u8>);

fn byte_tables() -> &'static ByteTables {
    static TABLES: OnceLock<ByteTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let printable = |b: u8| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut forward = ['\0'; 256];
        let mut next = 256u32;
        for b in 0..=255u8 {
            let cp = if printable(b) {
                b as u32
            } else {
                next += 1;
                next - 1
            };
            forward[b as usize] = char::from_u32(cp).unwrap_or('\u{FFFD}');
        }
        let inverse = forward.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        (forward, inverse)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_of_common_characters() {
        assert_eq!(category('a'), Category::Letter);
        assert_eq!(category('é'), Category::Letter);
        assert_eq!(category('中'), Category::Letter);
        assert_eq!(category('7'), Category::Number);
        assert_eq!(category('½'), Category::Number);
        assert_eq!(category(' '), Category::Separator);
        assert_eq!(category('\u{301}'), Category::Mark);
        assert_eq!(category('!'), Category::Punctuation);
        assert_eq!(category('$'), Category::Symbol);
        assert_eq!(category('🦙'), Category::Symbol);
        assert_eq!(category('\n'), Category::Control);
        assert_eq!(category('\u{E000}'), Category::Control);
        assert_eq!(category('\u{378}'), Category::Undefined);
    }

    #[test]
    fn characters_newer_than_the_pinned_version_are_unassigned() {
        // U+0897 ARABIC PEPET (Unicode 16.0) is a mark today.
        assert_eq!(category('\u{897}'), Category::Undefined);
        assert_eq!(pin_categories(r"a\p{L}+[^\p{N}]"), r"a[\p{L}&&\p{Age=V15_1}]+[^[\p{N}&&\p{Age=V15_1}]]");
        let re = fancy_regex::Regex::new(&pin_categories(r"\p{M}")).unwrap();
        assert!(re.is_match("\u{301}").unwrap());
        assert!(!re.is_match("\u{897}").unwrap());
    }

    #[test]
    fn byte_level_table_round_trips() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
    }
}
