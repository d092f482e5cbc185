//! Running an export directory (`tessera export onnx`) as its manifest describes: the KV cache
//! on the host, a prefill graph for whole runs of its length, the decode graph for the rest.
//!
//! With QNN, the compiled graphs are kept as EPContext models (`<graph>.qnn_ctx.onnx`, the
//! context binary beside them): a later run, or a Snapdragon or Cloud AI deployment, loads them
//! without compiling again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::session::SessionInputValue;
use ort::value::{Tensor, TensorRef};
use tessera_backend::BackendError;
use tessera_onnx::export::{Binding, GraphManifest, KvPart, Manifest};
use tessera_onnx::host::{append_mask, rope_table};

use crate::backend::{commit, device_error, session_builder};
use crate::{OrtOptions, Provider};

struct Step {
    graph: GraphManifest,
    session: Session,
}

/// An exported model with one sequence's KV cache.
pub struct ExportedModel {
    pub manifest: Manifest,
    dir: PathBuf,
    steps: Vec<Step>,
    kv: HashMap<(usize, KvPart), Vec<f32>>,
    n_past: usize,
    /// Whether each graph came from a precompiled EPContext model.
    pub precompiled: Vec<bool>,
}

/// The SoC QNN compiles fp16 graphs for unless told (`--ep-opt soc_model=N`): Snapdragon 8
/// Gen 3, whose HTP (v75) runs fp16.
const DEFAULT_FP16_SOC: &str = "57";

/// QNN runs float values (a mixed-precision export's, or every value of a float graph) in fp16,
/// which it does only when told, for a named SoC.
pub(crate) fn qnn_fp16_defaults(options: &OrtOptions, float_values: bool) -> OrtOptions {
    let mut options = options.clone();
    if options.provider == Provider::Qnn && float_values {
        let has = |o: &OrtOptions, k: &str| o.ep_options.iter().any(|(key, _)| key == k);
        if !has(&options, "enable_htp_fp16_precision") {
            options.ep_options.push(("enable_htp_fp16_precision".into(), "1".into()));
        }
        if !has(&options, "soc_model") {
            tracing::info!(
                "compiling fp16 values for soc_model {DEFAULT_FP16_SOC} (pass --ep-opt soc_model=N for another SoC)"
            );
            options.ep_options.push(("soc_model".into(), DEFAULT_FP16_SOC.into()));
        }
    }
    options
}

/// The EPContext model a provider writes for `file` and loads next time.
fn context_file(dir: &Path, file: &str, provider: Provider) -> PathBuf {
    let stem = file.trim_end_matches(".onnx");
    dir.join(format!("{stem}.{}_ctx.onnx", provider.name()))
}

impl ExportedModel {
    /// Opens `dir`, compiling its graphs for `options`' provider (or loading the EPContext
    /// models an earlier QNN compile left).
    pub fn open(dir: &Path, options: &OrtOptions) -> Result<ExportedModel, BackendError> {
        let manifest = Manifest::read(dir).map_err(|e| device_error(e.to_string()))?;
        let options = &qnn_fp16_defaults(options, manifest.float16_ops);
        let mut steps = Vec::new();
        let mut precompiled = Vec::new();
        let mut graphs = manifest.graphs.clone();
        graphs.sort_by_key(|g| std::cmp::Reverse(g.tokens));
        for graph in graphs {
            let path = dir.join(&graph.file);
            let ctx = context_file(dir, &graph.file, options.provider);
            let (session, from_context) = if options.provider == Provider::Qnn && ctx.is_file() {
                let builder = session_builder(options, &[])?;
                (commit(options, builder, |b| b.commit_from_file(&ctx))?, true)
            } else if options.provider == Provider::Qnn {
                let ctx_path = ctx.to_string_lossy().to_string();
                let config = [
                    ("ep.context_enable", "1"),
                    ("ep.context_file_path", ctx_path.as_str()),
                    ("ep.context_embed_mode", "0"),
                ];
                let builder = session_builder(options, &config)?;
                (commit(options, builder, |b| b.commit_from_file(&path))?, false)
            } else {
                let builder = session_builder(options, &[])?;
                (commit(options, builder, |b| b.commit_from_file(&path))?, false)
            };
            let how = if from_context { "loaded precompiled from its EPContext model" } else { "compiled" };
            tracing::info!("{}: {how}", graph.file);
            precompiled.push(from_context);
            steps.push(Step { graph, session });
        }
        let mut kv = HashMap::new();
        for layer in 0..manifest.n_layers {
            for part in [KvPart::Key, KvPart::Value] {
                kv.insert((layer, part), vec![0f32; manifest.context * manifest.kv_width]);
            }
        }
        Ok(ExportedModel { manifest, dir: dir.to_path_buf(), steps, kv, n_past: 0, precompiled })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn n_past(&self) -> usize {
        self.n_past
    }

    pub fn context(&self) -> usize {
        self.manifest.context
    }

    /// Forgets the sequence.
    pub fn clear(&mut self) {
        self.n_past = 0;
    }

    /// Appends `tokens` and returns the logits of each, `[tokens, vocab]`.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        let vocab = self.manifest.vocab;
        if self.n_past + tokens.len() > self.manifest.context {
            return Err(device_error(format!(
                "{} tokens do not fit: {} of the exported context of {} are used",
                tokens.len(),
                self.n_past,
                self.manifest.context
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(device_error(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        let mut logits = Vec::with_capacity(tokens.len() * vocab);
        let mut done = 0;
        while done < tokens.len() {
            let left = tokens.len() - done;
            let step = self
                .steps
                .iter()
                .position(|s| s.graph.tokens <= left)
                .ok_or_else(|| device_error("the export has no graph small enough for the last tokens"))?;
            let n = self.steps[step].graph.tokens;
            logits.extend(self.run(step, &tokens[done..done + n])?);
            done += n;
        }
        Ok(logits)
    }

    fn run(&mut self, step: usize, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        let start = self.n_past;
        let n = tokens.len();
        let positions: Vec<i32> = (start..start + n).map(|p| p as i32).collect();
        let context = self.manifest.context;
        let err = |e: ort::Error| device_error(format!("run: {e}"));
        let mut feeds: Vec<(String, SessionInputValue<'_>)> = Vec::new();
        let (kv, steps) = (&self.kv, &mut self.steps);
        for port in &steps[step].graph.inputs {
            let value: SessionInputValue<'_> = match &port.binding {
                Binding::Tokens => {
                    Tensor::from_array((vec![n as i64], tokens.iter().map(|&t| t as i32).collect::<Vec<_>>()))
                        .map_err(err)?
                        .into()
                }
                Binding::RopeCos { rot_dims, base, freq_scale } | Binding::RopeSin { rot_dims, base, freq_scale } => {
                    let cos = matches!(port.binding, Binding::RopeCos { .. });
                    let table = rope_table(&positions, *rot_dims, *base, *freq_scale, cos);
                    Tensor::from_array((vec![n as i64, (*rot_dims / 2) as i64], table)).map_err(err)?.into()
                }
                Binding::Mask { window, masked } => {
                    let positions: Vec<usize> = (start..start + n).collect();
                    let mask = append_mask(&positions, start, n, context, *window, *masked);
                    Tensor::from_array((vec![n as i64, (context + n) as i64], mask)).map_err(err)?.into()
                }
                Binding::Kv { layer, part } => {
                    // Borrowed, not copied: the whole cache goes in at every step.
                    let cache = kv.get(&(*layer, *part)).ok_or_else(|| device_error("unknown KV layer"))?;
                    let dims = vec![context as i64, self.manifest.kv_width as i64];
                    TensorRef::from_array_view((dims, &cache[..])).map_err(err)?.into()
                }
                Binding::Logits => return Err(device_error(format!("{}: logits are not an input", port.name))),
            };
            feeds.push((port.name.clone(), value));
        }
        let width = self.manifest.kv_width;
        let step_ref = &mut steps[step];
        let outputs = step_ref.session.run(feeds).map_err(err)?;
        let mut logits = Vec::new();
        for port in &step_ref.graph.outputs {
            let (_, values) = outputs[port.name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(|e| device_error(format!("output {}: {e}", port.name)))?;
            match &port.binding {
                Binding::Kv { layer, part } => {
                    let cache = self.kv.get_mut(&(*layer, *part)).ok_or_else(|| device_error("unknown KV layer"))?;
                    cache[start * width..(start + n) * width].copy_from_slice(&values[..n * width]);
                }
                Binding::Logits => logits = values.to_vec(),
                _ => return Err(device_error(format!("{}: not an output binding", port.name))),
            }
        }
        self.n_past += n;
        Ok(logits)
    }
}
