//! Iteration-level continuous batching over the paged KV cache.
//!
//! Each [`Scheduler::schedule`] call plans one forward pass: first one token for every running
//! sequence that is decoding, then prefill chunks for running sequences still in their prompt,
//! then new admissions, all within a token budget. A sequence that needs a block when none is
//! left takes them from the most recently admitted running sequence, which drops its blocks and
//! waits to be recomputed (preemption by recompute). The oldest running sequence is never
//! preempted, so it always progresses; one that cannot fit even alone is dropped with an error.
//!
//! A sequence's state is `tokens` (prompt, then every sampled token) and `num_computed`, the
//! length of the prefix whose KV is in its blocks. At least one token is always uncomputed: the
//! rest of the prompt or the last sampled token. Between steps a sequence holds exactly
//! `ceil(num_computed / block_size)` blocks; a waiting one holds none.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use crate::{Block, BlockCopy, BlockHash, BlockId, BlockPool, ScheduledSeq, SchedulerError, StepPlan};

/// The engine's name for a request (one stream of tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

impl fmt::Display for SeqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Sizes and limits of the scheduler and its KV cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the cache; `block_size * num_blocks` tokens in all.
    pub num_blocks: usize,
    /// Most sequences running (holding KV blocks) at once, hence in one step.
    pub max_num_seqs: usize,
    /// Most tokens computed in one step; at least `max_num_seqs`, so every running sequence can
    /// decode in every step.
    pub max_batched_tokens: usize,
    /// Share the KV of identical prompt prefixes across sequences, and keep it after they end.
    pub enable_prefix_cache: bool,
}

impl SchedulerConfig {
    /// A cache of `num_blocks` blocks of `block_size` tokens, with 256 sequences, 2048 tokens per
    /// step and the prefix cache on.
    pub fn new(block_size: usize, num_blocks: usize) -> Self {
        SchedulerConfig {
            block_size,
            num_blocks,
            max_num_seqs: 256,
            max_batched_tokens: 2048,
            enable_prefix_cache: true,
        }
    }
}

/// Numbers for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerStats {
    /// Sequences waiting for admission, preempted ones included.
    pub waiting: usize,
    /// Sequences holding KV blocks.
    pub running: usize,
    /// Fraction of KV blocks in use (cached blocks nobody holds count as free).
    pub kv_usage: f64,
    pub num_blocks: usize,
    pub free_blocks: usize,
    /// Blocks whose contents are in the prefix cache, in use or not.
    pub cached_blocks: usize,
    /// Prompt tokens looked up in the prefix cache at admission.
    pub prefix_cache_queried_tokens: u64,
    /// Of those, tokens found (not recomputed).
    pub prefix_cache_hit_tokens: u64,
    /// Times a sequence lost its blocks to make room.
    pub preemptions: u64,
}

impl SchedulerStats {
    /// Hit tokens over queried tokens, 0 before any query.
    pub fn prefix_cache_hit_rate(&self) -> f64 {
        if self.prefix_cache_queried_tokens == 0 {
            0.0
        } else {
            self.prefix_cache_hit_tokens as f64 / self.prefix_cache_queried_tokens as f64
        }
    }
}

struct Sequence {
    /// The prompt, then every sampled token.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_new_tokens: usize,
    /// Leading tokens whose KV is in `blocks`.
    num_computed: usize,
    blocks: Vec<Block>,
    /// Hash chain of the full blocks of `tokens` computed so far (prefix cache only).
    hashes: Vec<BlockHash>,
    /// Leading blocks already offered to the prefix cache.
    num_registered: usize,
    running: bool,
}

impl Sequence {
    fn pending(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Drops every block, the last first: a sequence's tail is the least likely to be shared,
    /// so it should be the first of its cached blocks to be evicted.
    fn truncate_blocks(&mut self, keep: usize) {
        while self.blocks.len() > keep {
            self.blocks.pop();
        }
        self.num_registered = self.num_registered.min(keep);
    }

    fn release(&mut self) {
        self.truncate_blocks(0);
        self.num_computed = 0;
    }
}

/// A sequence as the engine may inspect it.
pub struct SeqView<'a> {
    seq: &'a Sequence,
}

impl SeqView<'_> {
    /// The prompt followed by every sampled token.
    pub fn tokens(&self) -> &[u32] {
        &self.seq.tokens
    }

    pub fn prompt_len(&self) -> usize {
        self.seq.prompt_len
    }

    pub fn num_generated(&self) -> usize {
        self.seq.generated()
    }

    /// Leading tokens whose KV is in the cache.
    pub fn num_computed(&self) -> usize {
        self.seq.num_computed
    }

    /// Running (holding KV blocks) rather than waiting.
    pub fn is_running(&self) -> bool {
        self.seq.running
    }

    pub fn block_table(&self) -> Vec<BlockId> {
        self.seq.blocks.iter().map(Block::id).collect()
    }
}

/// What `complete_step` must know of the plan in flight, and what to undo if it never comes.
struct InFlight {
    step: u64,
    ids: Vec<SeqId>,
    /// (sequence, block index) given a fresh copy of a shared block in that step.
    cows: Vec<(SeqId, usize)>,
}

/// A plan under construction.
struct Draft {
    items: Vec<ScheduledSeq>,
    copies: Vec<(SeqId, BlockCopy)>,
    cows: Vec<(SeqId, usize)>,
    preempted: Vec<SeqId>,
    failed: Vec<(SeqId, SchedulerError)>,
    budget: usize,
}

impl Draft {
    /// Takes a sequence that lost its blocks out of the plan.
    fn forget(&mut self, id: SeqId) {
        if let Some(i) = self.items.iter().position(|item| item.id == id) {
            self.budget += self.items.remove(i).tokens.len();
        }
        self.copies.retain(|(seq, _)| *seq != id);
        self.cows.retain(|(seq, _)| *seq != id);
    }
}

/// Continuous batching over a paged KV cache with prefix caching. See the module documentation.
pub struct Scheduler {
    config: SchedulerConfig,
    pool: Arc<BlockPool>,
    seqs: HashMap<SeqId, Sequence>,
    waiting: VecDeque<SeqId>,
    /// In admission order: the last is the first to be preempted.
    running: Vec<SeqId>,
    step: u64,
    in_flight: Option<InFlight>,
    prefix_queried: u64,
    prefix_hits: u64,
    preemptions: u64,
}

impl Scheduler {
    /// A scheduler with an empty queue and a pool of `config.num_blocks` free blocks.
    pub fn new(config: SchedulerConfig) -> Result<Self, SchedulerError> {
        if config.max_num_seqs == 0 {
            return Err(SchedulerError::InvalidConfig("max_num_seqs must be at least 1"));
        }
        if config.max_batched_tokens < config.max_num_seqs {
            return Err(SchedulerError::InvalidConfig("max_batched_tokens must be at least max_num_seqs"));
        }
        let pool = BlockPool::new(config.num_blocks, config.block_size)?;
        Ok(Scheduler {
            config,
            pool,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            step: 0,
            in_flight: None,
            prefix_queried: 0,
            prefix_hits: 0,
            preemptions: 0,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The KV block pool (for metrics and tests; the scheduler does all allocation).
    pub fn pool(&self) -> &Arc<BlockPool> {
        &self.pool
    }

    fn capacity(&self) -> usize {
        self.config.num_blocks * self.config.block_size
    }

    /// Queues a request. Fails if `id` is taken, the prompt is empty, `max_new_tokens` is 0, or
    /// the prompt is longer than the whole KV cache.
    pub fn add_request(&mut self, id: SeqId, prompt: Vec<u32>, max_new_tokens: usize) -> Result<(), SchedulerError> {
        if self.seqs.contains_key(&id) {
            return Err(SchedulerError::DuplicateId(id));
        }
        if prompt.is_empty() {
            return Err(SchedulerError::EmptyPrompt(id));
        }
        if max_new_tokens == 0 {
            return Err(SchedulerError::NoNewTokens(id));
        }
        if prompt.len() > self.capacity() {
            return Err(SchedulerError::TooLong { id, tokens: prompt.len(), capacity: self.capacity() });
        }
        let seq = Sequence {
            prompt_len: prompt.len(),
            tokens: prompt,
            max_new_tokens,
            num_computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            num_registered: 0,
            running: false,
        };
        self.seqs.insert(id, seq);
        self.waiting.push_back(id);
        Ok(())
    }

    /// Ends a sequence normally, returning its blocks (cached prefixes stay findable).
    pub fn finish(&mut self, id: SeqId) -> Result<(), SchedulerError> {
        self.remove(id).map(drop).ok_or(SchedulerError::UnknownId(id))
    }

    /// Cancels a sequence, running or waiting, returning its blocks. The same as `finish`.
    pub fn abort(&mut self, id: SeqId) -> Result<(), SchedulerError> {
        self.finish(id)
    }

    fn remove(&mut self, id: SeqId) -> Option<Sequence> {
        let mut seq = self.seqs.remove(&id)?;
        if seq.running {
            self.running.retain(|&r| r != id);
        } else {
            self.waiting.retain(|&w| w != id);
        }
        seq.release();
        Some(seq)
    }

    /// Starts `child` as a copy of `parent` whose last token is `last_token` instead: for `n > 1`
    /// completions, call it after `complete_step` with each further token sampled from the same
    /// logits. The child shares the parent's blocks; whichever writes first into a shared
    /// partial block gets its own copy (a [`BlockCopy`] in that step's plan). If `max_num_seqs`
    /// sequences are running already, the child waits and is recomputed instead.
    ///
    /// The parent must be running and have sampled a token that is not yet computed, and no
    /// step may be in flight.
    pub fn fork(&mut self, parent: SeqId, child: SeqId, last_token: u32) -> Result<(), SchedulerError> {
        if self.seqs.contains_key(&child) {
            return Err(SchedulerError::DuplicateId(child));
        }
        if self.in_flight.is_some() {
            return Err(SchedulerError::CannotFork { id: parent, reason: "a step is in flight" });
        }
        let p = self.seqs.get(&parent).ok_or(SchedulerError::UnknownId(parent))?;
        if !p.running || p.pending() != 1 || p.generated() == 0 {
            return Err(SchedulerError::CannotFork { id: parent, reason: "it has no freshly sampled token" });
        }
        let len = p.tokens.len();
        let mut tokens = p.tokens[..len - 1].to_vec();
        tokens.push(last_token);
        let mut hashes = p.hashes.clone();
        hashes.truncate((len - 1) / self.config.block_size);
        let share = self.running.len() < self.config.max_num_seqs;
        let seq = Sequence {
            tokens,
            prompt_len: p.prompt_len,
            max_new_tokens: p.max_new_tokens,
            num_computed: if share { p.num_computed } else { 0 },
            blocks: if share { p.blocks.clone() } else { Vec::new() },
            hashes,
            num_registered: if share { p.num_registered } else { 0 },
            running: share,
        };
        self.seqs.insert(child, seq);
        if share {
            self.running.push(child);
        } else {
            self.waiting.push_front(child);
        }
        Ok(())
    }

    /// Plans the next step. Calling it again before `complete_step` abandons the previous plan
    /// (as when its forward pass failed): nothing of it counts as computed.
    pub fn schedule(&mut self) -> StepPlan {
        self.abandon_in_flight();
        self.step += 1;
        let mut d = Draft {
            items: Vec::new(),
            copies: Vec::new(),
            cows: Vec::new(),
            preempted: Vec::new(),
            failed: Vec::new(),
            budget: self.config.max_batched_tokens,
        };
        let order = self.running.clone();
        // Decodes first, so that a long prefill never stalls running streams.
        for &id in &order {
            if d.budget == 0 {
                break;
            }
            if self.seqs.get(&id).is_some_and(|s| s.running && s.pending() == 1) {
                self.schedule_running(id, 1, &mut d);
            }
        }
        for &id in &order {
            if d.budget == 0 {
                break;
            }
            let pending = match self.seqs.get(&id) {
                Some(s) if s.running && s.pending() > 1 => s.pending(),
                _ => continue,
            };
            self.schedule_running(id, pending.min(d.budget), &mut d);
        }
        // After a preemption the pool is short: admitting now would only preempt again.
        if d.preempted.is_empty() {
            self.admit(&mut d);
        }
        if !d.items.is_empty() {
            let ids = d.items.iter().map(|item| item.id).collect();
            self.in_flight = Some(InFlight { step: self.step, ids, cows: d.cows });
        }
        StepPlan {
            step: self.step,
            items: d.items,
            copies: d.copies.into_iter().map(|(_, copy)| copy).collect(),
            preempted: d.preempted,
            failed: d.failed,
        }
    }

    /// Undoes what a plan that was never completed left behind: blocks allocated for tokens
    /// that were not computed, and positions whose block copy may not have happened.
    fn abandon_in_flight(&mut self) {
        let Some(flight) = self.in_flight.take() else { return };
        let bs = self.config.block_size;
        for (id, index) in flight.cows {
            if let Some(seq) = self.seqs.get_mut(&id) {
                seq.num_computed = seq.num_computed.min(index * bs);
            }
        }
        for id in flight.ids {
            if let Some(seq) = self.seqs.get_mut(&id) {
                seq.truncate_blocks(seq.num_computed.div_ceil(bs));
            }
        }
    }

    /// Blocks to allocate for `seq` to compute its next `n` tokens: new blocks, plus a copy of
    /// each block to be written that it does not own alone.
    fn blocks_needed(&self, seq: &Sequence, n: usize) -> usize {
        let bs = self.config.block_size;
        let have = seq.blocks.len();
        let after = (seq.num_computed + n).div_ceil(bs);
        let written = &seq.blocks[(seq.num_computed / bs).min(have)..after.min(have)];
        after.saturating_sub(have) + written.iter().filter(|b| !b.is_exclusive()).count()
    }

    /// Schedules up to `want` tokens of a running sequence: as many as the free blocks allow,
    /// preempting younger sequences when not even one token fits.
    fn schedule_running(&mut self, id: SeqId, want: usize, d: &mut Draft) {
        loop {
            let Some(seq) = self.seqs.get(&id) else { return };
            let free = self.pool.free_blocks();
            let n = if self.blocks_needed(seq, want) <= free {
                want
            } else {
                // The largest n in 0..want that fits; blocks_needed grows with n.
                let (mut lo, mut hi) = (0, want - 1);
                while lo < hi {
                    let mid = (lo + hi).div_ceil(2);
                    if self.blocks_needed(seq, mid) <= free {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                lo
            };
            if n > 0 && self.place(id, n, d) {
                return;
            }
            let Some(&youngest) = self.running.last() else { return };
            if youngest != id {
                self.preempt(youngest, d);
                continue;
            }
            if self.running.len() > 1 {
                self.preempt(id, d);
            } else if let Some(seq) = self.remove(id) {
                // Alone, it holds every block it can get and needs more: it can never fit.
                let error = SchedulerError::TooLong { id, tokens: seq.tokens.len(), capacity: self.capacity() };
                d.forget(id);
                d.failed.push((id, error));
            }
            return;
        }
    }

    /// Allocates what the next `n` tokens of `id` need and adds them to the plan. False (and
    /// nothing done) if the blocks are not there.
    fn place(&mut self, id: SeqId, n: usize, d: &mut Draft) -> bool {
        let bs = self.config.block_size;
        let Some(seq) = self.seqs.get_mut(&id) else { return false };
        let (start, end) = (seq.num_computed, seq.num_computed + n);
        let have = seq.blocks.len();
        let after = end.div_ceil(bs);
        debug_assert!(have <= after, "{id} holds blocks past the tokens it computes");
        let shared: Vec<usize> =
            ((start / bs).min(have)..after.min(have)).filter(|&i| !seq.blocks[i].is_exclusive()).collect();
        let Some(fresh) = self.pool.allocate_n(after.saturating_sub(have) + shared.len()) else { return false };
        let mut fresh = fresh.into_iter();
        for (i, copy) in shared.into_iter().zip(&mut fresh) {
            d.copies.push((id, BlockCopy { src: seq.blocks[i].id(), dst: copy.id() }));
            d.cows.push((id, i));
            // Drops this sequence's reference to the shared block.
            seq.blocks[i] = copy;
        }
        seq.blocks.extend(fresh);
        debug_assert!(
            seq.blocks[start / bs..after].iter().all(Block::is_exclusive),
            "{id} would write into a block it does not own alone"
        );
        let block_table: Vec<BlockId> = seq.blocks.iter().map(Block::id).collect();
        let slots = (start..end).map(|p| block_table[p / bs].index() * bs + p % bs).collect();
        d.items.push(ScheduledSeq {
            id,
            positions: start..end,
            tokens: seq.tokens[start..end].to_vec(),
            slots,
            block_table,
            wants_logits: end == seq.tokens.len(),
        });
        d.budget -= n;
        true
    }

    /// Frees a running sequence's blocks and puts it first in line to be recomputed.
    fn preempt(&mut self, id: SeqId, d: &mut Draft) {
        let Some(seq) = self.seqs.get_mut(&id) else { return };
        seq.release();
        seq.running = false;
        self.running.retain(|&r| r != id);
        self.waiting.push_front(id);
        d.forget(id);
        d.preempted.push(id);
        self.preemptions += 1;
    }

    /// Admits waiting sequences in order while the budget, `max_num_seqs` and the free blocks
    /// allow. A sequence is admitted only if its whole prompt fits beside what the running
    /// prefills still need, so that admissions do not immediately cause preemptions.
    fn admit(&mut self, d: &mut Draft) {
        let bs = self.config.block_size;
        while d.budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(&id) = self.waiting.front() else { return };
            let reserved: usize = self
                .running
                .iter()
                .filter_map(|r| self.seqs.get(r))
                .filter(|s| s.pending() > 1)
                .map(|s| s.tokens.len().div_ceil(bs).saturating_sub(s.blocks.len()))
                .sum();
            let capacity = self.capacity();
            let Some(seq) = self.seqs.get_mut(&id) else {
                self.waiting.pop_front();
                continue;
            };
            let len = seq.tokens.len();
            if len > capacity {
                // Prompt plus generated tokens, after a preemption: it can never run again.
                self.remove(id);
                d.failed.push((id, SchedulerError::TooLong { id, tokens: len, capacity }));
                continue;
            }
            let mut hits = Vec::new();
            if self.config.enable_prefix_cache {
                self.pool.extend_hashes(&mut seq.hashes, &seq.tokens);
                // Keep at least one token to compute: its logits give the next token.
                let most = ((len - 1) / bs).min(seq.hashes.len());
                hits = self.pool.lookup_hashes(&seq.hashes[..most]);
            }
            if self.pool.free_blocks() < len.div_ceil(bs) - hits.len() + reserved {
                while hits.pop().is_some() {}
                return;
            }
            self.waiting.pop_front();
            if self.config.enable_prefix_cache {
                self.prefix_queried += len as u64;
                self.prefix_hits += (hits.len() * bs) as u64;
            }
            seq.num_computed = hits.len() * bs;
            seq.num_registered = hits.len();
            seq.blocks = hits;
            seq.running = true;
            let want = seq.pending().min(d.budget);
            self.running.push(id);
            self.schedule_running(id, want, d);
            if !d.preempted.is_empty() {
                // Cannot happen with the check above; stop rather than admit and preempt forever.
                return;
            }
        }
    }

    /// Records that `plan` was computed. `sampled` gives the token sampled for each item that
    /// wanted logits: `Some` appends it; `None` (or no entry) ends the sequence. Entries for
    /// other items are ignored. Newly full blocks enter the prefix cache.
    ///
    /// Returns the sequences this ended and released: those that reached `max_new_tokens` or
    /// got `None`. Sequences finished or aborted since `schedule` are skipped (their KV was
    /// computed into blocks they no longer hold). Fails, changing nothing, if `plan` is not the
    /// latest plan.
    pub fn complete_step(
        &mut self,
        plan: &StepPlan,
        sampled: &[(SeqId, Option<u32>)],
    ) -> Result<Vec<SeqId>, SchedulerError> {
        if plan.items.is_empty() {
            return Ok(Vec::new());
        }
        if self.in_flight.as_ref().is_none_or(|f| f.step != plan.step) {
            return Err(SchedulerError::StalePlan { plan: plan.step });
        }
        self.in_flight = None;
        let bs = self.config.block_size;
        let sampled: HashMap<SeqId, Option<u32>> = sampled.iter().copied().collect();
        let mut ended = Vec::new();
        for item in &plan.items {
            let Some(seq) = self.seqs.get_mut(&item.id) else { continue };
            if !seq.running || seq.num_computed != item.positions.start {
                // Aborted and added again under the same id since `schedule`.
                continue;
            }
            seq.num_computed = item.positions.end;
            if self.config.enable_prefix_cache {
                let full = seq.num_computed / bs;
                self.pool.extend_hashes(&mut seq.hashes, &seq.tokens[..full * bs]);
                for i in seq.num_registered..full {
                    self.pool.register(&seq.blocks[i], seq.hashes[i]);
                }
                seq.num_registered = seq.num_registered.max(full);
            }
            if !item.wants_logits {
                continue;
            }
            match sampled.get(&item.id).copied().flatten() {
                Some(token) => {
                    seq.tokens.push(token);
                    if seq.generated() >= seq.max_new_tokens {
                        ended.push(item.id);
                    }
                }
                None => ended.push(item.id),
            }
        }
        for &id in &ended {
            self.remove(id);
        }
        Ok(ended)
    }

    /// Sequences waiting for admission (preempted ones included).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences holding KV blocks.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// True while any sequence is waiting or running.
    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// A live sequence's tokens, progress and blocks.
    pub fn sequence(&self, id: SeqId) -> Option<SeqView<'_>> {
        self.seqs.get(&id).map(|seq| SeqView { seq })
    }

    /// Ids of every live sequence, running ones first (oldest first), then waiting ones in order.
    pub fn ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.running.iter().chain(&self.waiting).copied()
    }

    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            kv_usage: self.pool.usage(),
            num_blocks: self.pool.num_blocks(),
            free_blocks: self.pool.free_blocks(),
            cached_blocks: self.pool.cached_blocks(),
            prefix_cache_queried_tokens: self.prefix_queried,
            prefix_cache_hit_tokens: self.prefix_hits,
            preemptions: self.preemptions,
        }
    }
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .field("waiting", &self.waiting.len())
            .field("running", &self.running.len())
            .field("pool", &self.pool)
            .finish()
    }
}

#[cfg(test)]
mod tests;
