//! What calibrating quantizers (AWQ, GPTQ) need from a model: the activations entering every
//! matmul weight, as the model runs over calibration text.
//!
//! The model's graph is built as for any step; then, for each `MatMul` whose weight is a model
//! tensor, a `Store` copies its input rows into a host buffer. Models need not know about it.

use tessera_backend::{DType, GraphBuilder, Op, OwnedBuffer, TensorRef};

use crate::context::LoadedModel;
use crate::{ContextOptions, Logits, RuntimeError};

impl LoadedModel {
    /// Runs `tokens` as one sequence from position 0, `n_batch` tokens per step, and calls
    /// `visit(weight_name, rows, in_dim)` with the f32 input rows (row-major `[n, in_dim]`) of
    /// every matmul weight in every step, in graph order. Weights that share an input (Q, K, V)
    /// each get their own call with the same rows.
    pub fn capture_linear_inputs(
        &self,
        tokens: &[u32],
        n_batch: usize,
        visit: &mut dyn FnMut(&str, &[f32], usize),
    ) -> Result<(), RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::Invalid("no calibration tokens".into()));
        }
        self.check_tokens(tokens)?;
        let n_batch = n_batch.clamp(1, tokens.len());
        let mut ctx = self.new_context(ContextOptions { n_ctx: tokens.len(), n_batch, ..ContextOptions::default() })?;
        for chunk in tokens.chunks(n_batch) {
            let mut g = GraphBuilder::new();
            // Every row reaches the last layer's FFN only when every row's logits are wanted.
            let (_logits, _inputs) = ctx.build_step(&mut g, chunk, Logits::All)?;
            let taps = self.add_taps(&mut g)?;
            self.execute(&g.finish())?;
            ctx.advance(chunk.len());
            for tap in &taps {
                let rows = tap.buffer.download_f32(0, tap.rows * tap.in_dim)?;
                visit(&tap.name, &rows, tap.in_dim);
            }
        }
        Ok(())
    }

    /// Adds a store of each weight matmul's input into a new buffer.
    fn add_taps(&self, g: &mut GraphBuilder) -> Result<Vec<Tap>, RuntimeError> {
        let matmuls: Vec<(usize, String)> = g
            .graph()
            .nodes()
            .iter()
            .filter(|node| node.op == Op::MatMul)
            .filter_map(|node| match &g.graph().node(node.inputs[1]).op {
                Op::Leaf(t) => self.weight_name(t.buffer).map(|name| (node.inputs[0], name.to_string())),
                _ => None,
            })
            .collect();
        let mut taps = Vec::with_capacity(matmuls.len());
        for (x, name) in matmuls {
            let shape = g.shape(x).clone();
            let in_dim = shape.cols();
            let rows = shape.checked_count().map_err(|e| RuntimeError::Invalid(e.to_string()))? / in_dim.max(1);
            let buffer = OwnedBuffer::alloc(self.backend(), rows * in_dim * 4)?;
            let dst = g.leaf(TensorRef { buffer: buffer.id(), offset: 0 }, DType::F32, [rows, in_dim])?;
            let src = if shape.rank() == 2 { x } else { g.reshape(x, [rows, in_dim])? };
            g.store(src, dst, 0)?;
            taps.push(Tap { name, buffer, rows, in_dim });
        }
        Ok(taps)
    }
}

struct Tap {
    name: String,
    buffer: OwnedBuffer,
    rows: usize,
    in_dim: usize,
}
