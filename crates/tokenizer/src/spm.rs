//! SentencePiece-style BPE over token scores, as llama.cpp's `llm_tokenizer_spm` (Llama 1/2,
//! Gemma). Text is split into UTF-8 characters; the adjacent pair whose concatenation is the
//! highest-scoring token merges first (ties: leftmost); characters that end up in no token become
//! `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

pub(crate) struct Spm<'v> {
    pub token_ids: &'v HashMap<String, u32>,
    pub scores: &'v [f32],
    /// Token for each byte value, for characters no token covers.
    pub byte_tokens: &'v [Option<u32>; 256],
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

impl Spm<'_> {
    /// Appends the tokens of `text`, whose spaces the caller has already escaped to `▁`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol { start, len: c.len_utf8(), prev: i.wrapping_sub(1), next: i + 1 })
            .collect();
        let n = symbols.len();
        let mut queue = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: usize, right: usize| {
            if left >= n || right >= n {
                return;
            }
            let size = symbols[left].len + symbols[right].len;
            let start = symbols[left].start;
            if let Some(&id) = self.token_ids.get(&text[start..start + size]) {
                let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
                queue.push(Bigram { score, left, right, size });
            }
        };
        for i in 1..n {
            push(&mut queue, &symbols, i - 1, i);
        }
        while let Some(Bigram { left, right, size, .. }) = queue.pop() {
            let (l, r) = (symbols[left], symbols[right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != size {
                continue;
            }
            symbols[left].len += r.len;
            symbols[left].next = r.next;
            symbols[right].len = 0;
            if r.next < n {
                symbols[r.next].prev = left;
            }
            push(&mut queue, &symbols, l.prev, left);
            push(&mut queue, &symbols, left, r.next);
        }

        // Merged symbols are always tokens; a leftover character may not be.
        let mut i = 0;
        while i < n {
            let sym = symbols[i];
            let piece = &text[sym.start..sym.start + sym.len];
            match self.token_ids.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| self.byte_tokens[b as usize])),
            }
            i = sym.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_score_merges_first_and_bytes_cover_the_rest() {
        let tokens = ["▁", "a", "b", "ab", "▁a", "<0xC3>", "<0xA9>"];
        let ids: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, 0.0, 0.0];
        let mut byte_tokens = [None; 256];
        byte_tokens[0xC3] = Some(5);
        byte_tokens[0xA9] = Some(6);
        let spm = Spm { token_ids: &ids, scores: &scores, byte_tokens: &byte_tokens };
        let mut out = Vec::new();
        spm.encode("▁abé", &mut out);
        // "ab" (-1) beats "▁a" (-2); "é" has no token and becomes two byte tokens.
        assert_eq!(out, [0, 3, 5, 6]);
    }
}
