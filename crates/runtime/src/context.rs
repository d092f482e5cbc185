//! A model on a device ([`LoadedModel`]) and one sequence's state over it ([`Context`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_backend::{
    fallback, Backend, BackendError, DType, Graph, GraphBuilder, NodeId, OwnedBuffer, Shape, TensorRef,
};
use tessera_formats::ModelSource;
use tessera_models::{KvInputs, Logits, Model, ModelConfig, StepInputs};
use tessera_tokenizer::Tokenizer;

use crate::device_weights::DeviceWeights;
use crate::kv_cache::KvCache;
use crate::RuntimeError;

/// A model whose weights are on a backend, with its tokenizer.
pub struct LoadedModel {
    pub model: Box<dyn Model>,
    pub tokenizer: Tokenizer,
    backend: Arc<dyn Backend>,
    cpu_fallback: Option<Arc<dyn Backend>>,
    weights: DeviceWeights,
    pub load_time: Duration,
    // Last: weights may point into the mapped files this keeps open.
    pub source: ModelSource,
}

impl LoadedModel {
    /// Opens the model at `path` and places its weights on `backend`. Ops the backend lacks run on
    /// `cpu_fallback` when given.
    pub fn load(
        path: &Path,
        backend: Arc<dyn Backend>,
        cpu_fallback: Option<Arc<dyn Backend>>,
    ) -> Result<LoadedModel, RuntimeError> {
        let start = Instant::now();
        let source = ModelSource::open(path)?;
        // The architecture first: an unsupported model is the error worth reporting.
        let mut weights = DeviceWeights::new(backend.clone());
        let model = tessera_models::load(&source, &mut weights)?;
        let tokenizer = Tokenizer::from_source(&source)?;
        Ok(LoadedModel { model, tokenizer, backend, cpu_fallback, weights, load_time: start.elapsed(), source })
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Bytes of weights placed on the device (mapped or uploaded).
    pub fn weight_bytes(&self) -> u64 {
        self.weights.bytes
    }

    /// The tensor name of the weight held in `buffer`, if it holds one.
    pub fn weight_name(&self, buffer: tessera_backend::BufferId) -> Option<&str> {
        self.weights.names.get(&buffer).map(String::as_str)
    }

    /// The names of the model's weight tensors, sorted.
    pub fn weight_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.weights.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The shape of weight tensor `name`.
    pub fn weight_shape(&self, name: &str) -> Option<&Shape> {
        self.weights.by_name.get(name).map(|w| &w.shape)
    }

    /// Weight tensor `name` as stored on the device: its type, shape and bytes.
    pub fn weight_data(&self, name: &str) -> Result<Option<(DType, Shape, Vec<u8>)>, RuntimeError> {
        let Some(w) = self.weights.by_name.get(name) else { return Ok(None) };
        let len = w.dtype.bytes_for(w.shape.count()).map_err(|e| RuntimeError::Invalid(format!("{name}: {e}")))?;
        let mut bytes = vec![0u8; len];
        self.backend.download(w.tensor.buffer, w.tensor.offset, &mut bytes)?;
        Ok(Some((w.dtype, w.shape.clone(), bytes)))
    }

    /// Refuses token ids outside the vocabulary before any of them reaches a graph.
    pub(crate) fn check_tokens(&self, tokens: &[u32]) -> Result<(), RuntimeError> {
        let vocab = self.config().vocab_size;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(&id) => Err(RuntimeError::BadToken { id, vocab }),
            None => Ok(()),
        }
    }

    /// Number of weight buffers on the device.
    pub fn weight_buffers(&self) -> usize {
        self.weights.buffers.len()
    }

    /// A fresh sequence context with its own KV cache.
    pub fn new_context(&self, options: ContextOptions) -> Result<Context<'_>, RuntimeError> {
        let cfg = self.config();
        let n_ctx = if options.n_ctx == 0 { cfg.context_length.min(4096) } else { options.n_ctx };
        if options.n_batch == 0 {
            return Err(RuntimeError::Invalid("batch size must be at least 1".into()));
        }
        if !matches!(options.kv_type, DType::F16 | DType::F32) {
            return Err(RuntimeError::Invalid(format!(
                "KV cache type {} is not supported (f16, f32)",
                options.kv_type
            )));
        }
        let kv = KvCache::new(&self.backend, cfg.n_layers, n_ctx, cfg.kv_dim(), options.kv_type)?;
        Ok(Context { model: self, kv, n_past: 0, n_batch: options.n_batch })
    }

    /// Runs a graph, sending ops the backend does not support to the CPU fallback.
    pub fn execute(&self, graph: &Graph) -> Result<(), RuntimeError> {
        let all_supported = (0..graph.len()).all(|n| self.backend.supports_op(graph, n));
        match (&self.cpu_fallback, all_supported) {
            (_, true) => self.backend.execute(graph)?,
            (Some(cpu), false) => fallback::execute(&self.backend, cpu, graph)?,
            (None, false) => {
                let node = (0..graph.len()).find(|&n| !self.backend.supports_op(graph, n)).unwrap_or(0);
                return Err(BackendError::Unsupported {
                    backend: self.backend.info().backend,
                    node,
                    op: graph.node(node).op.name().to_string(),
                }
                .into());
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ContextOptions {
    /// Positions the KV cache holds; 0 means the model's training context, at most 4096.
    pub n_ctx: usize,
    /// Most tokens evaluated in one forward step; longer prompts are split.
    pub n_batch: usize,
    /// Element type of the KV cache: F16 (default) or F32.
    pub kv_type: DType,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions { n_ctx: 0, n_batch: 512, kv_type: DType::F16 }
    }
}

/// One sequence being evaluated: its KV cache and how many positions it holds.
pub struct Context<'m> {
    model: &'m LoadedModel,
    kv: KvCache,
    n_past: usize,
    n_batch: usize,
}

impl<'m> Context<'m> {
    pub fn model(&self) -> &'m LoadedModel {
        self.model
    }

    /// Tokens already in the cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    pub fn capacity(&self) -> usize {
        self.kv.capacity()
    }

    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Forgets the sequence (the cache is overwritten as positions are reused).
    pub fn clear(&mut self) {
        self.n_past = 0;
    }

    /// Keeps only the first `n` positions, so a new continuation can reuse a shared prefix.
    pub fn truncate(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
    }

    /// Appends `tokens` to the sequence and returns the requested logits rows, row-major
    /// `[rows, vocab]`. `logits` is relative to `tokens` as a whole.
    pub fn eval(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, RuntimeError> {
        let n = tokens.len();
        if n == 0 {
            return Err(RuntimeError::Invalid("no tokens to evaluate".into()));
        }
        let needed = self.n_past + n;
        if needed > self.kv.capacity() {
            return Err(RuntimeError::ContextFull { needed, capacity: self.kv.capacity() });
        }
        self.model.check_tokens(tokens)?;
        let vocab = self.model.config().vocab_size;
        let first_wanted = logits.first_row(n);
        let mut out = Vec::with_capacity((n - first_wanted) * vocab);
        for (c, chunk) in tokens.chunks(self.n_batch).enumerate() {
            let offset = c * self.n_batch;
            let end = offset + chunk.len();
            // Chunks without wanted rows still run the whole model; only their last row is kept.
            let (step_logits, keep) = if end <= first_wanted {
                (Logits::Last, false)
            } else {
                (Logits::From(first_wanted.saturating_sub(offset)), true)
            };
            let rows = self.step(chunk, step_logits)?;
            if keep {
                out.extend_from_slice(&rows);
            }
        }
        Ok(out)
    }

    /// One forward step over at most `n_batch` tokens.
    fn step(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, RuntimeError> {
        let backend = self.model.backend();
        let n = tokens.len();
        let vocab = self.model.config().vocab_size;
        let out_rows = n - logits.first_row(n);
        let out_buf = OwnedBuffer::alloc(backend, out_rows * vocab * 4)?;
        let mut g = GraphBuilder::new();
        let (logits_node, _inputs) = self.build_step(&mut g, tokens, logits)?;
        let leaf = |b: &OwnedBuffer| TensorRef { buffer: b.id(), offset: 0 };
        let out_leaf = g.leaf(leaf(&out_buf), DType::F32, [out_rows, vocab])?;
        g.label("logits");
        g.store(logits_node, out_leaf, 0)?;
        let graph = g.finish();
        self.model.execute(&graph)?;
        self.n_past += n;
        Ok(out_buf.download_f32(0, out_rows * vocab)?)
    }

    /// Adds one forward step over `tokens` to `g` (positions follow the sequence so far) and
    /// returns the logits node with the input buffers, which must outlive the graph's run.
    pub(crate) fn build_step(
        &self,
        g: &mut GraphBuilder,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<(NodeId, [OwnedBuffer; 2]), RuntimeError> {
        let backend = self.model.backend();
        let n = tokens.len();
        let ids: Vec<u8> = tokens.iter().flat_map(|&t| (t as i32).to_le_bytes()).collect();
        let pos: Vec<u8> = (self.n_past..self.n_past + n).flat_map(|p| (p as i32).to_le_bytes()).collect();
        let ids_buf = OwnedBuffer::with_data(backend, &ids)?;
        let pos_buf = OwnedBuffer::with_data(backend, &pos)?;
        let leaf = |b: &OwnedBuffer| TensorRef { buffer: b.id(), offset: 0 };
        let tokens_node = g.leaf(leaf(&ids_buf), DType::I32, [n])?;
        let positions = g.leaf(leaf(&pos_buf), DType::I32, [n])?;
        let (capacity, width) = (self.kv.capacity(), self.kv.row_width());
        let kv = self
            .kv
            .layers()
            .iter()
            .map(|(k, v)| {
                Ok((
                    g.leaf(leaf(k), self.kv.dtype(), [capacity, width])?,
                    g.leaf(leaf(v), self.kv.dtype(), [capacity, width])?,
                ))
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let kv = KvInputs::Contiguous { start: self.n_past, layers: &kv };
        let step = StepInputs { tokens: tokens_node, positions, n_tokens: n, kv, logits };
        let logits_node = self.model.model.forward(g, &step)?;
        Ok((logits_node, [ids_buf, pos_buf]))
    }

    /// The graph of one forward step over `n` tokens (ids all zero) at this context's next
    /// positions, its logits rows stored into `out` (`[rows, vocab]` F32), for runtimes that
    /// compile whole graphs ahead of time. Returns the graph with its ids and positions buffers.
    pub fn step_graph(
        &self,
        n: usize,
        logits: Logits,
        out: &OwnedBuffer,
    ) -> Result<(Graph, [OwnedBuffer; 2]), RuntimeError> {
        let vocab = self.model.config().vocab_size;
        let rows = n - logits.first_row(n);
        let mut g = GraphBuilder::new();
        let (logits_node, inputs) = self.build_step(&mut g, &vec![0; n], logits)?;
        let out_leaf = g.leaf(TensorRef { buffer: out.id(), offset: 0 }, DType::F32, [rows, vocab])?;
        g.label("logits");
        g.store(logits_node, out_leaf, 0)?;
        Ok((g.finish(), inputs))
    }

    /// Marks `n` more positions as held by the KV cache (after a step built by `build_step` ran).
    pub(crate) fn advance(&mut self, n: usize) {
        self.n_past += n;
    }
}
