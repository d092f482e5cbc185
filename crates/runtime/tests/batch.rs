//! A batch of sequences over the paged KV cache gives, for every sequence, exactly the logits it
//! gives alone in its own contiguous context: batching must never change what a user gets.

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_runtime::{argmax, BatchItem, ContextOptions, LoadedModel, Logits};
use tessera_testkit::{fixtures_dir, test_model, SMOLLM2};

const BLOCK: usize = 16;

/// Greedy continuation of `prompt` by `n` tokens in a single-sequence context, with the logits
/// of each step.
fn alone(model: &LoadedModel, prompt: &[u32], n: usize) -> Vec<Vec<f32>> {
    let mut ctx = model.new_context(ContextOptions { n_ctx: 256, ..ContextOptions::default() }).expect("context");
    let mut rows = vec![ctx.eval(prompt, Logits::Last).expect("prompt")];
    for _ in 1..n {
        let token = argmax(rows.last().expect("row"));
        rows.push(ctx.eval(&[token], Logits::Last).expect("step"));
    }
    rows
}

/// The same for every prompt at once: prompts enter in chunks of `chunk` tokens, mixed in one
/// batch with sequences already decoding, as the server's scheduler does it. Blocks are handed
/// out in a scrambled order so no sequence's cache is contiguous.
fn together(model: &LoadedModel, prompts: &[Vec<u32>], n: usize, chunk: usize) -> Vec<Vec<Vec<f32>>> {
    let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0) + n;
    let blocks_per_seq = max_len.div_ceil(BLOCK);
    let num_blocks = blocks_per_seq * prompts.len();
    let cache = model.new_paged_cache(num_blocks, BLOCK, tessera_backend::DType::F16).expect("pool");
    // Block b of sequence s is pool block (s + b * prompts.len()) reversed: interleaved, backwards.
    let tables: Vec<Vec<u32>> = (0..prompts.len())
        .map(|s| (0..blocks_per_seq).map(|b| (num_blocks - 1 - (s + b * prompts.len())) as u32).collect())
        .collect();
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut computed = vec![0usize; prompts.len()];
    let mut out: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()];
    while out.iter().any(|o| o.len() < n) {
        let mut spans = Vec::new();
        for s in 0..prompts.len() {
            if out[s].len() >= n {
                continue;
            }
            let end = (computed[s] + chunk).min(seqs[s].len());
            spans.push((s, computed[s], end));
        }
        let slots: Vec<Vec<u32>> = spans
            .iter()
            .map(|&(s, a, b)| {
                (a..b).map(|p| tables[s][p / BLOCK] * BLOCK as u32 + (p % BLOCK) as u32).collect::<Vec<u32>>()
            })
            .collect();
        let items: Vec<BatchItem<'_>> = spans
            .iter()
            .zip(&slots)
            .map(|(&(s, a, b), slots)| BatchItem {
                tokens: &seqs[s][a..b],
                start: a,
                slots,
                block_table: &tables[s][..b.div_ceil(BLOCK)],
                want_logits: b == seqs[s].len(),
            })
            .collect();
        let logits = model.eval_batch(&cache, &items).expect("batch");
        let mut rows = logits.into_iter();
        for &(s, _, b) in &spans {
            computed[s] = b;
            if b == seqs[s].len() {
                let row = rows.next().expect("a row per sequence that wanted one");
                seqs[s].push(argmax(&row));
                out[s].push(row);
            }
        }
    }
    out
}

fn prompts(model: &LoadedModel) -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(fixtures_dir().join("text").join("ppl.txt")).expect("text fixture");
    let words: Vec<&str> = text.split_whitespace().collect();
    // 16 prompts of different lengths (3 to about 90 tokens) from different places of the text.
    (0..16)
        .map(|i| {
            let start = i * 97 % (words.len() - 80);
            let len = 2 + i * 5;
            model.tokenizer.encode(&words[start..start + len].join(" "), true, false)
        })
        .collect()
}

fn assert_same(model: &LoadedModel, chunk: usize) {
    let prompts = prompts(model);
    let batched = together(model, &prompts, 6, chunk);
    for (i, prompt) in prompts.iter().enumerate() {
        let single = alone(model, prompt, 6);
        for (step, (a, b)) in single.iter().zip(&batched[i]).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "prompt {i} ({} tokens), step {step}: batched logits differ from single", prompt.len());
        }
    }
}

#[test]
fn smollm2_batch_equals_single_sequences() {
    let Some(path) = test_model(SMOLLM2) else { return };
    let model = LoadedModel::load(&path, Arc::new(CpuBackend::new(2)), None).expect("loads");
    assert_same(&model, 7);
}

#[test]
fn tiny_models_batch_equals_single_sequences() {
    for name in ["llama", "gemma3"] {
        let dir = fixtures_dir().join("hf").join(name);
        let model = LoadedModel::load(&dir, Arc::new(CpuBackend::new(2)), None).expect("loads");
        assert_same(&model, 5);
    }
}
