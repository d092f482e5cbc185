//! The set of allowed tokens for one step, and applying it to logits.

use llguidance::toktrie::SimpleVob;

/// A set of token ids over one vocabulary: bit `id % 32` of word `id / 32` is set when token `id`
/// is allowed.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet(SimpleVob);

impl TokenSet {
    pub(crate) fn new(bits: SimpleVob) -> TokenSet {
        TokenSet(bits)
    }

    /// Whether `token` is in the set; false for ids outside the vocabulary.
    pub fn contains(&self, token: u32) -> bool {
        (token as usize) < self.0.len() && self.0.is_allowed(token)
    }

    /// How many tokens are in the set.
    pub fn count(&self) -> usize {
        self.0.num_set()
    }

    /// The vocabulary size the set ranges over.
    pub fn vocab_size(&self) -> usize {
        self.0.len()
    }

    /// The allowed ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().filter(|&t| (t as usize) < self.0.len())
    }

    /// The raw bit words (see the type's doc), e.g. to upload the mask to a device. Bits at or
    /// past `vocab_size` are zero.
    pub fn words(&self) -> &[u32] {
        self.0.as_slice()
    }
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet").field("vocab_size", &self.vocab_size()).field("count", &self.count()).finish()
    }
}

/// Sets every logit whose token is not in `allowed` to negative infinity. Logits past the set's
/// vocabulary (models whose output rows are padded beyond the tokenizer) are disallowed too.
pub fn apply_mask(logits: &mut [f32], allowed: &TokenSet) {
    let n = allowed.vocab_size().min(logits.len());
    let (inside, outside) = logits.split_at_mut(n);
    for (chunk, &word) in inside.chunks_mut(32).zip(allowed.words()) {
        match word {
            u32::MAX => {}
            0 => chunk.fill(f32::NEG_INFINITY),
            _ => {
                for (bit, logit) in chunk.iter_mut().enumerate() {
                    if word & (1 << bit) == 0 {
                        *logit = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }
    outside.fill(f32::NEG_INFINITY);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(size: usize, ids: &[u32]) -> TokenSet {
        let mut bits = SimpleVob::alloc(size);
        for &id in ids {
            bits.allow_token(id);
        }
        TokenSet::new(bits)
    }

    #[test]
    fn mask_keeps_exactly_the_allowed_logits() {
        let allowed = set(70, &[0, 31, 32, 33, 69]);
        let mut logits: Vec<f32> = (0..75).map(|i| i as f32).collect();
        apply_mask(&mut logits, &allowed);
        for (i, &l) in logits.iter().enumerate() {
            if allowed.contains(i as u32) {
                assert_eq!(l, i as f32);
            } else {
                assert_eq!(l, f32::NEG_INFINITY, "logit {i}");
            }
        }
        assert_eq!(allowed.count(), 5);
        assert_eq!(allowed.iter().collect::<Vec<_>>(), [0, 31, 32, 33, 69]);
        assert!(!allowed.contains(70) && !allowed.contains(u32::MAX));
    }

    #[test]
    fn full_words_and_short_logits() {
        let allowed = set(64, &(0..32).collect::<Vec<_>>());
        let mut logits = vec![1.0f32; 40];
        apply_mask(&mut logits, &allowed);
        assert!(logits[..32].iter().all(|&l| l == 1.0));
        assert!(logits[32..].iter().all(|&l| l == f32::NEG_INFINITY));
        let mut short = vec![1.0f32; 3];
        apply_mask(&mut short, &allowed);
        assert_eq!(short, [1.0; 3]);
    }
}
