//! `tessera route`: one OpenAI-compatible endpoint over a fleet of servers, or with `--dry-run`
//! where a sample request would go and why.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use tessera_router::config::{Policy, Tenant};

#[derive(Args, Debug)]
pub struct RouteArgs {
    /// The fleet file (TOML): [router] settings, [[upstream]] servers, [[tenant]] keys and policies.
    /// Reloaded when it changes, or on SIGHUP.
    #[arg(long)]
    pub config: PathBuf,
    /// Listen address, instead of the file's [router] listen.
    #[arg(long)]
    pub listen: Option<String>,
    /// Print where a request would go and why (after one health and metrics probe), then exit.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// --dry-run: the tenant, by name.
    #[arg(long, requires = "dry_run", conflicts_with = "api_key")]
    pub tenant: Option<String>,
    /// --dry-run: the tenant, by one of its API keys.
    #[arg(long = "api-key", requires = "dry_run")]
    pub api_key: Option<String>,
    /// --dry-run: the requested model (default: the first the fleet serves).
    #[arg(long, requires = "dry_run")]
    pub model: Option<String>,
    /// --dry-run: the prompt, for prefix affinity.
    #[arg(long, requires = "dry_run", default_value = "")]
    pub prompt: String,
    /// --dry-run: do not contact the upstreams; assume every one healthy and idle.
    #[arg(long = "no-probe", requires = "dry_run")]
    pub no_probe: bool,
}

pub fn run(args: RouteArgs) -> Result<()> {
    let fleet = tessera_router::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    if args.dry_run {
        return runtime.block_on(dry_run(fleet, &args));
    }
    let listen = args.listen.clone().unwrap_or_else(|| fleet.router.listen.clone());
    runtime.block_on(async {
        let running = tessera_router::start(fleet, &listen, Some(args.config.clone())).await?;
        eprintln!("tessera route listening on http://{} ({})", running.addr, args.config.display());
        running.run_until_signal().await
    })
}

async fn dry_run(fleet: tessera_router::FleetConfig, args: &RouteArgs) -> Result<()> {
    let tenant = match (&args.tenant, &args.api_key) {
        (Some(name), _) => fleet.tenants.iter().find(|t| &t.name == name).cloned().with_context(|| {
            let names: Vec<&str> = fleet.tenants.iter().map(|t| t.name.as_str()).collect();
            format!("no tenant {name:?} in {} (tenants: {})", args.config.display(), names.join(", "))
        })?,
        (None, Some(key)) => fleet
            .tenants
            .iter()
            .find(|t| t.api_keys.contains(key))
            .cloned()
            .with_context(|| format!("no tenant of {} has that API key", args.config.display()))?,
        (None, None) if fleet.tenants.is_empty() => {
            Tenant { name: "default".into(), api_keys: vec![], policy: Policy::default(), rate_limit: None }
        }
        (None, None) => bail!("the fleet has tenants: give --tenant NAME or --api-key KEY"),
    };
    let model = match &args.model {
        Some(m) => m.clone(),
        None => fleet.models().into_iter().next().context("the fleet serves no model")?,
    };
    let router = tessera_router::Router::new(fleet);
    if !args.no_probe {
        router.probe_all().await;
    }
    print!("{}", router.explain(&tenant, &model, &args.prompt));
    Ok(())
}
