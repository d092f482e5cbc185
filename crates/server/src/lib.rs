//! `tessera serve`: an OpenAI-compatible HTTP server over a continuous-batching engine.
//!
//! - [`engine`]: one thread owns the model, the paged KV cache and the scheduler
//!   (`tessera-scheduler`); every iteration it runs one batched forward pass over all running
//!   sequences and streams each request's tokens back through its own channel.
//! - [`http`]: axum routes, auth, limits, SSE; it talks to the engine only through
//!   [`engine::EngineHandle::submit`] and the events that come back (it knows no tensors).
//! - [`metrics`]: Prometheus text for `/metrics`.

mod constraint;
pub mod engine;
pub mod http;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use tessera_api::{IdGenerator, ToolFormat};
use tessera_runtime::LoadedModel;
use tessera_tokenizer::{ChatTemplate, Tokenizer};

pub use engine::EngineConfig;
pub use http::HttpConfig;

/// Everything `tessera serve` is configured with.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub host: String,
    pub port: u16,
    pub engine: EngineConfig,
    pub http: HttpConfig,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
}

/// A running server: its address, and a way to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting requests, lets in-flight ones finish (up to the grace period), and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task")?
    }

    /// Runs until the process gets Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        self.shutdown().await
    }
}

/// Starts the engine and binds the HTTP server (port 0 picks a free port).
pub async fn start(model: Arc<LoadedModel>, options: ServerOptions) -> anyhow::Result<RunningServer> {
    let metrics = Arc::new(metrics::Metrics::default());
    let template = match model.tokenizer.chat_template()? {
        Some(t) => t,
        None => {
            let (name, source) = ChatTemplate::builtin_for(&model.config().architecture);
            tracing::info!("the model has no chat template; using the built-in {name} template");
            let text = |id: Option<u32>| id.map(|i| model.tokenizer.decode(&[i])).unwrap_or_default();
            ChatTemplate::new(source, &text(model.tokenizer.bos_id()), &text(model.tokenizer.eos_id()))?
        }
    };
    let tool_format = ToolFormat::detect(model.tokenizer.chat_template_source().unwrap_or(""));
    let vocabulary = Arc::new(
        tessera_constrain::Vocabulary::from_tokenizer(Arc::new(Tokenizer::from_source(&model.source)?))
            .context("building the vocabulary for constrained decoding")?,
    );
    let (engine, engine_thread) = engine::start(model.clone(), options.engine.clone(), metrics.clone())?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let state = Arc::new(http::AppState {
        engine: engine.clone(),
        model,
        template,
        tool_format,
        vocabulary,
        config: options.http.clone(),
        metrics,
        ids: Mutex::new(IdGenerator::new(seed)),
        started: seed / 1_000_000_000,
    });
    let app = http::router(state);
    let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
        .await
        .with_context(|| format!("binding {}:{}", options.host, options.port))?;
    let addr = listener.local_addr()?;
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let grace = options.shutdown_grace;
    let task = tokio::spawn(async move {
        let mut stop_for_server = stop.clone();
        let engine_for_signal = engine.clone();
        let server = axum::serve(listener.tap_io(no_delay), app).with_graceful_shutdown(async move {
            let _ = stop_for_server.wait_for(|s| *s).await;
            engine_for_signal.stop_accepting();
        });
        let server = tokio::spawn(async move { server.await });
        // In-flight requests get the grace period after the signal, then the server stops anyway.
        let _ = stop.wait_for(|s| *s).await;
        match tokio::time::timeout(grace, server).await {
            Ok(joined) => {
                joined.context("server")?.context("serving")?;
                drop(engine);
                // The engine thread ends once every handle is gone and its work is done.
                let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
            }
            Err(_) => tracing::warn!("grace period over; ending the remaining streams"),
        }
        Ok(())
    });
    tracing::info!(%addr, "listening");
    Ok(RunningServer { addr, shutdown, task })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Starts the server on its own Tokio runtime and serves until Ctrl-C or SIGTERM.
pub fn run_blocking(model: Arc<LoadedModel>, options: ServerOptions) -> anyhow::Result<()> {
    // HTTP work is light; the engine thread and the backend's own threads do the computing.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let server = start(model, options).await?;
        eprintln!("tessera serve: listening on http://{}", server.addr);
        server.run_until_signal().await
    })
}

/// Sends each small write (an SSE token) at once: with Nagle's algorithm a write waits for the
/// client's delayed ACK of the previous one, up to 40 ms.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY: {e}");
    }
}
