//! How a model obtains its weights as graph leaves, without knowing which device holds them.

use tessera_backend::{DType, GraphBuilder, NodeId, Shape, TensorRef};
use tessera_formats::{ModelSource, TensorBytes, TensorEntry};

use crate::ModelError;

/// A weight on the device: where it is, its stored type and its row-major shape.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightRef {
    pub tensor: TensorRef,
    pub dtype: DType,
    pub shape: Shape,
}

impl WeightRef {
    /// Adds this weight to a graph as a leaf.
    pub fn leaf(&self, g: &mut GraphBuilder) -> Result<NodeId, ModelError> {
        Ok(g.leaf(self.tensor, self.dtype, self.shape.clone())?)
    }
}

/// A matrix that multiplies activations, with the scale its checkpoint keeps beside it.
///
/// Checkpoints whose weights carry no scale of their own (INT8 W8A8, FP8, NVFP4's per-tensor
/// factor) store it in a companion tensor `<name without .weight>.scale`, as llama.cpp does:
/// shape `[1]` scales the whole output, shape `[rows]` each output channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// The weight's tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    pub weight: WeightRef,
    pub scale: Option<OutputScale>,
}

/// How a [`Linear`]'s output is scaled after the matmul.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputScale {
    PerTensor(f32),
    /// An F32 `[rows]` vector on the device.
    PerChannel(WeightRef),
}

impl Linear {
    /// A weight without a scale, e.g. tied embeddings used as the output projection.
    pub fn plain(name: &str, weight: WeightRef) -> Linear {
        Linear { name: name.to_string(), weight, scale: None }
    }
}

/// Bytes to place on the device: mapped straight from the file, or produced while loading.
pub enum WeightData {
    Mapped(TensorBytes),
    Owned(Vec<u8>),
}

/// Places weights on the device; implemented by the runtime for the backend in use.
pub trait WeightUploader {
    fn upload(&mut self, name: &str, dtype: DType, shape: Shape, data: WeightData) -> Result<WeightRef, ModelError>;
}

/// Fetches tensors from a source by GGUF name, checking shapes, and uploads them.
pub(crate) struct WeightLoader<'a> {
    pub source: &'a ModelSource,
    pub uploader: &'a mut dyn WeightUploader,
}

impl WeightLoader<'_> {
    pub fn entry(&self, name: &str) -> Result<&TensorEntry, ModelError> {
        self.source.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.source.tensor(name).is_some()
    }

    fn check_shape(entry: &TensorEntry, expected: &[usize]) -> Result<(), ModelError> {
        if entry.shape.dims() != expected {
            return Err(ModelError::BadShape {
                name: entry.name.clone(),
                found: entry.shape.to_string(),
                expected: format!("{expected:?}"),
            });
        }
        Ok(())
    }

    /// A matrix or embedding table, kept in its stored type (quantized stays quantized).
    pub fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<WeightRef, ModelError> {
        let entry = self.entry(name)?.clone();
        Self::check_shape(&entry, &[rows, cols])?;
        self.uploader.upload(name, entry.dtype, entry.shape.clone(), WeightData::Mapped(entry.bytes.clone()))
    }

    /// A matrix used in matmuls, with its companion `.scale` tensor when the file has one.
    pub fn linear(&mut self, name: &str, rows: usize, cols: usize) -> Result<Linear, ModelError> {
        let weight = self.matrix(name, rows, cols)?;
        let scale_name = format!("{}.scale", name.strip_suffix(".weight").unwrap_or(name));
        let scale = match self.source.tensor(&scale_name) {
            None => None,
            Some(entry) => {
                let len = entry.shape.checked_count().map_err(|e| ModelError::Upload(format!("{scale_name}: {e}")))?;
                if entry.shape.rank() > 2 || !(len == 1 || len == rows) {
                    return Err(ModelError::BadShape {
                        name: scale_name,
                        found: entry.shape.to_string(),
                        expected: format!("[1] or [{rows}]"),
                    });
                }
                let values = self.values(&scale_name, len)?;
                if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                    return Err(ModelError::Upload(format!("{scale_name}: scale {bad} is not finite")));
                }
                Some(if len == 1 {
                    OutputScale::PerTensor(values[0])
                } else {
                    let data = WeightData::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect());
                    OutputScale::PerChannel(self.uploader.upload(&scale_name, DType::F32, Shape::from([len]), data)?)
                })
            }
        };
        Ok(Linear { name: name.to_string(), weight, scale })
    }

    pub fn opt_linear(&mut self, name: &str, rows: usize, cols: usize) -> Result<Option<Linear>, ModelError> {
        if self.has(name) {
            self.linear(name, rows, cols).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Every value of tensor `name`, as f32.
    fn values(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let entry = self.entry(name)?;
        let mut values = vec![0f32; len];
        tessera_quant::dequantize(entry.dtype, entry.bytes.as_ref(), &mut values)
            .map_err(|e| ModelError::Upload(format!("{name}: {e}")))?;
        Ok(values)
    }

    /// A vector (norm weight, bias) converted to F32, with `add` added to every element
    /// (Gemma stores norm weights as `w` where the model uses `1 + w`).
    pub fn vector(&mut self, name: &str, len: usize, add: f32) -> Result<WeightRef, ModelError> {
        let entry = self.entry(name)?.clone();
        Self::check_shape(&entry, &[len])?;
        let values = self.values(name, len)?;
        let data = if add == 0.0 && entry.dtype == DType::F32 {
            WeightData::Mapped(entry.bytes.clone())
        } else {
            WeightData::Owned(values.iter().flat_map(|v| (v + add).to_le_bytes()).collect())
        };
        self.uploader.upload(name, DType::F32, Shape::from([len]), data)
    }
}
