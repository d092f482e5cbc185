//! Byte-pair encoding over GGUF merges, as llama.cpp's `llm_tokenizer_bpe_session`.
//!
//! Within a word, the adjacent pair with the lowest merge rank is merged first (ties: leftmost),
//! through a priority queue over a linked list of symbols. Pairs are looked up by symbol id, not
//! by string, so the inner loop does no string work: every string that can take part in a merge
//! (vocabulary tokens and both halves of every merge) gets an id up front.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::unicode;

const NONE: u32 = u32::MAX;

pub(crate) struct Bpe {
    /// Vocabulary tokens by text (a repeated text keeps its last id, as llama.cpp's map does).
    token_ids: HashMap<String, u32>,
    /// Strings that occur in merges but are not tokens, with ids from `n_vocab` on.
    extra_ids: HashMap<String, u32>,
    n_vocab: u32,
    /// `(left, right)` → `(rank, id of left+right or NONE)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// GPT-2 byte-to-character mapping applied before merging.
    byte_encode: bool,
    ignore_merges: bool,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    id: u32,
    prev: usize,
    next: usize,
}

impl Bpe {
    /// `merges` are "left right" strings in rank order. Without `byte_encode` (Gemma 4) merges run
    /// on the raw UTF-8 text and bytes fall back to `<0xXX>` tokens.
    pub fn new(
        token_ids: HashMap<String, u32>,
        n_vocab: u32,
        merges: &[&str],
        byte_encode: bool,
        ignore_merges: bool,
    ) -> Bpe {
        let mut bpe = Bpe {
            token_ids,
            extra_ids: HashMap::new(),
            n_vocab,
            merges: HashMap::with_capacity(merges.len()),
            byte_encode,
            ignore_merges,
        };
        for (rank, line) in merges.iter().enumerate() {
            // The separator is the first space after the first byte, so a left half may be " ".
            let Some(split) = line.bytes().skip(1).position(|b| b == b' ').map(|i| i + 1) else {
                continue;
            };
            let (left, right) = (&line[..split], &line[split + 1..]);
            let (l, r) = (bpe.intern(left), bpe.intern(right));
            let merged = bpe.lookup(&format!("{left}{right}"));
            // The first occurrence of a pair fixes its rank.
            bpe.merges.entry((l, r)).or_insert((rank as u32, merged));
        }
        bpe
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.token_ids.get(s) {
            return id;
        }
        let next = self.n_vocab + self.extra_ids.len() as u32;
        *self.extra_ids.entry(s.to_string()).or_insert(next)
    }

    fn lookup(&self, s: &str) -> u32 {
        self.token_ids.get(s).or_else(|| self.extra_ids.get(s)).copied().unwrap_or(NONE)
    }

    /// Appends the tokens of one pre-tokenized word.
    pub fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let encoded;
        let word = if self.byte_encode {
            encoded = word.bytes().map(unicode::byte_to_char).collect::<String>();
            encoded.as_str()
        } else {
            word
        };
        if word.is_empty() {
            return;
        }
        // Gemma 4 keeps a run of newlines whole when the vocabulary has it.
        let whole = self.ignore_merges || (!self.byte_encode && word.bytes().all(|b| b == b'\n'));
        if whole {
            if let Some(&id) = self.token_ids.get(word) {
                out.push(id);
                return;
            }
        }

        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        let mut buf = [0u8; 4];
        for (i, (start, c)) in word.char_indices().enumerate() {
            let len = c.len_utf8();
            symbols.push(Symbol {
                start,
                len,
                id: self.lookup(c.encode_utf8(&mut buf)),
                prev: i.wrapping_sub(1),
                next: i + 1,
            });
        }
        let n = symbols.len();
        // Min-heap on (rank, left index); `size` detects entries made stale by earlier merges.
        let mut queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<_>, symbols: &[Symbol], left: usize, right: usize| {
            if left >= n || right >= n {
                return;
            }
            let (l, r) = (symbols[left], symbols[right]);
            if let Some(&(rank, _)) = self.merges.get(&(l.id, r.id)) {
                queue.push(Reverse((rank, left, right, l.len + r.len)));
            }
        };
        for i in 1..n {
            push(&mut queue, &symbols, i - 1, i);
        }
        while let Some(Reverse((_, left, right, size))) = queue.pop() {
            let (l, r) = (symbols[left], symbols[right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != size {
                continue;
            }
            let merged = self.merges.get(&(l.id, r.id)).map_or(NONE, |&(_, m)| m);
            symbols[left].len += r.len;
            symbols[left].id = merged;
            symbols[left].next = r.next;
            symbols[right].len = 0;
            if r.next < n {
                symbols[r.next].prev = left;
            }
            push(&mut queue, &symbols, l.prev, left);
            push(&mut queue, &symbols, left, r.next);
        }

        for sym in symbols.iter().filter(|s| s.len > 0) {
            if sym.id < self.n_vocab {
                out.push(sym.id);
                continue;
            }
            // Not a token: fall back to single-byte tokens of the (encoded) text, skipping bytes
            // that have none, as llama.cpp does.
            let text = &word[sym.start..sym.start + sym.len];
            for b in text.bytes() {
                let byte_token = if self.byte_encode {
                    std::str::from_utf8(&[b]).ok().and_then(|s| self.token_ids.get(s)).copied()
                } else {
                    self.token_ids.get(&format!("<0x{b:02X}>")).copied()
                };
                out.extend(byte_token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Bpe {
        let tokens = ["a", "b", "c", "ab", "bc", "abc", "Ġ", "Ġa"];
        let ids = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        Bpe::new(ids, tokens.len() as u32, &["b c", "a b", "a bc", "Ġ a"], true, false)
    }

    #[test]
    fn lowest_rank_merges_first() {
        let mut out = Vec::new();
        toy().encode_word("abc", &mut out);
        // "b c" (rank 0) beats "a b" (rank 1), then "a bc" completes the word.
        assert_eq!(out, [5]);
        out.clear();
        // "a b" outranks "Ġ a", and "Ġ ab" is no merge.
        toy().encode_word(" ab", &mut out);
        assert_eq!(out, [6, 3]);
    }

    #[test]
    fn unknown_characters_fall_back_to_byte_tokens_or_vanish() {
        let mut out = Vec::new();
        toy().encode_word("xa", &mut out);
        assert_eq!(out, [0]);
    }
}
