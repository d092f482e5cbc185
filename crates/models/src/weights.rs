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

    pub fn opt_matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Option<WeightRef>, ModelError> {
        if self.has(name) {
            self.matrix(name, rows, cols).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A vector (norm weight, bias) converted to F32, with `add` added to every element
    /// (Gemma stores norm weights as `w` where the model uses `1 + w`).
    pub fn vector(&mut self, name: &str, len: usize, add: f32) -> Result<WeightRef, ModelError> {
        let entry = self.entry(name)?.clone();
        Self::check_shape(&entry, &[len])?;
        let mut values = vec![0f32; len];
        tessera_quant::dequantize(entry.dtype, entry.bytes.as_ref(), &mut values)
            .map_err(|e| ModelError::Upload(format!("{name}: {e}")))?;
        let data = if add == 0.0 && entry.dtype == DType::F32 {
            WeightData::Mapped(entry.bytes.clone())
        } else {
            WeightData::Owned(values.iter().flat_map(|v| (v + add).to_le_bytes()).collect())
        };
        self.uploader.upload(name, DType::F32, Shape::from([len]), data)
    }
}
