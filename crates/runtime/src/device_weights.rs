//! Places model weights on a backend: mapped files are handed over without copying when the
//! device can read host memory, otherwise uploaded once.

use std::collections::HashMap;
use std::sync::Arc;

use tessera_backend::{Backend, BufferId, DType, HostMemory, OwnedBuffer, Shape, TensorRef};
use tessera_formats::TensorBytes;
use tessera_models::{ModelError, WeightData, WeightRef, WeightUploader};

/// A weight's bytes handed to a backend in place.
struct MappedWeight(TensorBytes);

impl AsRef<[u8]> for MappedWeight {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl HostMemory for MappedWeight {
    fn release_pages(&self, range: std::ops::Range<usize>) {
        self.0.release_pages(range)
    }
}

/// Owns the device buffers holding a model's weights; dropping it frees them.
pub(crate) struct DeviceWeights {
    backend: Arc<dyn Backend>,
    pub buffers: Vec<OwnedBuffer>,
    pub bytes: u64,
    /// Tensor name of each weight buffer, to tell which weight a graph leaf reads.
    pub names: HashMap<BufferId, String>,
    /// Each weight by tensor name.
    pub by_name: HashMap<String, WeightRef>,
}

impl DeviceWeights {
    pub fn new(backend: Arc<dyn Backend>) -> DeviceWeights {
        DeviceWeights { backend, buffers: Vec::new(), bytes: 0, names: HashMap::new(), by_name: HashMap::new() }
    }
}

impl WeightUploader for DeviceWeights {
    fn upload(&mut self, name: &str, dtype: DType, shape: Shape, data: WeightData) -> Result<WeightRef, ModelError> {
        let err = |e: tessera_backend::BackendError| ModelError::Upload(format!("{name}: {e}"));
        let buffer = match data {
            WeightData::Mapped(bytes) => {
                let len = bytes.as_ref().len();
                match self.backend.map_host(Arc::new(MappedWeight(bytes.clone()))) {
                    Some(id) => OwnedBuffer::from_raw(&self.backend, id.map_err(err)?, len),
                    None => OwnedBuffer::with_data(&self.backend, bytes.as_ref()).map_err(err)?,
                }
            }
            WeightData::Owned(bytes) => OwnedBuffer::with_data(&self.backend, &bytes).map_err(err)?,
        };
        self.bytes += buffer.len() as u64;
        let tensor = TensorRef { buffer: buffer.id(), offset: 0 };
        self.names.insert(buffer.id(), name.to_string());
        self.buffers.push(buffer);
        let weight = WeightRef { tensor, dtype, shape };
        self.by_name.insert(name.to_string(), weight.clone());
        Ok(weight)
    }
}
