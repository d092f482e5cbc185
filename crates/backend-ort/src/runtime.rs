//! Finding and loading ONNX Runtime and its execution-provider plugins at run time, so the
//! binary builds and runs where neither is installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ort::environment::Environment;
use ort::logging::LogLevel;

/// Where ONNX Runtime comes from, in the order tried: `ORT_DYLIB_PATH`, the `onnxruntime` Python
/// package that `python3` imports, then the system's library search path.
pub fn runtime_library() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("ORT_DYLIB_PATH={} is not a file", path.display())) };
    }
    if let Some(dir) = python_package_dir("onnxruntime") {
        let capi = dir.join("capi");
        if let Some(lib) = find_file(&capi, "libonnxruntime.so").or_else(|| find_file(&capi, "libonnxruntime.")) {
            return Ok(lib);
        }
    }
    // dlopen searches the system paths for a bare name.
    Ok(PathBuf::from(if cfg!(target_os = "macos") {
        "libonnxruntime.dylib"
    } else if cfg!(windows) {
        "onnxruntime.dll"
    } else {
        "libonnxruntime.so"
    }))
}

/// The directory of an importable Python package, if `python3` has it.
pub fn python_package_dir(package: &str) -> Option<PathBuf> {
    let code = format!("import os, {package}; print(os.path.dirname({package}.__file__))");
    let python = std::env::var("TESSERA_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python).args(["-c", &code]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.is_dir().then_some(dir)
}

fn find_file(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    names.sort();
    names.into_iter().next()
}

static ENVIRONMENT: OnceLock<Result<(Environment, PathBuf), String>> = OnceLock::new();
/// Plugin libraries registered so far (ONNX Runtime refuses a second registration).
static PLUGINS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The process's ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment, String> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = runtime_library()?;
        let builder = ort::init_from(&path).map_err(|e| {
            format!(
                "cannot load ONNX Runtime from {}: {e} (install the onnxruntime Python package, or set ORT_DYLIB_PATH to libonnxruntime)",
                path.display()
            )
        })?;
        let env = builder.with_name("tessera").with_logger(Arc::new(log_message)).build().map_err(|e| format!("ONNX Runtime: {e}"))?;
        Ok((env, path))
    });
    match loaded {
        Ok((env, _)) => Ok(env),
        Err(e) => Err(e.clone()),
    }
}

/// The library the environment was loaded from.
pub fn loaded_from() -> Option<PathBuf> {
    ENVIRONMENT.get().and_then(|r| r.as_ref().ok()).map(|(_, p)| p.clone())
}

/// Registers an execution-provider plugin library once per process under `name`.
pub fn register_plugin(env: &Environment, name: &str, path: &Path) -> Result<(), String> {
    let mut plugins = PLUGINS.lock().unwrap_or_else(|e| e.into_inner());
    if plugins.iter().any(|p| p == name) {
        return Ok(());
    }
    env.register_ep_library(name, path)
        .map_err(|e| format!("cannot register execution provider library {}: {e}", path.display()))?;
    plugins.push(name.to_string());
    Ok(())
}

/// Placement lines logged while a session is being built (ONNX Runtime logs them verbosely).
static PLACEMENT: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// One session built at a time, so the lines logged belong to it.
static BUILDING: Mutex<()> = Mutex::new(());

fn log_message(level: LogLevel, _category: &str, _id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", "{message} ({location})"),
        LogLevel::Error | LogLevel::Fatal => tracing::error!(target: "onnxruntime", "{message} ({location})"),
        LogLevel::Verbose | LogLevel::Info => {
            if message.contains("placed on") || message.contains("Number of nodes") {
                PLACEMENT.lock().unwrap_or_else(|e| e.into_inner()).push(message.trim().to_string());
            }
            tracing::trace!(target: "onnxruntime", "{message}");
        }
    }
}

/// Starts collecting the placement lines of the session about to be built; the guard keeps
/// other sessions from being built meanwhile.
pub fn capture_placement() -> MutexGuard<'static, ()> {
    let guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    PLACEMENT.lock().unwrap_or_else(|e| e.into_inner()).clear();
    guard
}

/// The placement lines collected since [`capture_placement`]: which provider took how many nodes.
pub fn placement_lines() -> Vec<String> {
    std::mem::take(&mut *PLACEMENT.lock().unwrap_or_else(|e| e.into_inner()))
}
