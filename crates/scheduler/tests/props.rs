//! Property tests of the scheduler and its block pool, driven by a simulated engine.
//!
//! The engine keeps a KV cache of fingerprints: writing position `p` of a sequence stores a hash
//! of that sequence's tokens `0..=p` in the token's slot, and every scheduled item then checks
//! that each position of its context reads back its own fingerprint through its block table. A
//! block written by two sequences, a cached block reused under the wrong prefix, a missing or
//! misordered copy-on-write, or a recompute after preemption that skipped a token all show up as
//! a wrong fingerprint. Around that, every plan and every state is checked against the limits
//! and the ownership rules, and every case ends by running or aborting everything and finding
//! the pool full again.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_scheduler::{BlockId, Scheduler, SchedulerConfig, SchedulerError, SeqId, StepPlan};

#[derive(Debug, Clone)]
enum Op {
    /// A prompt made of a prefix of one of the shared bases (so prompts share blocks) and a
    /// random tail.
    Add {
        base: usize,
        cut: usize,
        tail: Vec<u32>,
        max_new: usize,
    },
    /// Schedule, compute, complete; `seed` draws the sampled tokens and the occasional stop.
    Step {
        seed: u64,
    },
    /// Schedule and compute part of the plan (copies, then `written` items), never complete it.
    Abandon {
        written: usize,
    },
    /// Abort a sequence while its step is in flight (schedule, abort, compute, complete).
    AbortInFlight {
        pick: usize,
        seed: u64,
    },
    Finish {
        pick: usize,
    },
    Abort {
        pick: usize,
    },
    Fork {
        pick: usize,
        token: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..20usize, prop::collection::vec(0..4u32, 0..6), 1..8usize)
            .prop_map(|(base, cut, tail, max_new)| Op::Add { base, cut, tail, max_new }),
        8 => any::<u64>().prop_map(|seed| Op::Step { seed }),
        1 => (0..4usize).prop_map(|written| Op::Abandon { written }),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(pick, seed)| Op::AbortInFlight { pick, seed }),
        1 => any::<usize>().prop_map(|pick| Op::Finish { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Abort { pick }),
        2 => (any::<usize>(), 0..4u32).prop_map(|(pick, token)| Op::Fork { pick, token }),
    ]
}

fn config() -> impl Strategy<Value = SchedulerConfig> {
    (1..5usize, 1..24usize, 1..6usize, 0..24usize, any::<bool>()).prop_map(
        |(block_size, num_blocks, max_num_seqs, extra, enable_prefix_cache)| SchedulerConfig {
            block_size,
            num_blocks,
            max_num_seqs,
            max_batched_tokens: max_num_seqs + extra,
            enable_prefix_cache,
        },
    )
}

/// What the test knows of a live sequence, independently of the scheduler.
struct Expected {
    tokens: Vec<u32>,
    prompt_len: usize,
    max_new: usize,
}

struct Engine {
    s: Scheduler,
    config: SchedulerConfig,
    /// Per KV slot, the fingerprint of the prefix whose last token's KV it holds.
    kv: Vec<Option<u64>>,
    live: HashMap<SeqId, Expected>,
    next_id: u64,
    /// The last plan, if `schedule` was called since the last `complete_step`.
    in_flight: Option<StepPlan>,
}

/// Fingerprints of every prefix of `tokens`: entry `p` stands for `tokens[..=p]`.
fn fingerprints(tokens: &[u32]) -> Vec<u64> {
    let mut hasher = DefaultHasher::new();
    tokens
        .iter()
        .map(|t| {
            t.hash(&mut hasher);
            hasher.finish()
        })
        .collect()
}

impl Engine {
    fn new(config: SchedulerConfig) -> Self {
        let s = Scheduler::new(config.clone()).unwrap();
        let kv = vec![None; config.num_blocks * config.block_size];
        Engine { s, config, kv, live: HashMap::new(), next_id: 0, in_flight: None }
    }

    fn live_ids(&self) -> Vec<SeqId> {
        let mut ids: Vec<SeqId> = self.live.keys().copied().collect();
        ids.sort();
        ids
    }

    fn pick(&self, pick: usize) -> Option<SeqId> {
        let ids = self.live_ids();
        (!ids.is_empty()).then(|| ids[pick % ids.len()])
    }

    fn forget(&mut self, id: SeqId) {
        self.live.remove(&id);
        assert!(!self.s.contains(id));
    }

    fn add(&mut self, prompt: Vec<u32>, max_new: usize) {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        let capacity = self.config.num_blocks * self.config.block_size;
        let result = self.s.add_request(id, prompt.clone(), max_new);
        if prompt.is_empty() {
            assert_eq!(result, Err(SchedulerError::EmptyPrompt(id)));
        } else if prompt.len() > capacity {
            assert_eq!(result, Err(SchedulerError::TooLong { id, tokens: prompt.len(), capacity }));
        } else {
            result.unwrap();
            self.live.insert(id, Expected { prompt_len: prompt.len(), tokens: prompt, max_new });
        }
    }

    /// Schedules, checks the plan and records what it dropped.
    fn schedule(&mut self) -> StepPlan {
        let plan = self.s.schedule();
        if let Some(old) = self.in_flight.take() {
            if !old.items.is_empty() {
                assert_eq!(self.s.complete_step(&old, &[]), Err(SchedulerError::StalePlan { plan: old.step }));
            }
        }
        for (id, error) in &plan.failed {
            let tokens = self.live[id].tokens.len();
            let capacity = self.config.num_blocks * self.config.block_size;
            assert!(tokens > capacity, "{id} failed with {tokens} tokens in a cache of {capacity}");
            assert_eq!(*error, SchedulerError::TooLong { id: *id, tokens, capacity });
            self.forget(*id);
        }
        self.check_plan(&plan);
        self.in_flight = Some(plan.clone());
        self.check_state();
        plan
    }

    fn check_plan(&self, plan: &StepPlan) {
        let bs = self.config.block_size;
        assert!(plan.items.len() <= self.config.max_num_seqs);
        assert!(plan.num_tokens() <= self.config.max_batched_tokens);
        let mut ids = HashSet::new();
        let mut slots = HashSet::new();
        let mut written: HashMap<BlockId, SeqId> = HashMap::new();
        for item in &plan.items {
            assert!(ids.insert(item.id), "{} scheduled twice", item.id);
            let expected = &self.live[&item.id];
            assert!(!item.positions.is_empty());
            assert_eq!(item.tokens, expected.tokens[item.positions.clone()]);
            assert_eq!(item.wants_logits, item.context_len() == expected.tokens.len());
            assert_eq!(item.block_table.len(), item.context_len().div_ceil(bs));
            let view = self.s.sequence(item.id).unwrap();
            assert!(view.is_running());
            assert_eq!(view.num_computed(), item.positions.start);
            assert_eq!(view.block_table(), item.block_table);
            for (slot, p) in item.slots.iter().zip(item.positions.clone()) {
                let block = item.block_table[p / bs];
                assert_eq!(*slot, block.index() * bs + p % bs);
                assert!(block.index() < self.config.num_blocks);
                assert!(slots.insert(*slot), "slot {slot} written twice in one step");
                written.insert(block, item.id);
            }
        }
        for (&block, &writer) in &written {
            // Copy-on-write: a sequence writes only into blocks it owns alone and that are not
            // in the prefix cache.
            assert_eq!(self.s.pool().ref_count(block), 1, "{writer} writes into shared {block}");
            assert_eq!(self.s.pool().block_hash(block), None, "{writer} writes into cached {block}");
            for id in self.s.ids().filter(|&id| id != writer) {
                assert!(!self.s.sequence(id).unwrap().block_table().contains(&block));
            }
        }
        for copy in &plan.copies {
            assert_ne!(copy.src, copy.dst);
            assert!(written.contains_key(&copy.dst), "{:?} copies into a block nobody writes", copy);
        }
        for id in &plan.preempted {
            let view = self.s.sequence(*id).unwrap();
            assert!(!view.is_running() && view.block_table().is_empty() && view.num_computed() == 0);
            assert!(!ids.contains(id));
        }
    }

    /// Checks every live sequence against the test's own record and the pool's reference
    /// counts against the block tables: no block is held by anything but a table.
    fn check_state(&self) {
        let bs = self.config.block_size;
        let pool = self.s.pool();
        pool.check_invariants().unwrap();
        assert_eq!(self.s.num_running() + self.s.num_waiting(), self.live.len());
        assert!(self.s.num_running() <= self.config.max_num_seqs);
        let mut holders = vec![0usize; self.config.num_blocks];
        for (&id, expected) in &self.live {
            let view = self.s.sequence(id).unwrap();
            assert_eq!(view.tokens(), expected.tokens);
            assert_eq!(view.prompt_len(), expected.prompt_len);
            assert!(view.num_computed() < expected.tokens.len(), "{id} has nothing left to compute");
            let table = view.block_table();
            if !view.is_running() {
                assert!(table.is_empty() && view.num_computed() == 0);
                continue;
            }
            let planned = self.in_flight.as_ref().and_then(|p| p.items.iter().find(|i| i.id == id));
            let covered = planned.map_or(view.num_computed(), |item| item.context_len());
            assert_eq!(table.len(), covered.div_ceil(bs), "{id}'s block table does not match its length");
            let chain = pool.hash_blocks(&expected.tokens);
            for (i, block) in table.iter().enumerate() {
                holders[block.index()] += 1;
                if let Some(hash) = pool.block_hash(*block) {
                    // A cached block holds exactly this sequence's prefix, computed.
                    assert!((i + 1) * bs <= view.num_computed(), "{id} shares cached {block} it did not compute");
                    assert_eq!(hash, chain[i], "{id}'s {block} is cached under another prefix");
                }
            }
            let unique: HashSet<_> = table.iter().collect();
            assert_eq!(unique.len(), table.len(), "{id} holds a block twice");
        }
        for (i, &count) in holders.iter().enumerate() {
            assert_eq!(pool.ref_count(BlockId(i as u32)), count, "block {i}'s references");
        }
    }

    /// Runs the copies, then writes the KV of the first `written` items, like a forward pass.
    fn compute(&mut self, plan: &StepPlan, written: usize) {
        let bs = self.config.block_size;
        for copy in &plan.copies {
            for o in 0..bs {
                self.kv[copy.dst.index() * bs + o] = self.kv[copy.src.index() * bs + o];
            }
        }
        for item in plan.items.iter().take(written) {
            let Some(expected) = self.live.get(&item.id) else { continue };
            let prints = fingerprints(&expected.tokens);
            for (slot, p) in item.slots.iter().zip(item.positions.clone()) {
                self.kv[*slot] = Some(prints[p]);
            }
        }
        if written < plan.items.len() {
            return;
        }
        for item in &plan.items {
            let Some(expected) = self.live.get(&item.id) else { continue };
            let prints = fingerprints(&expected.tokens);
            for (p, print) in prints.iter().enumerate().take(item.context_len()) {
                let slot = item.block_table[p / bs].index() * bs + p % bs;
                assert_eq!(self.kv[slot], Some(*print), "{} reads wrong KV at position {p}", item.id);
            }
        }
    }

    /// Completes `plan`, sampling random tokens and, when `stops`, sometimes ending a sequence.
    fn complete(&mut self, plan: &StepPlan, rng: &mut StdRng, stops: bool) {
        let mut sampled = Vec::new();
        let mut expect_ended = HashSet::new();
        for item in plan.items.iter().filter(|i| i.wants_logits) {
            let Some(expected) = self.live.get_mut(&item.id) else { continue };
            if stops && rng.gen_ratio(1, 10) {
                sampled.push((item.id, None));
                expect_ended.insert(item.id);
                continue;
            }
            let token = rng.gen_range(0..4);
            sampled.push((item.id, Some(token)));
            expected.tokens.push(token);
            if expected.tokens.len() - expected.prompt_len >= expected.max_new {
                expect_ended.insert(item.id);
            }
        }
        let ended = self.s.complete_step(plan, &sampled).unwrap();
        self.in_flight = None;
        assert_eq!(ended.iter().copied().collect::<HashSet<_>>(), expect_ended);
        for id in ended {
            self.forget(id);
        }
        self.check_state();
    }

    fn step(&mut self, rng: &mut StdRng, stops: bool) {
        let plan = self.schedule();
        self.compute(&plan, usize::MAX);
        self.complete(&plan, rng, stops);
    }

    fn apply(&mut self, op: &Op, bases: &[Vec<u32>]) {
        match op {
            Op::Add { base, cut, tail, max_new } => {
                let base = &bases[*base];
                let prompt = [&base[..(*cut).min(base.len())], tail].concat();
                self.add(prompt, *max_new);
            }
            Op::Step { seed } => self.step(&mut StdRng::seed_from_u64(*seed), true),
            Op::Abandon { written } => {
                let plan = self.schedule();
                self.compute(&plan, *written);
            }
            Op::AbortInFlight { pick, seed } => {
                let plan = self.schedule();
                if let Some(id) = self.pick(*pick) {
                    self.s.abort(id).unwrap();
                    self.forget(id);
                }
                self.compute(&plan, usize::MAX);
                self.complete(&plan, &mut StdRng::seed_from_u64(*seed), false);
            }
            Op::Finish { pick } | Op::Abort { pick } => {
                let Some(id) = self.pick(*pick) else { return };
                if matches!(op, Op::Finish { .. }) {
                    self.s.finish(id).unwrap();
                } else {
                    self.s.abort(id).unwrap();
                }
                self.forget(id);
                self.check_state();
            }
            Op::Fork { pick, token } => self.fork(*pick, *token),
        }
    }

    fn fork(&mut self, pick: usize, token: u32) {
        let Some(parent) = self.pick(pick) else { return };
        let child = SeqId(self.next_id);
        self.next_id += 1;
        let view = self.s.sequence(parent).unwrap();
        let forkable = self.in_flight.as_ref().is_none_or(|p| p.items.is_empty())
            && view.is_running()
            && view.num_computed() + 1 == view.tokens().len()
            && view.num_generated() > 0;
        let result = self.s.fork(parent, child, token);
        if !forkable {
            assert!(matches!(result, Err(SchedulerError::CannotFork { .. })), "{result:?}");
            return;
        }
        result.unwrap();
        let p = &self.live[&parent];
        let mut tokens = p.tokens.clone();
        *tokens.last_mut().unwrap() = token;
        let expected = Expected { tokens, prompt_len: p.prompt_len, max_new: p.max_new };
        self.live.insert(child, expected);
        self.check_state();
    }

    /// Runs every sequence to its end. The oldest running sequence is never preempted and
    /// computes at least one token per step, so some sequence ends at least once every
    /// `capacity + max_new_tokens` steps or so, preemptions and all.
    fn drain(&mut self) {
        let bound = 2 * self.config.num_blocks * self.config.block_size + 16;
        let mut rng = StdRng::seed_from_u64(7);
        let mut since_last_end = 0;
        while self.s.has_unfinished() {
            let before = self.live.len();
            self.step(&mut rng, false);
            since_last_end = if self.live.len() < before { 0 } else { since_last_end + 1 };
            assert!(since_last_end <= bound, "no sequence ended in {bound} steps: {:?}", self.s);
        }
    }

    fn abort_all(&mut self) {
        for id in self.live_ids() {
            self.s.abort(id).unwrap();
            self.forget(id);
        }
    }

    fn assert_pool_full(&self) {
        let pool = self.s.pool();
        pool.check_invariants().unwrap();
        assert_eq!(pool.free_blocks(), pool.num_blocks());
        for i in 0..pool.num_blocks() {
            assert_eq!(pool.ref_count(BlockId(i as u32)), 0);
        }
        assert_eq!(self.s.stats().kv_usage, 0.0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_workloads_neither_leak_nor_share_what_they_write(
        config in config(),
        bases in prop::collection::vec(prop::collection::vec(0..4u32, 20), 3),
        ops in prop::collection::vec(op(), 0..150),
        drain in any::<bool>(),
    ) {
        let mut engine = Engine::new(config);
        for op in &ops {
            engine.apply(op, &bases);
        }
        if drain {
            engine.drain();
        } else {
            engine.abort_all();
        }
        engine.assert_pool_full();
    }
}

#[test]
fn a_crowded_small_pool_preempts_and_still_finishes_everything() {
    // Fixed seeds over a pool too small for the load: every sequence must still end.
    let mut preemptions = 0;
    for seed in 0..50 {
        let config = SchedulerConfig {
            block_size: 2,
            num_blocks: 12,
            max_num_seqs: 4,
            max_batched_tokens: 6,
            enable_prefix_cache: seed % 2 == 0,
        };
        let mut engine = Engine::new(config);
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..12 {
            let len = rng.gen_range(1..10);
            let prompt = (0..len).map(|_| rng.gen_range(0..3)).collect();
            engine.add(prompt, rng.gen_range(1..12));
        }
        engine.drain();
        engine.assert_pool_full();
        preemptions += engine.s.stats().preemptions;
    }
    assert!(preemptions > 0, "the pool was not crowded after all");
}
