//! The bytes each token stands for, and joining them back into text.

/// Every token's bytes, stored end to end.
pub(crate) struct Pieces {
    bytes: Vec<u8>,
    /// `ends[id]` is where token `id`'s bytes end; they start where the previous token's end.
    ends: Vec<usize>,
}

impl Pieces {
    pub fn new<I, P>(pieces: I) -> Pieces
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for p in pieces {
            bytes.extend_from_slice(p.as_ref());
            ends.push(bytes.len());
        }
        Pieces { bytes, ends }
    }

    /// The bytes of token `id`; empty for an id outside the vocabulary.
    pub fn get(&self, id: u32) -> &[u8] {
        let id = id as usize;
        match self.ends.get(id) {
            Some(&end) => {
                let start = if id == 0 { 0 } else { self.ends[id - 1] };
                &self.bytes[start..end]
            }
            None => &[],
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

/// How joined pieces are tidied, as llama.cpp's `llama_detokenize`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DetokenizeRules {
    /// The tokenizer added a space in front of the text (SentencePiece's dummy prefix); drop it
    /// from the first token.
    pub strip_leading_space: bool,
    /// Undo the spaces tokenization put before punctuation and contractions (" ." → ".").
    pub clean_spaces: bool,
}

impl DetokenizeRules {
    pub fn apply(&self, pieces: &Pieces, ids: &[u32]) -> Vec<u8> {
        let mut text = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = pieces.get(id);
            let piece = match piece.split_first() {
                Some((b' ', rest)) if i == 0 && self.strip_leading_space => rest,
                _ => piece,
            };
            text.extend_from_slice(piece);
        }
        if self.clean_spaces {
            clean_spaces(&mut text);
        }
        text
    }
}

/// llama.cpp's three in-place clean-up passes, kept literal (including that each pass reads bytes
/// it may already have overwritten) so the output matches byte for byte.
fn clean_spaces(text: &mut Vec<u8>) {
    // Pass 1: " ?", " !", " .", " ," lose the space.
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);

    // Pass 2: " ' " becomes "'".
    let n = text.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);

    // Pass 3: " 's", " 'm", " 're", " 've" lose the space.
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            let remove = match x1 {
                b's' | b'm' => true,
                _ if i + 2 < n => matches!((x1, text[i + 2]), (b'r', b'e') | (b'v', b'e')),
                _ => false,
            };
            if remove {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_indexed_by_id() {
        let p = Pieces::new(["a", "", "bc"]);
        assert_eq!(p.get(0), b"a");
        assert_eq!(p.get(1), b"");
        assert_eq!(p.get(2), b"bc");
        assert_eq!(p.get(3), b"");
    }

    #[test]
    fn clean_spaces_matches_llama_cpp() {
        let mut t = b"Hello , world ! it 's ok ' fine".to_vec();
        clean_spaces(&mut t);
        assert_eq!(t, b"Hello, world! it's ok'fine");
    }

    #[test]
    fn leading_space_is_stripped_once() {
        let p = Pieces::new([" a", " b"]);
        let rules = DetokenizeRules { strip_leading_space: true, clean_spaces: false };
        assert_eq!(rules.apply(&p, &[0, 1]), b"a b");
    }
}
