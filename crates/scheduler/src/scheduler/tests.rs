use super::*;

fn scheduler(block_size: usize, num_blocks: usize, max_num_seqs: usize, max_batched_tokens: usize) -> Scheduler {
    let config =
        SchedulerConfig { block_size, num_blocks, max_num_seqs, max_batched_tokens, enable_prefix_cache: true };
    Scheduler::new(config).unwrap()
}

/// Completes `plan`, sampling `token` for every item that wants logits.
fn complete(s: &mut Scheduler, plan: &StepPlan, token: u32) -> Vec<SeqId> {
    let sampled: Vec<_> = plan.items.iter().filter(|i| i.wants_logits).map(|i| (i.id, Some(token))).collect();
    s.complete_step(plan, &sampled).unwrap()
}

fn item(plan: &StepPlan, id: SeqId) -> &ScheduledSeq {
    plan.items.iter().find(|i| i.id == id).unwrap_or_else(|| panic!("{id} is not in {plan:?}"))
}

fn table(s: &Scheduler, id: SeqId) -> Vec<BlockId> {
    s.sequence(id).unwrap().block_table()
}

const A: SeqId = SeqId(1);
const B: SeqId = SeqId(2);
const C: SeqId = SeqId(3);

#[test]
fn refuses_bad_configurations_and_requests() {
    assert!(Scheduler::new(SchedulerConfig { max_num_seqs: 0, ..SchedulerConfig::new(16, 8) }).is_err());
    assert!(Scheduler::new(SchedulerConfig { max_batched_tokens: 100, ..SchedulerConfig::new(16, 8) }).is_err());
    assert!(Scheduler::new(SchedulerConfig::new(0, 8)).is_err());
    assert!(Scheduler::new(SchedulerConfig::new(16, 0)).is_err());

    let mut s = scheduler(2, 2, 1, 4);
    assert_eq!(s.add_request(A, vec![], 1), Err(SchedulerError::EmptyPrompt(A)));
    assert_eq!(s.add_request(A, vec![1], 0), Err(SchedulerError::NoNewTokens(A)));
    assert_eq!(s.add_request(A, vec![1; 5], 1), Err(SchedulerError::TooLong { id: A, tokens: 5, capacity: 4 }));
    s.add_request(A, vec![1; 4], 1).unwrap();
    assert_eq!(s.add_request(A, vec![1], 1), Err(SchedulerError::DuplicateId(A)));
    assert_eq!(s.abort(B), Err(SchedulerError::UnknownId(B)));
    assert!(!s.contains(B));
}

#[test]
fn plans_slots_block_tables_and_logits() {
    let mut s = scheduler(4, 8, 4, 64);
    s.add_request(A, vec![10, 11, 12, 13, 14, 15], 3).unwrap();
    let plan = s.schedule();
    let a = item(&plan, A);
    assert_eq!(a.positions, 0..6);
    assert_eq!(a.tokens, [10, 11, 12, 13, 14, 15]);
    assert_eq!(a.block_table, [BlockId(0), BlockId(1)]);
    assert_eq!(a.slots, [0, 1, 2, 3, 4, 5]);
    assert_eq!(a.context_len(), 6);
    assert!(a.wants_logits);
    assert!(complete(&mut s, &plan, 16).is_empty());
    assert_eq!(s.sequence(A).unwrap().tokens(), [10, 11, 12, 13, 14, 15, 16]);

    for (position, token) in [(6, 17), (7, 18)] {
        let plan = s.schedule();
        let a = item(&plan, A);
        assert_eq!(a.positions, position..position + 1);
        assert_eq!(a.slots, [position], "blocks 0 and 1 hold positions 0..8");
        assert!(a.wants_logits);
        let ended = complete(&mut s, &plan, token);
        assert_eq!(ended.is_empty(), token == 17, "A ends after its third token");
    }
    assert!(!s.has_unfinished());
    assert_eq!(s.pool().free_blocks(), 8);
}

#[test]
fn a_long_prompt_is_chunked_and_does_not_stall_decoding() {
    let mut s = scheduler(4, 64, 4, 8);
    s.add_request(A, vec![1, 2, 3], 100).unwrap();
    let plan = s.schedule();
    complete(&mut s, &plan, 7);

    s.add_request(B, (0..40).collect(), 1).unwrap();
    let mut prefilled = 0;
    let mut decoded = 3;
    while prefilled < 40 {
        let plan = s.schedule();
        assert_eq!(plan.items[0].id, A, "decodes go first");
        assert_eq!(item(&plan, A).positions, decoded..decoded + 1);
        let b = item(&plan, B);
        assert_eq!(b.positions.start, prefilled);
        assert_eq!(b.tokens.len(), 7.min(40 - prefilled), "B gets what the decode leaves of the budget");
        assert_eq!(b.wants_logits, b.positions.end == 40);
        assert!(plan.num_tokens() <= 8);
        prefilled = b.positions.end;
        decoded += 1;
        complete(&mut s, &plan, 7);
    }
    assert!(!s.contains(B), "B ended after its one token");
}

#[test]
fn prefix_hits_share_blocks_and_leave_a_token_to_compute() {
    let mut s = scheduler(4, 16, 4, 64);
    let prompt: Vec<u32> = (1..=8).collect();
    s.add_request(A, prompt.clone(), 1).unwrap();
    let plan = s.schedule();
    let a_blocks = item(&plan, A).block_table.clone();
    assert_eq!(complete(&mut s, &plan, 99), [A]);
    assert_eq!(s.pool().evictable_blocks(), 2, "A's full blocks stay cached");

    // B extends A's prompt: both blocks hit. C is A's prompt exactly: its last block is
    // recomputed so that its last token has logits. D differs in the first token: no hit.
    s.add_request(B, [prompt.clone(), vec![9, 10]].concat(), 1).unwrap();
    s.add_request(C, prompt.clone(), 1).unwrap();
    let d = SeqId(4);
    s.add_request(d, [vec![0], prompt[1..].to_vec()].concat(), 1).unwrap();
    let plan = s.schedule();
    let b = item(&plan, B);
    assert_eq!(b.positions, 8..10);
    assert_eq!(b.block_table[..2], a_blocks[..]);
    let c = item(&plan, C);
    assert_eq!(c.positions, 4..8);
    assert_eq!(c.block_table[0], a_blocks[0]);
    assert_ne!(c.block_table[1], a_blocks[1]);
    assert_eq!(item(&plan, d).positions, 0..8);
    assert_eq!(s.pool().ref_count(a_blocks[0]), 2);

    let stats = s.stats();
    assert_eq!(stats.prefix_cache_queried_tokens, 8 + 10 + 8 + 8);
    assert_eq!(stats.prefix_cache_hit_tokens, 8 + 4);
    assert_eq!(stats.running, 3);
    complete(&mut s, &plan, 99);
    assert!(!s.has_unfinished());
    assert_eq!(s.pool().free_blocks(), 16);
    s.pool().check_invariants().unwrap();
}

#[test]
fn prefix_cache_can_be_disabled() {
    let config = SchedulerConfig { enable_prefix_cache: false, ..SchedulerConfig::new(2, 8) };
    let mut s = Scheduler::new(config).unwrap();
    for id in [A, B] {
        s.add_request(id, vec![1, 2, 3, 4, 5], 1).unwrap();
        let plan = s.schedule();
        assert_eq!(item(&plan, id).positions, 0..5);
        complete(&mut s, &plan, 0);
    }
    assert_eq!(s.pool().cached_blocks(), 0);
    assert_eq!(s.stats().prefix_cache_queried_tokens, 0);
}

#[test]
fn the_youngest_sequence_is_preempted_and_recomputed() {
    let config = SchedulerConfig {
        block_size: 2,
        num_blocks: 4,
        max_num_seqs: 2,
        max_batched_tokens: 8,
        enable_prefix_cache: false,
    };
    let mut s = Scheduler::new(config).unwrap();
    s.add_request(A, vec![1, 2], 5).unwrap();
    s.add_request(B, vec![3, 4], 5).unwrap();
    let mut token = 100;
    let mut preempted_at = None;
    for step in 0.. {
        let plan = s.schedule();
        if !plan.preempted.is_empty() {
            assert_eq!(plan.preempted, [B]);
            assert!(plan.items.iter().all(|i| i.id == A));
            assert!(!s.sequence(B).unwrap().is_running());
            assert!(table(&s, B).is_empty());
            preempted_at = Some(step);
        }
        if let Some(b) = plan.items.iter().find(|i| i.id == B) {
            if preempted_at.is_some() {
                // Recomputed from its prompt and the tokens it had generated.
                assert_eq!(b.positions.start, 0);
                assert_eq!(b.tokens, s.sequence(B).unwrap().tokens());
                assert!(b.wants_logits);
                break;
            }
        }
        token += 1;
        complete(&mut s, &plan, token);
        assert!(step < 20);
    }
    assert!(preempted_at.is_some());
    assert_eq!(s.stats().preemptions, 1);
}

#[test]
fn a_sequence_that_cannot_fit_alone_fails_instead_of_spinning() {
    let mut s = scheduler(2, 2, 1, 4);
    s.add_request(A, vec![1, 2, 3, 4], 10).unwrap();
    let plan = s.schedule();
    assert_eq!(item(&plan, A).positions, 0..4);
    complete(&mut s, &plan, 5);
    let plan = s.schedule();
    assert!(plan.items.is_empty());
    assert_eq!(plan.failed, [(A, SchedulerError::TooLong { id: A, tokens: 5, capacity: 4 })]);
    assert!(!s.has_unfinished());
    assert_eq!(s.pool().free_blocks(), 2);
}

#[test]
fn none_ends_a_sequence_and_finish_releases_it() {
    let mut s = scheduler(4, 8, 4, 64);
    s.add_request(A, vec![1, 2, 3], 10).unwrap();
    s.add_request(B, vec![1, 2, 3], 10).unwrap();
    let plan = s.schedule();
    let ended = s.complete_step(&plan, &[(A, None), (B, Some(4))]).unwrap();
    assert_eq!(ended, [A]);
    assert!(!s.contains(A));
    s.finish(B).unwrap();
    assert_eq!(s.pool().free_blocks(), 8);
}

#[test]
fn a_fork_copies_the_shared_partial_block_on_first_write() {
    let mut s = scheduler(4, 16, 4, 64);
    s.add_request(A, vec![1, 2, 3, 4, 5, 6], 10).unwrap();
    let plan = s.schedule();
    assert_eq!(s.fork(A, B, 8), Err(SchedulerError::CannotFork { id: A, reason: "a step is in flight" }));
    complete(&mut s, &plan, 7);
    s.fork(A, B, 8).unwrap();
    assert_eq!(s.fork(A, B, 8), Err(SchedulerError::DuplicateId(B)));
    assert_eq!(s.sequence(B).unwrap().tokens(), [1, 2, 3, 4, 5, 6, 8]);
    let shared = table(&s, A);
    assert_eq!(table(&s, B), shared);
    assert_eq!(s.pool().ref_count(shared[1]), 2);

    let plan = s.schedule();
    let (a, b) = (item(&plan, A), item(&plan, B));
    assert_eq!(a.positions, 6..7);
    assert_eq!(b.positions, 6..7);
    assert_eq!(plan.copies, [BlockCopy { src: shared[1], dst: a.block_table[1] }]);
    assert_eq!(a.block_table[0], shared[0], "full blocks stay shared");
    assert_eq!(b.block_table, shared, "the last holder writes in place");
    assert_eq!(a.slots, [a.block_table[1].index() * 4 + 2]);
    assert_eq!(b.slots, [shared[1].index() * 4 + 2]);
    assert_eq!(s.pool().ref_count(shared[1]), 1);
    complete(&mut s, &plan, 9);
    assert_eq!(s.sequence(A).unwrap().tokens(), [1, 2, 3, 4, 5, 6, 7, 9]);
    assert_eq!(s.sequence(B).unwrap().tokens(), [1, 2, 3, 4, 5, 6, 8, 9]);
}

#[test]
fn fork_needs_a_freshly_sampled_token() {
    let mut s = scheduler(4, 16, 4, 4);
    s.add_request(A, (0..10).collect(), 10).unwrap();
    assert!(matches!(s.fork(A, B, 0), Err(SchedulerError::CannotFork { .. })), "waiting");
    let plan = s.schedule();
    complete(&mut s, &plan, 0);
    assert!(matches!(s.fork(A, B, 0), Err(SchedulerError::CannotFork { .. })), "mid-prefill");
    assert_eq!(s.fork(C, B, 0), Err(SchedulerError::UnknownId(C)));
}

#[test]
fn a_fork_beyond_max_num_seqs_waits_to_be_recomputed() {
    let mut s = scheduler(4, 16, 1, 8);
    s.add_request(A, vec![1, 2, 3], 10).unwrap();
    let plan = s.schedule();
    complete(&mut s, &plan, 4);
    s.fork(A, B, 5).unwrap();
    let child = s.sequence(B).unwrap();
    assert!(!child.is_running());
    assert!(child.block_table().is_empty());
    assert_eq!(child.tokens(), [1, 2, 3, 5]);
    assert_eq!(child.num_generated(), 1);
}

#[test]
fn an_abandoned_plan_counts_for_nothing() {
    let mut s = scheduler(4, 16, 1, 4);
    s.add_request(A, (0..10).collect(), 1).unwrap();
    let first = s.schedule();
    assert_eq!(item(&first, A).positions, 0..4);
    let again = s.schedule();
    assert_eq!(item(&again, A).positions, 0..4);
    assert_ne!(first.step, again.step);
    assert_eq!(s.complete_step(&first, &[]), Err(SchedulerError::StalePlan { plan: first.step }));
    s.complete_step(&again, &[]).unwrap();
    assert_eq!(s.complete_step(&again, &[]), Err(SchedulerError::StalePlan { plan: again.step }));
    assert_eq!(item(&s.schedule(), A).positions, 4..8);
}

#[test]
fn an_abandoned_copy_on_write_is_recomputed() {
    let mut s = scheduler(4, 16, 4, 64);
    s.add_request(A, vec![1, 2, 3, 4, 5, 6], 10).unwrap();
    let plan = s.schedule();
    complete(&mut s, &plan, 7);
    s.fork(A, B, 8).unwrap();
    let shared = table(&s, A);
    let abandoned = s.schedule();
    assert_eq!(abandoned.copies.len(), 1);
    // The copy may not have run: A recomputes the block it copied instead.
    let plan = s.schedule();
    assert!(plan.copies.is_empty());
    let a = item(&plan, A);
    assert_eq!(a.positions, 4..7);
    assert_eq!(a.tokens, [5, 6, 7]);
    assert_ne!(a.block_table[1], shared[1]);
    assert_eq!(item(&plan, B).block_table, shared);
    assert_eq!(s.pool().ref_count(shared[1]), 1);
    complete(&mut s, &plan, 9);
    assert_eq!(s.sequence(A).unwrap().num_computed(), 7);
}

#[test]
fn stats_follow_the_queue_and_the_pool() {
    let mut s = scheduler(4, 10, 1, 8);
    s.add_request(A, vec![1; 8], 5).unwrap();
    s.add_request(B, vec![1; 8], 5).unwrap();
    let stats = s.stats();
    assert_eq!((stats.waiting, stats.running, stats.kv_usage), (2, 0, 0.0));
    let plan = s.schedule();
    complete(&mut s, &plan, 0);
    let stats = s.stats();
    assert_eq!((stats.waiting, stats.running), (1, 1));
    assert!((stats.kv_usage - 0.2).abs() < 1e-9);
    assert_eq!(stats.cached_blocks, 2);
    assert_eq!(stats.prefix_cache_hit_rate(), 0.0);
}
