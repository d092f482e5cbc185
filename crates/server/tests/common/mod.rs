//! A server started in-process on a free port, and a minimal blocking HTTP/1.1 client (enough to
//! read JSON bodies, chunked streams, and to hang up mid-stream).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tessera_backend::DType;
use tessera_backend_cpu::CpuBackend;
use tessera_runtime::LoadedModel;
use tessera_server::{EngineConfig, HttpConfig, RunningServer, ServerOptions};

pub struct TestServer {
    pub addr: SocketAddr,
    server: Option<RunningServer>,
    runtime: tokio::runtime::Runtime,
}

impl TestServer {
    pub fn start(model: &Path, tweak: impl FnOnce(&mut ServerOptions)) -> TestServer {
        let model = Arc::new(LoadedModel::load(model, Arc::new(CpuBackend::new(2)), None).expect("model loads"));
        let mut options = ServerOptions {
            host: "127.0.0.1".into(),
            port: 0,
            engine: EngineConfig {
                block_size: 16,
                num_blocks: 512,
                max_num_seqs: 32,
                max_batched_tokens: 512,
                enable_prefix_cache: true,
                max_queue: 256,
                kv_type: DType::F16,
            },
            http: HttpConfig {
                model_name: "test-model".into(),
                api_keys: Vec::new(),
                max_body_bytes: 1 << 20,
                max_context: 512,
                request_timeout: Duration::from_secs(60),
            },
            shutdown_grace: Duration::from_secs(10),
        };
        tweak(&mut options);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let server = runtime.block_on(tessera_server::start(model, options)).expect("server starts");
        TestServer { addr: server.addr, server: Some(server), runtime }
    }

    /// Graceful shutdown: waits for in-flight requests.
    pub fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown()).expect("clean shutdown");
        }
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        request(self.addr, "POST", path, &[], body.as_bytes())
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"")
    }

    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of a server-sent event stream.
    pub fn events(&self) -> Vec<String> {
        self.body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
    }
}

pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    // The server may answer (413) before reading a large body; a failed write is fine then.
    let _ = stream.write_all(body);
    read_response(BufReader::new(stream))
}

fn read_response(mut reader: BufReader<TcpStream>) -> Response {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let _ = reader.read_to_end(&mut body);
    }
    Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Starts a streamed request, reads until the first `data:` event, and hangs up.
pub fn open_stream_and_hang_up(addr: SocketAddr, body: &str) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if line.contains("data: ") {
            return;
        }
        line.clear();
    }
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
