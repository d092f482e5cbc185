use std::ops::Range;

use crate::{BlockId, SchedulerError, SeqId};

/// What the engine computes in one iteration: one forward pass over every item's tokens.
///
/// The engine first executes `copies` in order, then runs the forward pass (writing each token's
/// K and V at its slot, attending over each item's block table), samples a token for each item
/// that wants logits, and hands the plan back to [`Scheduler::complete_step`](crate::Scheduler::complete_step).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepPlan {
    /// Identifies the step; `complete_step` accepts only the latest plan.
    pub step: u64,
    pub items: Vec<ScheduledSeq>,
    /// Whole-block copies (copy-on-write of a block shared after a fork), to run before the
    /// forward pass and in this order.
    pub copies: Vec<BlockCopy>,
    /// Sequences that lost their KV blocks this step to make room; they wait to be recomputed
    /// from their prompt and generated tokens and stay alive (their streams stay open).
    pub preempted: Vec<SeqId>,
    /// Sequences removed for good: they cannot fit in the KV cache even alone.
    pub failed: Vec<(SeqId, SchedulerError)>,
}

impl StepPlan {
    /// True when there is nothing to compute (there may still be `failed` sequences to report).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Tokens computed in this step, over all items.
    pub fn num_tokens(&self) -> usize {
        self.items.iter().map(|item| item.tokens.len()).sum()
    }
}

/// One sequence's share of a step: a prefill chunk or a single decode token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: SeqId,
    /// Positions of the tokens computed this step; everything before `positions.start` is in
    /// the KV cache already.
    pub positions: Range<usize>,
    /// Token ids at those positions.
    pub tokens: Vec<u32>,
    /// For each token, where its K and V go: `block_id * block_size + position % block_size`.
    pub slots: Vec<usize>,
    /// The sequence's blocks in order, covering positions `0..context_len()`.
    pub block_table: Vec<BlockId>,
    /// Whether the engine should compute logits for the last token and sample: true for a decode
    /// step and for the chunk that ends the prompt.
    pub wants_logits: bool,
}

impl ScheduledSeq {
    /// Tokens in the KV cache once this step is computed (the attention context length).
    pub fn context_len(&self) -> usize {
        self.positions.end
    }
}

/// Copy block `src`'s K and V (every layer) into block `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCopy {
    pub src: BlockId,
    pub dst: BlockId,
}
