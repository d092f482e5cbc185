//! `tessera bench --json` profiles: llama-bench's record fields plus Tessera's `model_shape`, and
//! `--mem-bandwidth` records. Read defensively: a malformed file gives an error naming the record
//! and field, never a panic.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::ModelShape;
use crate::PlanError;

/// One timed test: a prompt of `n_prompt` tokens (pp) or `n_gen` generated tokens (tg).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchRecord {
    pub model: ModelShape,
    pub model_file: String,
    pub model_type: String,
    pub backend: String,
    pub cpu_info: String,
    pub n_threads: u32,
    pub n_prompt: u32,
    pub n_gen: u32,
    pub n_depth: u32,
    pub n_ubatch: u32,
    /// Measured tokens per second (mean over repetitions).
    pub avg_ts: f64,
    pub stddev_ts: f64,
    /// Tokens per second of each repetition (may be empty).
    pub samples_ts: Vec<f64>,
    pub test_time: String,
}

/// Which summary of the repetitions a measurement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Statistic {
    /// The fastest repetition: on a shared machine other work only slows a run down, so the best
    /// of several runs estimates what the hardware does (as STREAM reports bandwidth).
    Best,
    /// The mean over repetitions, as llama-bench reports it.
    Mean,
}

impl BenchRecord {
    /// The measured tokens/s as `stat` summarises the repetitions (the mean when there are no samples).
    pub fn measured(&self, stat: Statistic) -> f64 {
        match stat {
            Statistic::Best => self.samples_ts.iter().copied().reduce(f64::max).unwrap_or(self.avg_ts),
            Statistic::Mean => self.avg_ts,
        }
    }

    /// llama-bench's test name: `pp512`, `tg128`, `pp512+tg128`.
    pub fn test(&self) -> String {
        match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, n) => format!("tg{n}"),
            (p, n) => format!("pp{p}+tg{n}"),
        }
    }
}

/// A host memory read-bandwidth measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemRecord {
    pub n_threads: u32,
    pub read_gbs: f64,
    pub cpu_info: String,
}

/// Everything in one or more profile files.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Profile {
    pub records: Vec<BenchRecord>,
    pub memory: Vec<MemRecord>,
}

impl Profile {
    /// Parses one file's JSON array (`origin` names it in errors) and appends its records.
    pub fn add(&mut self, text: &str, origin: &str) -> Result<(), PlanError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| PlanError::data(origin, format!("not valid JSON: {e}")))?;
        let items = value.as_array().ok_or_else(|| PlanError::data(origin, "expected a JSON array of records"))?;
        for (i, item) in items.iter().enumerate() {
            let obj = item.as_object().ok_or_else(|| PlanError::data(origin, format!("record {i}: not an object")))?;
            let r = Fields { obj, origin, index: i };
            if obj.get("test").and_then(Value::as_str) == Some("mem_read") {
                self.memory.push(MemRecord {
                    n_threads: r.count("n_threads", 1)?,
                    read_gbs: r.positive("read_gbs")?,
                    cpu_info: r.string_or("cpu_info", "")?,
                });
            } else {
                self.records.push(bench_record(&r)?);
            }
        }
        Ok(())
    }

    /// Parses one file.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, PlanError> {
        let mut p = Profile::default();
        p.add(text, origin)?;
        Ok(p)
    }

    /// The measured read bandwidth (GB/s) for a thread count, if a record has it.
    pub fn memory_bandwidth(&self, n_threads: u32) -> Option<f64> {
        self.memory.iter().filter(|m| m.n_threads == n_threads).map(|m| m.read_gbs).reduce(f64::max)
    }

    /// The distinct models, in order of first appearance.
    pub fn models(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.records {
            if !out.contains(&r.model_file) {
                out.push(r.model_file.clone());
            }
        }
        out
    }
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    origin: &'a str,
    index: usize,
}

impl Fields<'_> {
    fn err(&self, what: String) -> PlanError {
        PlanError::data(self.origin, format!("record {}: {what}", self.index))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn number(&self, key: &str) -> Result<f64, PlanError> {
        let v = self.get(key).ok_or_else(|| self.err(format!("field {key:?} is missing")))?;
        v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| self.err(format!("field {key:?} must be a number, not {v}")))
    }

    fn positive(&self, key: &str) -> Result<f64, PlanError> {
        let x = self.number(key)?;
        if x > 0.0 {
            Ok(x)
        } else {
            Err(self.err(format!("field {key:?} must be positive, not {x}")))
        }
    }

    /// A whole number at least `min`, at most u32::MAX.
    fn count(&self, key: &str, min: u64) -> Result<u32, PlanError> {
        let v = self.get(key).ok_or_else(|| self.err(format!("field {key:?} is missing")))?;
        match v.as_u64() {
            Some(n) if n >= min && n <= u64::from(u32::MAX) => Ok(n as u32),
            _ => Err(self.err(format!("field {key:?} must be a whole number >= {min}, not {v}"))),
        }
    }

    fn count_or(&self, key: &str, default: u32) -> Result<u32, PlanError> {
        if self.get(key).is_some() {
            self.count(key, 0)
        } else {
            Ok(default)
        }
    }

    /// An optional array of positive numbers.
    fn samples(&self, key: &str) -> Result<Vec<f64>, PlanError> {
        let Some(v) = self.get(key) else { return Ok(Vec::new()) };
        let items = v.as_array().ok_or_else(|| self.err(format!("field {key:?} must be an array of numbers")))?;
        items
            .iter()
            .map(|x| {
                x.as_f64()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or_else(|| self.err(format!("field {key:?} holds {x}, not a positive number")))
            })
            .collect()
    }

    fn string(&self, key: &str) -> Result<String, PlanError> {
        let v = self.get(key).ok_or_else(|| self.err(format!("field {key:?} is missing")))?;
        v.as_str().map(str::to_string).ok_or_else(|| self.err(format!("field {key:?} must be a string, not {v}")))
    }

    fn string_or(&self, key: &str, default: &str) -> Result<String, PlanError> {
        if self.get(key).is_some() {
            self.string(key)
        } else {
            Ok(default.to_string())
        }
    }
}

/// Bytes per element of a KV cache type as llama-bench names it.
fn kv_bytes(type_k: &str) -> Option<f64> {
    match type_k.to_ascii_lowercase().as_str() {
        "f32" => Some(4.0),
        "f16" | "bf16" => Some(2.0),
        "q8_0" => Some(34.0 / 32.0),
        "q4_0" => Some(18.0 / 32.0),
        _ => None,
    }
}

fn bench_record(r: &Fields<'_>) -> Result<BenchRecord, PlanError> {
    let shape_value = r.get("model_shape").ok_or_else(|| r.err("field \"model_shape\" is missing".into()))?;
    let shape_obj = shape_value.as_object().ok_or_else(|| r.err("field \"model_shape\" must be an object".into()))?;
    let s = Fields { obj: shape_obj, origin: r.origin, index: r.index };
    let in_shape = |e: PlanError| match e {
        PlanError::Data { origin, what } => {
            PlanError::Data { origin, what: what.replacen("field \"", "field \"model_shape.", 1) }
        }
        other => other,
    };
    let n_params = r.positive("model_n_params")?;
    let weight_bytes = r.positive("model_size")?;
    let bits_per_weight = match s.get("bits_per_weight") {
        Some(_) => s.positive("bits_per_weight").map_err(in_shape)?,
        None => weight_bytes * 8.0 / n_params,
    };
    let type_k = r.string_or("type_k", "f16")?;
    let kv_bytes_per_elem = kv_bytes(&type_k).ok_or_else(|| r.err(format!("KV cache type {type_k:?} is not known")))?;
    let model_file = r.string("model_filename")?;
    let model_type = r.string_or("model_type", &model_file)?;
    let model = ModelShape {
        name: model_type.clone(),
        architecture: s.string_or("architecture", "unknown").map_err(in_shape)?,
        n_params,
        n_layer: s.count("n_layer", 1).map_err(in_shape)?,
        n_embd: s.count("n_embd", 1).map_err(in_shape)?,
        n_ff: s.count("n_ff", 1).map_err(in_shape)?,
        n_head: s.count("n_head", 1).map_err(in_shape)?,
        n_head_kv: s.count("n_head_kv", 1).map_err(in_shape)?,
        head_dim: s.count("head_dim", 1).map_err(in_shape)?,
        n_vocab: s.count("n_vocab", 1).map_err(in_shape)?,
        bits_per_weight,
        kv_bytes_per_elem,
        weight_bytes: Some(weight_bytes),
    };
    model.validate().map_err(|e| r.err(e.to_string()))?;
    let n_prompt = r.count_or("n_prompt", 0)?;
    let n_gen = r.count_or("n_gen", 0)?;
    if n_prompt == 0 && n_gen == 0 {
        return Err(r.err("n_prompt and n_gen are both 0: nothing was timed".into()));
    }
    let n_batch = r.count_or("n_batch", 512)?;
    Ok(BenchRecord {
        model,
        model_file,
        model_type,
        backend: match r.get("backend") {
            Some(_) => r.string("backend")?,
            None => r.string_or("backends", "")?,
        }
        .to_ascii_lowercase(),
        cpu_info: r.string_or("cpu_info", "")?,
        n_threads: r.count("n_threads", 1)?,
        n_prompt,
        n_gen,
        n_depth: r.count_or("n_depth", 0)?,
        n_ubatch: r.count_or("n_ubatch", n_batch)?.max(1),
        avg_ts: r.positive("avg_ts")?,
        stddev_ts: if r.get("stddev_ts").is_some() { r.number("stddev_ts")?.abs() } else { 0.0 },
        samples_ts: r.samples("samples_ts")?,
        test_time: r.string_or("test_time", "")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A record in the `tessera bench --json` schema.
    pub(crate) fn record(
        file: &str,
        shape: (u32, u32, u32, u32, u32, u32, u32),
        params: f64,
        bytes: f64,
        test: (u32, u32),
        ts: f64,
    ) -> Value {
        let (n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab) = shape;
        serde_json::json!({
            "build_commit": "test", "cpu_info": "AMD EPYC", "backends": "CPU", "model_filename": file,
            "model_type": format!("test {file}"), "model_size": bytes, "model_n_params": params, "n_batch": 512,
            "n_ubatch": 512, "n_threads": 2, "type_k": "f16", "type_v": "f16", "n_prompt": test.0, "n_gen": test.1,
            "n_depth": 0, "test_time": "2026-11-23T10:00:00Z", "avg_ns": 1, "stddev_ns": 0, "avg_ts": ts, "stddev_ts": 0.5,
            "samples_ns": [1], "samples_ts": [ts], "backend": "cpu", "peak_rss_bytes": 1,
            "model_shape": { "architecture": "llama", "n_layer": n_layer, "n_embd": n_embd, "n_ff": n_ff, "n_head": n_head,
                             "n_head_kv": n_head_kv, "head_dim": head_dim, "n_vocab": n_vocab,
                             "bits_per_weight": bytes * 8.0 / params }
        })
    }

    fn smollm(test: (u32, u32), ts: f64) -> Value {
        record("smollm2.gguf", (30, 576, 1536, 9, 3, 64, 49152), 134_515_008.0, 85_000_000.0, test, ts)
    }

    #[test]
    fn bench_and_memory_records_parse() {
        let text = serde_json::to_string(&serde_json::json!([
            smollm((512, 0), 400.0),
            smollm((0, 128), 60.0),
            { "test": "mem_read", "n_threads": 2, "bytes": 1073741824u64, "read_gbs": 12.5, "cpu_info": "AMD EPYC" },
        ]))
        .unwrap();
        let p = Profile::parse(&text, "p.json").unwrap();
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.records[0].test(), "pp512");
        assert_eq!(p.records[1].test(), "tg128");
        assert_eq!(p.records[0].model.n_layer, 30);
        assert_eq!(p.records[0].model.kv_bytes_per_elem, 2.0);
        assert_eq!(p.records[0].samples_ts, vec![400.0]);
        assert_eq!(p.records[0].measured(Statistic::Best), 400.0);
        assert_eq!(p.memory_bandwidth(2), Some(12.5));
        assert_eq!(p.memory_bandwidth(1), None);
        assert_eq!(p.models(), vec!["smollm2.gguf".to_string()]);
    }

    #[test]
    fn malformed_records_name_the_record_and_field() {
        let mut missing_layer = smollm((512, 0), 400.0);
        missing_layer["model_shape"]["n_layer"] = Value::Null;
        let mut bad_ts = smollm((512, 0), 400.0);
        bad_ts["avg_ts"] = serde_json::json!("fast");
        let mut nothing = smollm((0, 0), 400.0);
        nothing["n_gen"] = serde_json::json!(0);
        let mut odd_heads = smollm((512, 0), 400.0);
        odd_heads["model_shape"]["n_head_kv"] = serde_json::json!(4);
        let cases = [
            ("{", "not valid JSON"),
            ("{}", "expected a JSON array"),
            ("[1]", "record 0: not an object"),
            (
                &serde_json::to_string(&serde_json::json!([missing_layer])).unwrap()[..],
                "record 0: field \"model_shape.n_layer\" is missing",
            ),
            (&serde_json::to_string(&serde_json::json!([bad_ts])).unwrap()[..], "field \"avg_ts\" must be a number"),
            (&serde_json::to_string(&serde_json::json!([nothing])).unwrap()[..], "nothing was timed"),
            (&serde_json::to_string(&serde_json::json!([odd_heads])).unwrap()[..], "9 heads cannot share 4 KV heads"),
        ];
        for (text, needle) in cases {
            let err = Profile::parse(text, "p.json").unwrap_err().to_string();
            assert!(err.starts_with("p.json: ") && err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Truncated or corrupted profiles give errors, never panics.
        #[test]
        fn damaged_profiles_do_not_panic(cut in 0usize..2000, at in 0usize..2000, junk in proptest::collection::vec(any::<u8>(), 0..8)) {
            let text = serde_json::to_string(&serde_json::json!([smollm((512, 0), 400.0), smollm((0, 128), 60.0)])).unwrap();
            let cut = cut.min(text.len());
            let _ = Profile::parse(&text[..cut], "cut");
            let mut bytes = text.into_bytes();
            let at = at.min(bytes.len());
            bytes.splice(at..at, junk);
            let _ = Profile::parse(&String::from_utf8_lossy(&bytes), "junk");
        }

        /// Any JSON values in any field give an error or a valid record.
        #[test]
        fn arbitrary_field_values_do_not_panic(field in 0usize..12, value in prop_oneof![
            Just(Value::Null), any::<i64>().prop_map(Value::from), any::<f64>().prop_map(|f| serde_json::json!(f)),
            ".{0,8}".prop_map(Value::from), Just(serde_json::json!([])), Just(serde_json::json!({}))]) {
            let keys = ["n_prompt", "n_gen", "avg_ts", "model_size", "model_n_params", "n_threads", "type_k", "model_shape",
                        "n_ubatch", "n_depth", "model_filename", "samples_ts"];
            let mut r = smollm((512, 0), 400.0);
            r[keys[field]] = value;
            if let Ok(p) = Profile::parse(&serde_json::to_string(&serde_json::json!([r])).unwrap(), "v") {
                prop_assert!(p.records[0].avg_ts > 0.0 && p.records[0].model.validate().is_ok());
            }
        }
    }
}
