//! `cascade`: the one binary of the Cascade platform.

mod candidates;
mod evaluate;
mod features;
mod generate;
mod import;
mod keys;
mod load;
mod policy;
mod project;
mod quickstart;
mod rollout;
mod train;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use project::Project;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

// A request allocates and frees thousands of small strings and vectors across threads; mimalloc
// makes that cheaper than glibc's malloc (a fifth of the server's CPU under load, see
// docs/benchmarks.md). Without transparent huge pages (`no_thp`): memory it returns and takes
// back would otherwise fault in 2 MiB pages zeroed on the request path, which showed as
// tens-of-milliseconds stalls in the latency tail.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cascade",
    version,
    about = "Real-time recommendations: events in, features computed online and offline, models trained and served.",
    long_about = "Real-time recommendations in one binary: durable event ingestion, a feature store, retrieval\n\
        models and GBDT rankers trained into versioned bundles, and the serving cascade.\n\n\
        Start with `cascade quickstart`: it creates a project, fills it with a synthetic world and serves it.\n\
        Every command reads ./cascade.toml (or --config FILE); CASCADE__SECTION__KEY environment variables\n\
        override the file, and flags override both."
)]
struct Cli {
    /// Project configuration file [default: ./cascade.toml].
    #[arg(long, global = true, env = "CASCADE_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info`, `cascade_store=debug` (also RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a project: writes a documented cascade.toml into DIR.
    Init {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Project name written into the file.
        #[arg(long)]
        name: Option<String>,
        /// Overwrite an existing cascade.toml.
        #[arg(long)]
        force: bool,
    },
    /// Serve the HTTP API until Ctrl-C or SIGTERM.
    ///
    /// Event ingestion, the catalogue, online features, recommendations from the newest bundle
    /// (hot-reloaded when `cascade train` writes a new one), health probes and Prometheus metrics
    /// on /metrics. Ready (`/v2/health/ready`) once the live view and the online feature state
    /// have caught up with the event log (and while a Redis feature store answers); a stop
    /// drains requests and flushes the log.
    ///
    /// Listening beyond loopback needs API keys (`cascade keys create`) or --insecure. Limits,
    /// timeouts and overload shedding are in `[server]` (docs/operations.md).
    Serve {
        /// HOST:PORT to listen on (overrides server.addr).
        #[arg(long)]
        addr: Option<String>,
        /// Serve on a non-loopback address although the project has no API key: every route
        /// is then open to anyone who reaches it.
        #[arg(long)]
        insecure: bool,
    },
    /// Import events and catalogue records from files into the project's event log.
    Import(load::ImportArgs),
    /// Generate a seeded synthetic world (catalogue, users, interactions) into the log or a file.
    Generate(generate::GenerateArgs),
    /// Train the project's retrieval models and rankers from the event log into a new versioned
    /// bundle, printing their offline metrics.
    Train(train::TrainArgs),
    /// Evaluate retrieval models offline: on split files, or on the project's event log.
    Evaluate(evaluate::EvaluateArgs),
    /// Show the candidates a trained bundle generates for a user, with each source's rank and score.
    Candidates(candidates::CandidatesArgs),
    /// List and inspect model bundles.
    #[command(subcommand)]
    Models(train::ModelsCommand),
    /// The audit log, newest first: alias moves, rollouts, jobs and API key changes — who, when,
    /// what, before, after, why.
    Audit(AuditArgs),
    /// Rollouts of challenger bundles: each pipeline's latest, as the server last judged it.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// API keys: create (the token is shown once), list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Feature store: point-in-time training sets (Parquet), offline export, audit of served vectors.
    #[command(subcommand)]
    Features(features::FeaturesCommand),
    /// init → generate (or import MovieLens) → train → serve, printing each step.
    Quickstart(quickstart::QuickstartArgs),
    /// Print the resolved configuration (after file and environment layers) as TOML.
    Config,
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Init { dir, name, force } => {
            let path = project::init(&dir, name.as_deref(), force)?;
            println!("wrote {}", path.display());
            println!("next: cd {} && cascade generate && cascade serve", dir.display());
            Ok(())
        }
        Command::Serve { addr, insecure } => {
            let mut project = Project::load(cli.config.as_deref())?;
            if let Some(addr) = addr {
                project.set_addr(&addr)?;
            }
            serve(&project, None, insecure)
        }
        Command::Audit(args) => audit(&Project::load(cli.config.as_deref())?, &args),
        Command::Rollout(cmd) => rollout::run(&Project::load(cli.config.as_deref())?, &cmd),
        Command::Keys(cmd) => keys::run(&Project::load(cli.config.as_deref())?, &cmd),
        Command::Import(args) => load::import(&Project::load(cli.config.as_deref())?, &args),
        Command::Generate(args) => generate::run(&Project::load(cli.config.as_deref())?, &args),
        Command::Train(args) => train::run(&Project::load(cli.config.as_deref())?, &args).map(drop),
        Command::Evaluate(args) => evaluate::run(cli.config.as_deref(), &args),
        Command::Candidates(args) => candidates::run(&Project::load(cli.config.as_deref())?, &args),
        Command::Models(cmd) => train::models(&Project::load(cli.config.as_deref())?, &cmd),
        Command::Features(cmd) => features::run(cli.config.as_deref(), &cmd),
        Command::Quickstart(args) => quickstart::run(&args),
        Command::Config => {
            let project = Project::load(cli.config.as_deref())?;
            print!("{}", toml::to_string_pretty(&project::Resolved::of(&project.config)?)?);
            Ok(())
        }
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&cascade_server::openapi())?);
            Ok(())
        }
    }
}

/// Opens the project's store and serves until Ctrl-C or SIGTERM.
pub fn serve(project: &Project, ready: Option<Ready<'_>>, insecure: bool) -> Result<()> {
    serve_until(project, ready, insecure, shutdown_signal())
}

/// Told the bound address and the node's recommender once the node runs (quickstart asks it
/// for a sample); returns a future that runs beside the server.
pub type Ready<'a> = &'a dyn Fn(
    std::net::SocketAddr,
    Arc<cascade_serving::Recommender>,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// [`serve`] until `shutdown` resolves (or Ctrl-C / SIGTERM).
pub fn serve_until(
    project: &Project,
    ready: Option<Ready<'_>>,
    insecure: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = shutdown_signal() => {}
        }
    };
    let store = Arc::new(open_store(project)?);
    let server = project.server()?;
    // Bounded: under overload, blocking work queues instead of growing hundreds of threads that
    // stay after the burst.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(server.blocking_threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let addr = &server.addr;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(%local, data_dir = %project.data_dir().display(), "serving");
        let node = cascade_node::Node::start(&project.config, store, Arc::new(cascade_core::SystemClock))
            .await?
            .insecure(insecure)
            .config_hash(project.config_hash.clone());
        let beside = match ready {
            Some(f) => f(local, node.recommender().clone()),
            None => {
                eprintln!("cascade serving on http://{local} (Ctrl-C to stop)");
                Box::pin(std::future::pending())
            }
        };
        tokio::select! {
            served = node.serve(listener, shutdown) => served?,
            // The sample never ends the server: once it is done, the server serves on alone.
            () = async { beside.await; std::future::pending::<()>().await } => {}
        }
        anyhow::Ok(())
    })?;
    eprintln!("stopped; the event log is flushed and synced");
    Ok(())
}

pub fn open_store(project: &Project) -> Result<cascade_store::Store> {
    let options = cascade_store::StoreOptions::from(&project.log()?);
    cascade_store::Store::open(project.data_dir(), options)
        .with_context(|| format!("opening the data directory {}", project.data_dir().display()))
}

/// The project's store as it stands, read-only: usable while `cascade serve` runs.
pub fn open_store_read_only(project: &Project) -> Result<cascade_store::Store> {
    let options = cascade_store::StoreOptions::from(&project.log()?);
    cascade_store::Store::open_read_only(project.data_dir(), options).with_context(|| {
        format!("reading the event log in {} (import or generate data first)", project.data_dir().display())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    /// Only actions starting with this (`alias`, `alias.rollback`, `key`, `job`, `rollout`).
    #[arg(long)]
    action: Option<String>,
    /// Only targets starting with this (`recommender@champion`, `key:`, `pipeline:home`).
    #[arg(long)]
    target: Option<String>,
    /// Most entries shown.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Entries older than this id (the previous page's last id).
    #[arg(long)]
    before: Option<u64>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

fn audit(project: &Project, args: &AuditArgs) -> Result<()> {
    let query = cascade_store::AuditQuery {
        before: args.before,
        action: args.action.clone(),
        target: args.target.clone(),
        limit: args.limit,
    };
    let entries = project.audit().read(&query)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("no audit entries");
    }
    for e in entries {
        let r = e.record;
        println!(
            "{:>8}  {}  {:<16} {:<28} {:<20} {} → {}{}",
            e.id,
            r.at,
            r.action,
            r.target,
            r.who,
            r.before,
            r.after,
            r.why.map_or(String::new(), |w| format!("  ({w})"))
        );
    }
    Ok(())
}
