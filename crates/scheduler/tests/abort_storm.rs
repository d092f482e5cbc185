//! 10,000 streams, each cancelled part-way: while waiting, mid-prefill, mid-decode, or while its
//! step is in flight. Once they are all gone, the pool must be full again.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_scheduler::{BlockId, Scheduler, SchedulerConfig, SeqId};

const STREAMS: u64 = 10_000;

#[test]
fn ten_thousand_streams_aborted_midway_leave_the_pool_full() {
    let config = SchedulerConfig {
        block_size: 16,
        num_blocks: 512,
        max_num_seqs: 64,
        max_batched_tokens: 256,
        enable_prefix_cache: true,
    };
    let mut s = Scheduler::new(config).unwrap();
    let mut rng = StdRng::seed_from_u64(2024);
    // A few system prompts that many requests share, so aborts also release shared blocks.
    let systems: Vec<Vec<u32>> = (0..4).map(|i| (0..48).map(|t| t * 7 + i).collect()).collect();
    // How many tokens each stream gets to generate before its client goes away.
    let mut abort_after: HashMap<SeqId, usize> = HashMap::new();
    for i in 0..STREAMS {
        let id = SeqId(i);
        let mut prompt = if rng.gen_bool(0.5) { systems[rng.gen_range(0..4)].clone() } else { Vec::new() };
        let extra = rng.gen_range(1..400);
        prompt.extend((0..extra).map(|_| rng.gen_range(0..32_000)));
        s.add_request(id, prompt, 1_000).unwrap();
        abort_after.insert(id, rng.gen_range(0..6));
    }

    let mut steps = 0;
    let (mut in_prefill, mut in_decode, mut in_flight, mut waiting) = (0, 0, 0, 0);
    while s.has_unfinished() {
        steps += 1;
        let plan = s.schedule();
        assert!(plan.failed.is_empty());
        // A client disconnects while its step is being computed.
        if let Some(item) = plan.items.get(rng.gen_range(0..plan.items.len().max(1))) {
            if rng.gen_ratio(1, 10) {
                s.abort(item.id).unwrap();
                in_flight += 1;
            }
        }
        let sampled: Vec<_> = plan
            .items
            .iter()
            .filter(|item| item.wants_logits)
            .map(|item| (item.id, Some(rng.gen_range(0..32_000))))
            .collect();
        assert!(s.complete_step(&plan, &sampled).unwrap().is_empty(), "nothing reaches max_new_tokens");
        for item in &plan.items {
            let Some(seq) = s.sequence(item.id) else { continue };
            let prefilling = seq.num_computed() < seq.prompt_len();
            if seq.num_generated() >= abort_after[&item.id] && (!prefilling || rng.gen_ratio(1, 4)) {
                s.abort(item.id).unwrap();
                if prefilling {
                    in_prefill += 1;
                } else {
                    in_decode += 1;
                }
            }
        }
        if rng.gen_ratio(1, 10) {
            let queued = s.ids().skip(s.num_running()).nth(rng.gen_range(0..8));
            if let Some(id) = queued {
                s.abort(id).unwrap();
                waiting += 1;
            }
        }
        assert!(steps < 100_000, "the workload does not drain");
    }

    assert_eq!(in_prefill + in_decode + in_flight + waiting, STREAMS);
    assert!(in_prefill > 100 && in_decode > 1_000 && in_flight > 100 && waiting > 100);
    let pool = s.pool();
    pool.check_invariants().unwrap();
    assert_eq!(pool.free_blocks(), pool.num_blocks());
    for i in 0..pool.num_blocks() {
        assert_eq!(pool.ref_count(BlockId(i as u32)), 0);
    }
    let stats = s.stats();
    assert_eq!((stats.running, stats.waiting, stats.kv_usage), (0, 0, 0.0));
    assert!(stats.prefix_cache_hit_tokens > 0);
}
