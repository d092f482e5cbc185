//! [`OrtBackend`]: host buffers, sessions cached by graph structure, stores written back.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ort::logging::LogLevel;
use ort::session::builder::SessionBuilder;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorRef};
use prost::Message;
use tessera_backend::{Backend, BackendError, BufferId, DeviceInfo, DeviceKind, Graph, HostBytes, NodeId, Op};
use tessera_onnx::host::{self, HostTensor};
use tessera_onnx::proto::data_type;
use tessera_onnx::qdq::{self, Ranges};
use tessera_onnx::{
    classify_leaves, translate, BufferReader, HostInput, LeafRole, OnnxError, OnnxInput, Precision, StoreOutput,
    TranslateOptions, WeightBlob, WEIGHTS_FILE,
};

use crate::runtime;

/// The execution provider a session is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// ONNX Runtime's own CPU kernels.
    Cpu,
    /// Qualcomm's QNN (Hexagon HTP; emulated on x86-64 by the `onnxruntime-qnn` package).
    Qnn,
    /// Huawei Ascend through CANN.
    Cann,
    /// Intel CPUs, GPUs and NPUs through OpenVINO.
    OpenVino,
}

impl Provider {
    pub fn from_name(name: &str) -> Option<Provider> {
        match name {
            "cpu" => Some(Provider::Cpu),
            "qnn" => Some(Provider::Qnn),
            "cann" => Some(Provider::Cann),
            "openvino" => Some(Provider::OpenVino),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Qnn => "qnn",
            Provider::Cann => "cann",
            Provider::OpenVino => "openvino",
        }
    }

    /// ONNX Runtime's name for the provider.
    pub fn ep_name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::Qnn => "QNNExecutionProvider",
            Provider::Cann => "CANNExecutionProvider",
            Provider::OpenVino => "OpenVINOExecutionProvider",
        }
    }
}

#[derive(Clone, Debug)]
pub struct OrtOptions {
    pub provider: Provider,
    /// Passed to the provider as they are, except `ep_library` (the plugin library to load).
    pub ep_options: Vec<(String, String)>,
    /// Refuse a session in which the provider leaves any node to ONNX Runtime's CPU kernels.
    pub no_cpu_fallback: bool,
    /// Threads for ONNX Runtime's CPU kernels.
    pub threads: usize,
    /// How graphs become ONNX (`TranslateOptions::quantized` when calibrating a QDQ export).
    pub translate: TranslateOptions,
    /// Record the range of every float value of every run, for calibrating a QDQ export.
    pub observe: bool,
}

impl OrtOptions {
    pub fn new(provider: Provider) -> OrtOptions {
        OrtOptions {
            provider,
            ep_options: Vec::new(),
            no_cpu_fallback: false,
            threads: 1,
            translate: TranslateOptions::float(Precision::Fp32),
            observe: false,
        }
    }
}

enum Storage {
    Owned(Vec<u8>),
    Mapped(HostBytes),
}

struct Buffer {
    storage: Storage,
    /// Changes whenever the contents change, so sessions holding them as weights are rebuilt.
    generation: u64,
}

impl Buffer {
    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Owned(v) => v,
            Storage::Mapped(m) => m.as_ref().as_ref(),
        }
    }
}

/// `len` bytes at `offset` of `buffer`, checked against its size.
fn slice(
    buffers: &HashMap<BufferId, Buffer>,
    buffer: BufferId,
    offset: usize,
    len: usize,
) -> Result<&[u8], BackendError> {
    let bytes = buffers.get(&buffer).ok_or(BackendError::UnknownBuffer(buffer))?.bytes();
    offset.checked_add(len).and_then(|end| bytes.get(offset..end)).ok_or(BackendError::OutOfBounds {
        buffer,
        offset,
        len,
        size: bytes.len(),
    })
}

struct Compiled {
    key: String,
    session: Mutex<Session>,
    inputs: Vec<OnnxInput>,
    outputs: Vec<StoreOutput>,
    id_checks: Vec<(NodeId, NodeId, usize)>,
}

/// Sessions kept at most; the least recently used goes first.
const MAX_SESSIONS: usize = 16;

pub struct OrtBackend {
    options: OrtOptions,
    buffers: RwLock<HashMap<BufferId, Buffer>>,
    next_id: AtomicU64,
    generation: AtomicU64,
    weights: Mutex<Weights>,
    sessions: Mutex<Vec<(String, Arc<Compiled>)>>,
    /// With `observe`: value ranges by graph structure.
    ranges: Mutex<HashMap<String, Ranges>>,
}

struct Weights {
    blob: WeightBlob,
    /// The blob as sessions read it, rebuilt when it grows.
    shared: Arc<[u8]>,
}

pub(crate) fn device_error(message: impl Into<String>) -> BackendError {
    BackendError::Device { backend: "ort".into(), message: message.into() }
}

fn onnx_error(e: OnnxError) -> BackendError {
    match e {
        OnnxError::InvalidInput { node, op, message } => BackendError::InvalidInput { node, op: op.into(), message },
        OnnxError::Untranslatable { node, op, .. } => {
            BackendError::Unsupported { backend: "ort".into(), node, op: op.into() }
        }
        other => device_error(other.to_string()),
    }
}

impl OrtBackend {
    /// Loads ONNX Runtime and checks that the provider can be set up; no session is built yet.
    pub fn new(options: OrtOptions) -> Result<OrtBackend, BackendError> {
        // Graphs translated here are float: on the HTP they run in fp16.
        let options = crate::exported::qnn_fp16_defaults(&options, true);
        prepare_provider(&options)?;
        let backend = OrtBackend {
            options,
            buffers: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(1),
            weights: Mutex::new(Weights { blob: WeightBlob::new(), shared: Arc::from(Vec::new()) }),
            sessions: Mutex::new(Vec::new()),
            ranges: Mutex::new(HashMap::new()),
        };
        Ok(backend)
    }

    pub fn options(&self) -> &OrtOptions {
        &self.options
    }

    /// The structure of a graph as far as a compiled session depends on it: ops without store
    /// rows, shapes, and the identity of weight leaves.
    fn structure_key(&self, graph: &Graph, roles: &[Option<LeafRole>]) -> String {
        let buffers = self.buffers.read().unwrap_or_else(|e| e.into_inner());
        let mut key = String::with_capacity(graph.len() * 48);
        for (id, n) in graph.nodes().iter().enumerate() {
            match (&n.op, roles[id]) {
                (Op::Leaf(t), Some(LeafRole::Weight)) => {
                    let generation = buffers.get(&t.buffer).map_or(0, |b| b.generation);
                    let _ = write!(key, "W{}@{}#{}", t.buffer.0, t.offset, generation);
                }
                (Op::Leaf(_), role) => {
                    let _ = write!(key, "{role:?}");
                }
                (Op::Store { .. }, _) => key.push_str("Store"),
                (op, _) => {
                    let _ = write!(key, "{op:?}");
                }
            }
            let _ = write!(key, "{:?}{}{:?};", n.inputs, n.dtype, n.shape.dims());
        }
        key
    }

    fn compiled(&self, graph: &Graph) -> Result<Arc<Compiled>, BackendError> {
        let roles = classify_leaves(graph);
        let key = self.structure_key(graph, &roles);
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = sessions.iter().position(|(k, _)| *k == key) {
                let entry = sessions.remove(i);
                let compiled = entry.1.clone();
                sessions.push(entry);
                return Ok(compiled);
            }
        }
        let (translation, shared) = {
            let mut weights = self.weights.lock().unwrap_or_else(|e| e.into_inner());
            let before = weights.blob.data.len();
            let t = translate(graph, &roles, &self.options.translate, &mut weights.blob, &Reader(self))
                .map_err(onnx_error)?;
            if weights.blob.data.len() != before || weights.shared.is_empty() {
                weights.shared = Arc::from(weights.blob.data.clone());
            }
            (t, weights.shared.clone())
        };
        let model = if self.options.observe {
            tessera_onnx::qdq::with_observers(&translation.model).encode_to_vec()
        } else {
            translation.model.encode_to_vec()
        };
        let session = self.build_session(&model, shared)?;
        let compiled = Arc::new(Compiled {
            key: key.clone(),
            session: Mutex::new(session),
            inputs: translation.inputs,
            outputs: translation.outputs,
            id_checks: translation.id_checks,
        });
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.remove(0);
        }
        sessions.push((key, compiled.clone()));
        Ok(compiled)
    }

    fn build_session(&self, model: &[u8], weights: Arc<[u8]>) -> Result<Session, BackendError> {
        let o = &self.options;
        let err = |e: ort::Error| device_error(format!("{} session: {e}", o.provider.ep_name()));
        let mut builder = session_builder(o, &[])?;
        if !weights.is_empty() {
            builder =
                builder.with_external_initializer_file_in_memory(WEIGHTS_FILE, weights).map_err(|e| err(e.into()))?;
        }
        commit(o, builder, |b| b.commit_from_memory(model))
    }

    /// Registers a new buffer under a fresh id.
    fn insert(&self, storage: Storage) -> BufferId {
        let id = BufferId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.buffers.write().unwrap_or_else(|e| e.into_inner()).insert(id, Buffer { storage, generation });
        id
    }

    /// Writes into a buffer; weights held in it are translated again next time.
    fn write(&self, w: host::Write) -> Result<(), BackendError> {
        let mut buffers = self.buffers.write().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let buf = buffers.get_mut(&w.buffer).ok_or(BackendError::UnknownBuffer(w.buffer))?;
        let size = buf.bytes().len();
        let Storage::Owned(data) = &mut buf.storage else {
            return Err(device_error(format!("buffer {:?} maps read-only host memory", w.buffer)));
        };
        let end = w.offset.checked_add(w.bytes.len()).filter(|&e| e <= size).ok_or(BackendError::OutOfBounds {
            buffer: w.buffer,
            offset: w.offset,
            len: w.bytes.len(),
            size,
        })?;
        data[w.offset..end].copy_from_slice(&w.bytes);
        buf.generation = generation;
        drop(buffers);
        self.changed(w.buffer);
        Ok(())
    }

    /// The value ranges recorded (with `observe`) over runs of graphs shaped as `graph`.
    pub fn ranges(&self, graph: &Graph) -> Option<Ranges> {
        let key = self.structure_key(graph, &classify_leaves(graph));
        self.ranges.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned()
    }

    /// The ranges recorded over every graph run so far, merged by value name: the step graphs of
    /// one model at different lengths translate to the same op sequence and names, so a decode
    /// graph's values get the ranges its prefill graph saw too.
    pub fn merged_ranges(&self) -> Ranges {
        let mut merged = Ranges::new();
        for r in self.ranges.lock().unwrap_or_else(|e| e.into_inner()).values() {
            for (name, &(lo, hi)) in r {
                qdq::observe(&mut merged, name, &[lo, hi]);
            }
        }
        merged
    }

    /// Every leaf names a live buffer and lies inside it.
    fn check_leaves(&self, graph: &Graph) -> Result<(), BackendError> {
        let buffers = self.buffers.read().unwrap_or_else(|e| e.into_inner());
        for (id, n) in graph.nodes().iter().enumerate() {
            if let Op::Leaf(t) = n.op {
                let buf = buffers.get(&t.buffer).ok_or(BackendError::UnknownBuffer(t.buffer))?;
                let len = n.dtype.bytes_for(n.shape.count()).map_err(|e| BackendError::InvalidInput {
                    node: id,
                    op: "leaf".into(),
                    message: e.to_string(),
                })?;
                let size = buf.bytes().len();
                if t.offset.checked_add(len).is_none_or(|end| end > size) {
                    return Err(BackendError::OutOfBounds { buffer: t.buffer, offset: t.offset, len, size });
                }
            }
        }
        Ok(())
    }

    fn changed(&self, buffer: BufferId) {
        self.weights.lock().unwrap_or_else(|e| e.into_inner()).blob.forget(buffer);
    }
}

/// The plugin library of the QNN provider: `ep_library=PATH`, `TESSERA_QNN_EP_LIBRARY`, or the
/// `onnxruntime_qnn` Python package.
fn qnn_library(options: &[(String, String)]) -> Result<PathBuf, BackendError> {
    const NAME: &str = "libonnxruntime_providers_qnn.so";
    if let Some((_, path)) = options.iter().find(|(k, _)| k == "ep_library") {
        return Ok(PathBuf::from(path));
    }
    if let Ok(path) = std::env::var("TESSERA_QNN_EP_LIBRARY") {
        return Ok(PathBuf::from(path));
    }
    match runtime::python_package_dir("onnxruntime_qnn") {
        Some(dir) if dir.join(NAME).is_file() => Ok(dir.join(NAME)),
        _ => Err(device_error(format!(
            "the QNN execution provider library ({NAME}) was not found: install the onnxruntime-qnn Python package, \
             or pass --ep-opt ep_library=PATH"
        ))),
    }
}

struct Reader<'a>(&'a OrtBackend);

impl BufferReader for Reader<'_> {
    fn read(&self, buffer: BufferId, offset: usize, len: usize) -> Result<Vec<u8>, String> {
        let buffers = self.0.buffers.read().unwrap_or_else(|e| e.into_inner());
        slice(&buffers, buffer, offset, len).map(<[u8]>::to_vec).map_err(|e| e.to_string())
    }
}

fn to_value(t: HostTensor) -> Result<DynValue, ort::Error> {
    let dims: Vec<i64> = t.dims.iter().map(|&d| d as i64).collect();
    let b = &t.bytes;
    Ok(match t.elem_type {
        data_type::FLOAT => Tensor::from_array((
            dims,
            b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>(),
        ))?
        .into_dyn(),
        data_type::FLOAT16 => Tensor::from_array((
            dims,
            b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>(),
        ))?
        .into_dyn(),
        data_type::INT32 => Tensor::from_array((
            dims,
            b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>(),
        ))?
        .into_dyn(),
        _ => Tensor::from_array((
            dims,
            b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect::<Vec<_>>(),
        ))?
        .into_dyn(),
    })
}

/// `bytes` as the input's tensor, without a copy where they are aligned for its element type.
fn view<'a>(input: &OnnxInput, bytes: &'a [u8]) -> Result<SessionInputValue<'a>, ort::Error> {
    let dims: Vec<i64> = input.dims.iter().map(|&d| d as i64).collect();
    fn typed<'a, T: ort::value::PrimitiveTensorElementType + bytemuck::Pod + std::fmt::Debug>(
        dims: Vec<i64>,
        bytes: &'a [u8],
    ) -> Result<SessionInputValue<'a>, ort::Error> {
        Ok(match bytemuck::try_cast_slice::<u8, T>(bytes) {
            Ok(values) => TensorRef::from_array_view((dims, values))?.into(),
            Err(_) => {
                let values: Vec<T> =
                    bytes.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect();
                Tensor::from_array((dims, values))?.into()
            }
        })
    }
    match input.elem_type {
        data_type::FLOAT => typed::<f32>(dims, bytes),
        data_type::FLOAT16 => typed::<half::f16>(dims, bytes),
        data_type::INT32 => typed::<i32>(dims, bytes),
        _ => typed::<i64>(dims, bytes),
    }
}

impl Backend for OrtBackend {
    fn info(&self) -> DeviceInfo {
        let lib = runtime::loaded_from().map(|p| p.display().to_string()).unwrap_or_default();
        DeviceInfo {
            backend: format!("ort:{}", self.options.provider.name()),
            name: format!("ONNX Runtime {} ({lib})", self.options.provider.ep_name()),
            kind: if self.options.provider == Provider::Cpu { DeviceKind::Cpu } else { DeviceKind::Accelerator },
            memory_total: None,
            memory_free: None,
        }
    }

    fn alloc(&self, bytes: usize) -> Result<BufferId, BackendError> {
        let mut data = Vec::new();
        data.try_reserve_exact(bytes)
            .map_err(|e| BackendError::OutOfMemory { requested: bytes, detail: e.to_string() })?;
        data.resize(bytes, 0);
        Ok(self.insert(Storage::Owned(data)))
    }

    fn free(&self, buffer: BufferId) {
        self.buffers.write().unwrap_or_else(|e| e.into_inner()).remove(&buffer);
        self.changed(buffer);
    }

    fn upload(&self, buffer: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        self.write(host::Write { buffer, offset, bytes: data.to_vec() })
    }

    fn download(&self, buffer: BufferId, offset: usize, out: &mut [u8]) -> Result<(), BackendError> {
        let buffers = self.buffers.read().unwrap_or_else(|e| e.into_inner());
        out.copy_from_slice(slice(&buffers, buffer, offset, out.len())?);
        Ok(())
    }

    fn supports_op(&self, graph: &Graph, node: NodeId) -> bool {
        let n = graph.node(node);
        match n.op {
            // The translation reads these leaves' values; block types are dequantized into the
            // weight blob, so every stored type works.
            Op::Store { .. } | Op::StoreRows => {
                matches!(graph.node(n.inputs[1]).dtype, tessera_backend::DType::F32 | tessera_backend::DType::F16)
            }
            // The ONNX graph computes only what reaches a store; a graph cut by the fallback may
            // end at any op, whose value the runtime then needs: stores make it observable.
            _ => true,
        }
    }

    fn execute(&self, graph: &Graph) -> Result<(), BackendError> {
        self.check_leaves(graph)?;
        if !graph.nodes().iter().any(|n| n.op.is_store()) {
            return Ok(());
        }
        let compiled = self.compiled(graph)?;
        let reader = Reader(self);
        host::check_ids(graph, &reader, &compiled.id_checks).map_err(onnx_error)?;
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(compiled.inputs.len());
        let mut observed = Ranges::new();
        // Leaves (the KV cache above all, whole at every step) go in borrowed from their
        // buffers, read-locked until the run is over; the rest is computed first.
        let mut borrowed = Vec::new();
        for input in &compiled.inputs {
            if let (HostInput::Leaf { node }, false) = (&input.source, self.options.observe) {
                if let Ok(storage) = host::leaf_span(graph, *node) {
                    borrowed.push((input, storage));
                    continue;
                }
            }
            let data = host::fill(graph, &reader, input).map_err(onnx_error)?;
            if self.options.observe && data.elem_type == data_type::FLOAT {
                let values: Vec<f32> =
                    data.bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                qdq::observe(&mut observed, &input.name, &values);
            }
            let value = to_value(data).map_err(|e| device_error(format!("input {}: {e}", input.name)))?;
            inputs.push((input.name.clone(), value.into()));
        }
        let buffers = self.buffers.read().unwrap_or_else(|e| e.into_inner());
        for (input, (buffer, offset, len)) in borrowed {
            let bytes = slice(&buffers, buffer, offset, len)?;
            let value = view(input, bytes).map_err(|e| device_error(format!("input {}: {e}", input.name)))?;
            inputs.push((input.name.clone(), value));
        }
        let mut writes = Vec::new();
        {
            let mut session = compiled.session.lock().unwrap_or_else(|e| e.into_inner());
            let outputs = session.run(inputs).map_err(|e| device_error(format!("run: {e}")))?;
            if self.options.observe {
                for (name, value) in outputs.iter() {
                    if let Ok((_, values)) = value.try_extract_tensor::<f32>() {
                        qdq::observe(&mut observed, name, values);
                    }
                }
                let mut ranges = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
                let entry = ranges.entry(compiled.key.clone()).or_default();
                for (name, (lo, hi)) in observed.drain() {
                    qdq::observe(entry, &name, &[lo, hi]);
                }
            }
            for out in &compiled.outputs {
                let (_, rows) = outputs[out.name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| device_error(format!("output {}: {e}", out.name)))?;
                writes.extend(host::store_writes(graph, &reader, out.store, rows).map_err(onnx_error)?);
            }
        }
        drop(buffers);
        for w in writes {
            self.write(w)?;
        }
        Ok(())
    }

    fn map_host(&self, bytes: HostBytes) -> Option<Result<BufferId, BackendError>> {
        Some(Ok(self.insert(Storage::Mapped(bytes))))
    }
}

/// Loads ONNX Runtime and, for providers shipped as plugins (QNN), registers the plugin and
/// checks that it offers a device.
pub(crate) fn prepare_provider(o: &OrtOptions) -> Result<(), BackendError> {
    let env = runtime::environment().map_err(device_error)?;
    if o.provider == Provider::Qnn {
        let path = qnn_library(&o.ep_options)?;
        runtime::register_plugin(env, Provider::Qnn.ep_name(), &path).map_err(device_error)?;
        if !env.devices().any(|d| d.ep().ok() == Some(Provider::Qnn.ep_name())) {
            let found: Vec<String> = env.devices().filter_map(|d| d.ep().ok().map(str::to_string)).collect();
            return Err(device_error(format!("{} offers no QNN device (devices: {found:?})", path.display())));
        }
    }
    Ok(())
}

/// A session builder for `o`'s provider with its options, threads and fallback policy, plus
/// session configuration entries `config`.
pub(crate) fn session_builder(o: &OrtOptions, config: &[(&str, &str)]) -> Result<SessionBuilder, BackendError> {
    prepare_provider(o)?;
    let env = runtime::environment().map_err(device_error)?;
    let err = |e: ort::Error| device_error(format!("{} session: {e}", o.provider.ep_name()));
    let mut builder = Session::builder(env)
        .map_err(err)?
        .with_intra_threads(o.threads)
        .map_err(|e| err(e.into()))?
        .with_log_level(LogLevel::Verbose)
        .map_err(|e| err(e.into()))?;
    // With the CPU provider itself chosen, ONNX Runtime's CPU kernels are the device.
    if o.no_cpu_fallback && o.provider != Provider::Cpu {
        builder = builder.with_config_entry("session.disable_cpu_ep_fallback", "1").map_err(|e| err(e.into()))?;
    }
    for (k, v) in config {
        builder = builder.with_config_entry(k, v).map_err(|e| err(e.into()))?;
    }
    let passed: Vec<(String, String)> = o.ep_options.iter().filter(|(k, _)| k != "ep_library").cloned().collect();
    Ok(match o.provider {
        Provider::Cpu => builder,
        Provider::Qnn => {
            let ep = Provider::Qnn.ep_name();
            let mut opts: Vec<(String, String)> =
                passed.iter().map(|(k, v)| (format!("{ep}.{k}"), v.clone())).collect();
            if !passed.iter().any(|(k, _)| k == "backend_type" || k == "backend_path") {
                opts.push((format!("{ep}.backend_type"), "htp".into()));
            }
            let devices = env.devices().filter(|d| d.ep().ok() == Some(ep));
            builder.with_devices(devices, Some(&opts)).map_err(|e| err(e.into()))?
        }
        Provider::Cann => {
            let mut ep = ort::ep::CANN::default();
            for (k, v) in &passed {
                ep = ort::ep::ArbitrarilyConfigurableExecutionProvider::with_arbitrary_config(ep, k, v);
            }
            builder.with_execution_providers([ep.build().error_on_failure()]).map_err(|e| err(e.into()))?
        }
        Provider::OpenVino => {
            let mut ep = ort::ep::OpenVINO::default();
            for (k, v) in &passed {
                ep = ort::ep::ArbitrarilyConfigurableExecutionProvider::with_arbitrary_config(ep, k, v);
            }
            builder.with_execution_providers([ep.build().error_on_failure()]).map_err(|e| err(e.into()))?
        }
    })
}

/// Builds the session and logs which provider took how many nodes.
pub(crate) fn commit(
    o: &OrtOptions,
    mut builder: SessionBuilder,
    build: impl FnOnce(&mut SessionBuilder) -> ort::Result<Session>,
) -> Result<Session, BackendError> {
    let _capture = runtime::capture_placement();
    let session = build(&mut builder).map_err(|e| device_error(format!("{} session: {e}", o.provider.ep_name())))?;
    for line in runtime::placement_lines() {
        tracing::info!(provider = o.provider.name(), "{line}");
    }
    Ok(session)
}
