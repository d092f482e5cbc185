//! One forward pass over a batch of sequences whose KV caches live in fixed-size blocks of a
//! shared pool (paged attention). The block bookkeeping (which sequence owns which block) is the
//! scheduler's; this module only turns its decisions into one graph: every matmul runs once over
//! all the batch's tokens, attention reads each token's own sequence through its block table.

use tessera_backend::{DType, GraphBuilder, OwnedBuffer, TensorRef};
use tessera_models::{KvInputs, Logits, StepInputs};

use crate::context::LoadedModel;
use crate::kv_cache::KvCache;
use crate::RuntimeError;

/// Per-layer K and V pools of `num_blocks * block_size` rows.
pub struct PagedKvCache {
    cache: KvCache,
    block_size: usize,
}

impl PagedKvCache {
    pub fn num_blocks(&self) -> usize {
        self.cache.capacity() / self.block_size
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Device memory the pools hold, in bytes.
    pub fn bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Copies block `src`'s keys and values into block `dst`, in every layer (copy-on-write of a
    /// block two sequences shared).
    pub fn copy_block(&self, src: usize, dst: usize) -> Result<(), RuntimeError> {
        let blocks = self.num_blocks();
        if src >= blocks || dst >= blocks {
            return Err(RuntimeError::Invalid(format!("block copy {src} -> {dst} outside a pool of {blocks}")));
        }
        let block_bytes = self.block_size * self.cache.row_width() * self.cache.dtype().block_bytes();
        let mut staging = vec![0u8; block_bytes];
        for (k, v) in self.cache.layers() {
            for buffer in [k, v] {
                buffer.download(src * block_bytes, &mut staging)?;
                buffer.upload(dst * block_bytes, &staging)?;
            }
        }
        Ok(())
    }
}

/// One sequence's share of a batched step.
#[derive(Clone, Debug)]
pub struct BatchItem<'a> {
    /// New tokens, at positions `start..start + tokens.len()` of the sequence.
    pub tokens: &'a [u32],
    pub start: usize,
    /// Pool row that receives each new token's K and V (`block * block_size + offset`).
    pub slots: &'a [u32],
    /// The sequence's blocks, in position order; must cover every position up to the last new one.
    pub block_table: &'a [u32],
    /// Return the logits of the last new token.
    pub want_logits: bool,
}

impl LoadedModel {
    /// Allocates block pools for `num_blocks` blocks of `block_size` tokens per layer.
    pub fn new_paged_cache(
        &self,
        num_blocks: usize,
        block_size: usize,
        kv_type: DType,
    ) -> Result<PagedKvCache, RuntimeError> {
        if num_blocks == 0 || block_size == 0 {
            return Err(RuntimeError::Invalid("a paged cache needs at least one block of at least one token".into()));
        }
        if !matches!(kv_type, DType::F16 | DType::F32) {
            return Err(RuntimeError::Invalid(format!("KV cache type {kv_type} is not supported (f16, f32)")));
        }
        let rows =
            num_blocks.checked_mul(block_size).ok_or_else(|| RuntimeError::Invalid("KV pool size overflows".into()))?;
        let cfg = self.config();
        let cache = KvCache::new(self.backend(), cfg.n_layers, rows, cfg.kv_dim(), kv_type)?;
        Ok(PagedKvCache { cache, block_size })
    }

    /// Runs one forward step over `items` and returns, in order, the logits of each item that
    /// wants them (`vocab` floats each).
    pub fn eval_batch(&self, cache: &PagedKvCache, items: &[BatchItem<'_>]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let vocab = self.config().vocab_size;
        let (pool_rows, bs) = (cache.cache.capacity(), cache.block_size);
        let n: usize = items.iter().map(|i| i.tokens.len()).sum();
        if n == 0 {
            return Err(RuntimeError::Invalid("no tokens to evaluate".into()));
        }
        let max_blocks = items.iter().map(|i| i.block_table.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(n * 4);
        let mut pos = Vec::with_capacity(n * 4);
        let mut slots = Vec::with_capacity(n * 4);
        let mut tables = Vec::with_capacity(n * max_blocks * 4);
        let mut out_rows = Vec::new();
        let mut row = 0usize;
        for (k, item) in items.iter().enumerate() {
            let len = item.tokens.len();
            if len == 0 || item.slots.len() != len {
                return Err(RuntimeError::Invalid(format!(
                    "batch item {k}: {len} tokens and {} slots (need at least one, one slot each)",
                    item.slots.len()
                )));
            }
            let end = item.start + len;
            if end > item.block_table.len() * bs {
                return Err(RuntimeError::Invalid(format!(
                    "batch item {k}: position {} is beyond its {} blocks of {bs}",
                    end - 1,
                    item.block_table.len()
                )));
            }
            if let Some(&b) = item.block_table.iter().find(|&&b| (b as usize + 1) * bs > pool_rows) {
                return Err(RuntimeError::Invalid(format!("batch item {k}: block {b} is outside the pool")));
            }
            if let Some(&s) = item.slots.iter().find(|&&s| s as usize >= pool_rows) {
                return Err(RuntimeError::Invalid(format!("batch item {k}: slot {s} is outside the pool")));
            }
            self.check_tokens(item.tokens)?;
            for (i, &t) in item.tokens.iter().enumerate() {
                ids.extend_from_slice(&(t as i32).to_le_bytes());
                pos.extend_from_slice(&((item.start + i) as i32).to_le_bytes());
                slots.extend_from_slice(&(item.slots[i] as i32).to_le_bytes());
                // Rows of one sequence repeat its table, padded with block 0 (never read: padding
                // lies beyond every position of the sequence).
                for b in 0..max_blocks {
                    let entry = item.block_table.get(b).copied().unwrap_or(0);
                    tables.extend_from_slice(&(entry as i32).to_le_bytes());
                }
            }
            row += len;
            if item.want_logits {
                out_rows.push(row - 1);
            }
        }
        let n_out = out_rows.len();
        let backend = self.backend();
        let buffer = |bytes: &[u8]| OwnedBuffer::with_data(backend, bytes);
        let (ids_buf, pos_buf, slots_buf, tables_buf) =
            (buffer(&ids)?, buffer(&pos)?, buffer(&slots)?, buffer(&tables)?);
        let rows_bytes: Vec<u8> = out_rows.iter().flat_map(|&r| (r as i32).to_le_bytes()).collect();
        // A step that wants no logits still computes the last row, as `Context::eval` does.
        let rows_buf = buffer(if n_out > 0 { &rows_bytes } else { &[0u8; 4][..] })?;
        let out_buf = OwnedBuffer::alloc(backend, n_out.max(1) * vocab * 4)?;

        let mut g = GraphBuilder::new();
        let leaf = |b: &OwnedBuffer| TensorRef { buffer: b.id(), offset: 0 };
        let tokens = g.leaf(leaf(&ids_buf), DType::I32, [n])?;
        let positions = g.leaf(leaf(&pos_buf), DType::I32, [n])?;
        let slots_node = g.leaf(leaf(&slots_buf), DType::I32, [n])?;
        let tables_node = g.leaf(leaf(&tables_buf), DType::I32, [n, max_blocks])?;
        let logit_rows = if n_out > 0 {
            g.leaf(leaf(&rows_buf), DType::I32, [n_out])?
        } else {
            let last = ((n - 1) as i32).to_le_bytes();
            rows_buf.upload(0, &last)?;
            g.leaf(leaf(&rows_buf), DType::I32, [1])?
        };
        let width = cache.cache.row_width();
        let kv_type = cache.cache.dtype();
        let layers = cache
            .cache
            .layers()
            .iter()
            .map(|(k, v)| {
                Ok((g.leaf(leaf(k), kv_type, [pool_rows, width])?, g.leaf(leaf(v), kv_type, [pool_rows, width])?))
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let kv = KvInputs::Paged { layers: &layers, slots: slots_node, tables: tables_node, block_size: bs };
        let logits = Logits::Rows { ids: logit_rows, count: n_out.max(1) };
        let step = StepInputs { tokens, positions, n_tokens: n, kv, logits };
        let logits_node = self.model.forward(&mut g, &step)?;
        let out_leaf = g.leaf(leaf(&out_buf), DType::F32, [n_out.max(1), vocab])?;
        g.label("logits");
        g.store(logits_node, out_leaf, 0)?;
        self.execute(&g.finish())?;
        if n_out == 0 {
            return Ok(Vec::new());
        }
        let flat = out_buf.download_f32(0, n_out * vocab)?;
        Ok(flat.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}
