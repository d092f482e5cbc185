//! `tessera route`: one OpenAI-compatible endpoint in front of a fleet of inference servers
//! (`tessera serve`, llama-server, vLLM), choosing an upstream per request by policy, health,
//! load, cost and prompt prefix.
//!
//! - [`config`]: the fleet file, checked whole; export classes come from the planner's catalog
//!   and rule sets, costs from the file or the planner's estimate.
//! - [`policy`] and [`select`]: pure decisions (what a tenant may reach; the order to try).
//! - [`state`]: health, ejections, in-flight counts, scraped `/metrics`, TTFT per upstream.
//! - [`forward`]: one attempt on one upstream, with the stream relayed.
//! - [`http`]: the routes, tenants, rate limits ([`limit`]) and retries; [`metrics`] for `/metrics`.

pub mod config;
pub mod forward;
pub mod http;
pub mod limit;
pub mod metrics;
pub mod policy;
pub mod select;
pub mod state;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use http_body_util::BodyExt;

pub use config::{FleetConfig, RouterSettings};

/// Everything the running router shares between requests.
pub struct Router {
    fleet: RwLock<Arc<FleetConfig>>,
    pub states: state::States,
    client: forward::HttpClient,
    limits: limit::RateLimits,
    pub metrics: Arc<metrics::Metrics>,
    started: u64,
}

impl Router {
    pub fn new(fleet: FleetConfig) -> Router {
        let client = forward::client(fleet.router.connect_timeout);
        Router {
            fleet: RwLock::new(Arc::new(fleet)),
            states: state::States::default(),
            client,
            limits: limit::RateLimits::default(),
            metrics: Arc::default(),
            started: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }

    /// The fleet as it is now (a reload swaps it; requests keep the one they started with).
    pub fn fleet(&self) -> Arc<FleetConfig> {
        self.fleet.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies a new fleet file. The listen address cannot change without a restart.
    pub fn replace_fleet(&self, new: FleetConfig) {
        let old = self.fleet();
        if new.router.listen != old.router.listen {
            tracing::warn!("listen address change to {} applies at the next restart", new.router.listen);
        }
        let names: Vec<&str> = new.upstreams.iter().map(|u| u.name.as_str()).collect();
        self.states.retain(&names);
        *self.fleet.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
    }

    pub fn observe(&self, fleet: &FleetConfig) -> Vec<select::Observed> {
        let now = Instant::now();
        fleet.upstreams.iter().map(|u| self.states.get(&u.name).observe(now)).collect()
    }

    /// Checks every upstream's `/health` and reads its `/metrics`, all at once.
    pub async fn probe_all(&self) {
        let fleet = self.fleet();
        let timeout = fleet.router.health_interval.min(Duration::from_secs(2)).max(fleet.router.connect_timeout);
        let checks = fleet.upstreams.iter().map(|u| async move {
            let state = self.states.get(&u.name);
            let ok = matches!(self.get(u, "/health", timeout).await, Some((status, _)) if status.is_success());
            state.record_health(ok);
            if ok {
                if let Some((status, body)) = self.get(u, "/metrics", timeout).await {
                    if status.is_success() {
                        state.record_scrape(state::parse_metrics(&String::from_utf8_lossy(&body)));
                    }
                }
            }
        });
        futures_util::future::join_all(checks).await;
    }

    async fn get(
        &self,
        u: &config::Upstream,
        path: &str,
        timeout: Duration,
    ) -> Option<(hyper::StatusCode, bytes::Bytes)> {
        let mut request = hyper::Request::get(format!("{}{path}", u.base_url));
        if let Some(key) = &u.api_key {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request.body(http_body_util::Full::new(bytes::Bytes::new())).ok()?;
        let fetch = async {
            let response = self.client.request(request).await.ok()?;
            let status = response.status();
            // Metrics pages are small; a huge one is cut rather than held.
            let body = http_body_util::Limited::new(response.into_body(), 4 << 20).collect().await.ok()?.to_bytes();
            Some((status, body))
        };
        tokio::time::timeout(timeout, fetch).await.ok().flatten()
    }

    /// Where a request would go and why, for `tessera route --dry-run`.
    pub fn explain(&self, tenant: &config::Tenant, model: &str, prompt: &str) -> String {
        let fleet = self.fleet();
        let observed = self.observe(&fleet);
        let info = select::RequestInfo {
            model,
            affinity: select::affinity_key(model, prompt, fleet.router.affinity_prefix_chars),
        };
        let decision = select::rank(&fleet.upstreams, &observed, &tenant.policy, &info, &fleet.router);
        let mut out = format!("tenant {}, model {model}\n", tenant.name);
        if let Some(refusal) = decision.refusal(&fleet.upstreams, model) {
            let what = match refusal {
                select::Refusal::UnknownModel => "404: no upstream serves this model",
                select::Refusal::Forbidden(_) => "403: the tenant's policy permits no upstream serving this model",
                select::Refusal::Unavailable(_) => "503: no permitted upstream can take it now",
            };
            let _ = writeln!(out, "refused ({what})");
        }
        let tries = fleet.router.retries as usize + 1;
        for (n, c) in decision.order.iter().enumerate() {
            let u = &fleet.upstreams[c.upstream];
            let role = if n == 0 {
                "first"
            } else if n < tries {
                "retry"
            } else {
                "spare"
            };
            let _ = writeln!(out, "{:>2}. {:<5} {} ({}, {}): {}", n + 1, role, u.name, u.base_url, u.region, c.why);
        }
        for (i, why) in &decision.excluded {
            let _ = writeln!(out, "    never {}: {why}", fleet.upstreams[*i].name);
        }
        for u in &fleet.upstreams {
            let classes: Vec<String> = u.classes.iter().map(|(set, class)| format!("{class} under {set}")).collect();
            let hardware = u.hardware.as_deref().unwrap_or("undeclared hardware");
            let _ = write!(out, "{}: {hardware}, ${:.3}/Mtok ({})", u.name, u.cost_per_mtok, u.cost_basis);
            let _ = writeln!(
                out,
                "{}",
                if classes.is_empty() { String::new() } else { format!(", {}", classes.join(", ")) }
            );
        }
        out
    }
}

/// A running router: its address, and a way to stop it.
pub struct RunningRouter {
    pub addr: SocketAddr,
    pub router: Arc<Router>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningRouter {
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("router task")?
    }

    /// Runs until Ctrl-C or SIGTERM.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
        self.shutdown().await
    }
}

/// Starts the router on `listen` (port 0 picks one), with health checks and, when `config_path`
/// is given, reloads of that file when it changes or on SIGHUP.
pub async fn start(fleet: FleetConfig, listen: &str, config_path: Option<PathBuf>) -> anyhow::Result<RunningRouter> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding the router to {listen}"))?;
    let addr = listener.local_addr()?;
    let router = Arc::new(Router::new(fleet));
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);

    let prober = router.clone();
    let mut stop_probe = stop.clone();
    tokio::spawn(async move {
        loop {
            prober.probe_all().await;
            let interval = prober.fleet().router.health_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop_probe.changed() => return,
            }
        }
    });
    if let Some(path) = config_path {
        tokio::spawn(watch_config(router.clone(), path, stop.clone()));
    }

    let app = http::app(router.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener.tap_io(no_delay), app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await
            .context("serving HTTP")
    });
    Ok(RunningRouter { addr, router, shutdown, task })
}

/// Reloads the fleet file when its modification time or size changes (checked every second,
/// which also catches Kubernetes' ConfigMap symlink swaps) or on SIGHUP. A file that does not
/// parse is reported and the running fleet kept.
async fn watch_config(router: Arc<Router>, path: PathBuf, mut stop: tokio::sync::watch::Receiver<bool>) {
    let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
    let mut last = stamp(&path);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = async { match hangup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            _ = stop.changed() => return,
        };
        let now = stamp(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        match load(&path) {
            Ok(fleet) => {
                tracing::info!(
                    "reloaded {}: {} upstreams, {} tenants",
                    path.display(),
                    fleet.upstreams.len(),
                    fleet.tenants.len()
                );
                router.replace_fleet(fleet);
            }
            Err(e) => tracing::error!("not reloading: {e:#}"),
        }
    }
}

/// Reads and checks a fleet file, with keys from the process environment.
pub fn load(path: &Path) -> anyhow::Result<FleetConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(FleetConfig::parse(&text, &path.display().to_string(), &|var| std::env::var(var).ok())?)
}

/// Sends each small write (an SSE token) at once: with Nagle's algorithm a write waits for the
/// client's delayed ACK of the previous one, up to 40 ms.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY: {e}");
    }
}
