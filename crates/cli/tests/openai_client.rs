//! `tessera serve` against the official, unmodified `openai` Python client: starts the server on
//! a free port with an API key and runs `tests/e2e/openai_client.py` (chat and completions,
//! streaming, usage, stop, n, logprobs, `json_schema`, tool calls, errors). Needs python3 with
//! `openai` and `jsonschema` (scripts/test.sh installs the pinned versions): without them the
//! test is skipped with a note locally and fails under CI.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tessera_testkit::{test_model, SMOLLM2};

const API_KEY: &str = "sk-tessera-e2e";

/// A running `tessera serve`, killed when dropped (so a failed assertion does not leak it).
struct Server {
    child: Child,
    addr: String,
    /// Everything the server printed on stderr, for failure messages.
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(model: &std::path::Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("serve")
            .arg("-m")
            .arg(model)
            .args(["--port", "0", "--api-key", API_KEY, "-t", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tessera serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        // Drain stderr for the server's whole life so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut server = Server { child, addr: String::new(), log };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => server.addr = addr,
            Err(_) => panic!("tessera serve did not print its address within 60 s:\n{}", server.log()),
        }
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_official_openai_python_client_works_unmodified() {
    let Some(model) = test_model(SMOLLM2) else { return };
    if !tessera_testkit::python_imports(&["openai", "jsonschema"]) {
        return;
    }
    let server = Server::start(&model);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/openai_client.py");
    let model_id = SMOLLM2.trim_end_matches(".gguf");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--base-url", &format!("http://{}/v1", server.addr)])
        .args(["--model", model_id, "--api-key", API_KEY])
        // Greedy continuation, as `tessera run` and llama.cpp give it.
        .args(["--completion-prefix", " Paris.\n\nThe United States has"])
        // A proxy set in the environment must not intercept a loopback server.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The check lines are worth seeing in `cargo test -- --nocapture`.
    println!("{stdout}");
    assert!(
        out.status.success(),
        "openai_client.py failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
        out.status,
        server.log()
    );
}
