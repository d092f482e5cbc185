//! Cutting special tokens out of text before the tokenizer proper sees it, as llama.cpp's
//! `tokenizer_st_partition`.
//!
//! Special tokens are tried longest first; each one splits every remaining text fragment at all of
//! its occurrences. That order, not leftmost-longest matching, decides overlaps, so it is kept.
//! An Aho-Corasick scan of the whole text first picks out the few tokens that occur at all, which
//! keeps vocabularies with thousands of special tokens (Gemma) fast.

use aho_corasick::AhoCorasick;

/// One piece of partitioned text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// A byte range of the input still to be tokenized.
    Text(usize, usize),
    Token(u32),
}

/// A special token as the partitioner sees it.
pub(crate) struct Special {
    pub id: u32,
    pub text: String,
    /// Control and unknown tokens are only cut out when the caller asks for special parsing;
    /// user-defined tokens always are.
    pub needs_parse_special: bool,
    /// Whitespace before (lstrip) or after (rstrip) the token is dropped.
    pub lstrip: bool,
    pub rstrip: bool,
}

pub(crate) struct Partitioner {
    /// Longest text first; equal lengths by id.
    specials: Vec<Special>,
    matcher: Option<AhoCorasick>,
}

impl Partitioner {
    pub fn new(mut specials: Vec<Special>) -> Partitioner {
        specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        // Building fails only for absurdly large pattern sets; then every token is simply tried.
        let matcher = AhoCorasick::new(specials.iter().map(|s| s.text.as_bytes())).ok();
        Partitioner { specials, matcher }
    }

    pub fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = vec![Fragment::Text(0, text.len())];
        if text.is_empty() {
            return frags;
        }
        let mut present = vec![self.matcher.is_none(); self.specials.len()];
        if let Some(matcher) = &self.matcher {
            for m in matcher.find_overlapping_iter(text) {
                present[m.pattern().as_usize()] = true;
            }
        }
        let bytes = text.as_bytes();
        for (special, _) in self.specials.iter().zip(&present).filter(|(_, &p)| p) {
            if special.needs_parse_special && !parse_special {
                continue;
            }
            let pat = special.text.as_str();
            let mut next = Vec::with_capacity(frags.len() + 2);
            for frag in frags {
                let Fragment::Text(mut start, end) = frag else {
                    next.push(frag);
                    continue;
                };
                while let Some(found) = text[start..end].find(pat) {
                    let at = start + found;
                    let mut left_end = at;
                    if special.lstrip {
                        while left_end > start && is_c_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > start {
                        next.push(Fragment::Text(start, left_end));
                    }
                    next.push(Fragment::Token(special.id));
                    start = at + pat.len();
                    if special.rstrip {
                        while start < end && is_c_space(bytes[start]) {
                            start += 1;
                        }
                    }
                }
                if start < end {
                    next.push(Fragment::Text(start, end));
                }
            }
            frags = next;
        }
        frags
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp uses for lstrip/rstrip.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special(id: u32, text: &str, needs_parse_special: bool) -> Special {
        Special { id, text: text.into(), needs_parse_special, lstrip: false, rstrip: false }
    }

    #[test]
    fn longest_token_wins_even_when_it_starts_later() {
        let p = Partitioner::new(vec![special(1, "xab", true), special(2, "abcd", true)]);
        assert_eq!(p.partition("xabcd", true), [Fragment::Text(0, 1), Fragment::Token(2)]);
    }

    #[test]
    fn control_tokens_need_parse_special_user_tokens_do_not() {
        let p = Partitioner::new(vec![special(1, "<c>", true), special(2, "<u>", false)]);
        let text = "a<c>b<u>";
        assert_eq!(p.partition(text, false), [Fragment::Text(0, 5), Fragment::Token(2)]);
        assert_eq!(
            p.partition(text, true),
            [Fragment::Text(0, 1), Fragment::Token(1), Fragment::Text(4, 5), Fragment::Token(2)]
        );
    }

    #[test]
    fn rstrip_drops_following_whitespace() {
        let mut s = special(1, "<s>", true);
        s.rstrip = true;
        let p = Partitioner::new(vec![s]);
        assert_eq!(p.partition("<s>  hi", true), [Fragment::Token(1), Fragment::Text(5, 7)]);
    }
}
