//! `cascade quickstart`: a working project in one command.

use crate::generate::{self, GenerateArgs};
use crate::load;
use crate::project::{self, CONFIG_FILE, Project};
use anyhow::Result;
use cascade_api::RecommendationRequest;
use cascade_serving::Recommender;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// Project directory (created if missing; an existing project there is reused).
    #[arg(long, default_value = "quickstart")]
    dir: PathBuf,
    /// Stop after the sample recommendation instead of serving on.
    #[arg(long)]
    no_serve: bool,
    /// Import a MovieLens 100K/1M directory instead of generating a synthetic world.
    #[arg(long)]
    movielens: Option<PathBuf>,
    /// HOST:PORT to serve on (overrides server.addr).
    #[arg(long)]
    addr: Option<String>,
}

pub fn run(args: &QuickstartArgs) -> Result<()> {
    let config_path = args.dir.join(CONFIG_FILE);
    if config_path.exists() {
        println!("[1/4] project   reusing {}", config_path.display());
    } else {
        project::init(&args.dir, Some("quickstart"), false)?;
        println!("[1/4] project   wrote {}", config_path.display());
    }
    let mut project = Project::load(Some(&config_path))?;
    let summary = match &args.movielens {
        Some(dir) => {
            println!("[2/4] data      importing MovieLens from {}", dir.display());
            load::import_source(&project, &crate::import::Source::MovieLens(dir.clone()), false, 10_000, false)?
        }
        None => {
            let generate = GenerateArgs {
                seed: 42,
                users: 1_000,
                items: 2_000,
                events: 100_000,
                days: 60,
                out: None,
                json: false,
            };
            println!(
                "[2/4] data      generating a synthetic world: {} users, {} items, {} events (seed {})",
                generate.users, generate.items, generate.events, generate.seed
            );
            generate::into_store(&project, &generate)?
        }
    };
    print!("                ");
    summary.print(false);
    println!("                event log: {} records in {}", summary.next_offset, project.data_dir().display());
    println!(
        "[3/4] train     fitting {} with a grid search on the latest interactions",
        project.train()?.models.join(", ")
    );
    let manifest = crate::train::run(&project, &crate::train::TrainArgs { no_tune: false, k: 10, json: false })?;
    println!("                `cascade models show {}` for the manifest", manifest.version);
    if let Some(addr) = &args.addr {
        project.set_addr(addr)?;
    } else if args.no_serve {
        // Only the sample request will come: any free port.
        project.set_addr("127.0.0.1:0")?;
    }
    // Serve, and ask the running node for one user's recommendations with their trace.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop = std::sync::Mutex::new(Some(stop));
    let no_serve = args.no_serve;
    let ready = move |addr: std::net::SocketAddr, recommender: Arc<Recommender>| {
        println!("[4/4] serve     http://{addr}");
        // Only --no-serve stops the server after the sample; otherwise the sender lives on in
        // the node's task and the server serves until Ctrl-C.
        let stop = stop.lock().ok().and_then(|mut s| s.take());
        let sample: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            match sample(&recommender).await {
                Ok(user) => {
                    if no_serve {
                        println!("                stopped (--no-serve); run `cascade serve` to serve again");
                        if let Some(stop) = stop {
                            let _ = stop.send(());
                        }
                    } else {
                        println!(
                            "                try: curl -s http://{addr}/v1/recommendations -d '{{\"user\": \"{user}\", \"explain\": true}}'"
                        );
                        println!("                     curl -s http://{addr}/metrics   (Ctrl-C to stop)");
                        // Keep the sender: dropping it would resolve the shutdown future.
                        std::future::pending::<()>().await;
                        drop(stop);
                    }
                }
                Err(e) => {
                    eprintln!("                (no sample recommendation: {e})");
                    if no_serve && let Some(stop) = stop {
                        let _ = stop.send(());
                    }
                    std::future::pending::<()>().await;
                }
            }
        });
        sample
    };
    crate::serve_until(&project, Some(&ready), false, async move {
        // A dropped sender is not a request to stop.
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}

/// Waits until the node has read the log, then asks it for the most recently active user's
/// recommendations with `explain: true` and prints them. Returns the user.
async fn sample(recommender: &Recommender) -> Result<String> {
    // The node replays the log into its live view and its feature state at start: until then
    // histories are partial and feature reads answer unavailable (the ranker would be skipped).
    while recommender.catching_up().is_some() || recommender.features().catching_up().is_some() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let Some((user, _)) = recommender.live.recent_users(1).into_iter().next() else {
        anyhow::bail!("no user has interacted yet");
    };
    // Historical data (MovieLens ends in 1998 or 2003): windowed features as of the user's
    // latest interaction, not as of today, when there is one.
    let last = recommender.live.history(&user).events.iter().map(|(ts, _)| *ts).max();
    let mut request = RecommendationRequest { user: user.clone(), k: Some(5), explain: true, ..Default::default() };
    if let Some(ts) = last {
        request.context.insert("time".into(), serde_json::json!(ts + 1));
    }
    let response = recommender.recommend(request).await?;
    let path = &response.path;
    println!(
        "                POST /v1/recommendations {{\"user\": \"{user}\", \"k\": 5, \"explain\": true}}: bundle v{}, ranked by {}, sources {:?}",
        response.model_version.map_or("-".into(), |v| v.to_string()),
        path.ranked_by,
        path.sources
    );
    for item in &response.items {
        let (hits, reasons) = item.explain.as_ref().map_or((Vec::new(), Vec::new()), |t| {
            (
                t.hits.iter().map(|h| format!("{}#{}", h.source, h.rank)).collect(),
                t.reasons.iter().map(|r| format!("{} {:+.3}", r.feature, r.contribution)).collect(),
            )
        });
        println!(
            "                  {}. {:<8} p={:.3}  from {}  because {}{}",
            item.position + 1,
            item.id,
            item.score,
            hits.join(", "),
            reasons.join(", "),
            if item.explored { "  (explored)" } else { "" }
        );
    }
    Ok(user)
}
