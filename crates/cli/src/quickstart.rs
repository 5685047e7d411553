//! `cascade quickstart`: a working project in one command.

use crate::generate::{self, GenerateArgs};
use crate::load;
use crate::project::{self, CONFIG_FILE, Project};
use anyhow::Result;
use std::path::PathBuf;

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
        project.config.train.models.join(", ")
    );
    let manifest = crate::train::run(&project, &crate::train::TrainArgs { no_tune: false, k: 10, json: false })?;
    println!("                `cascade models show {}` for the manifest", manifest.version);
    if let Some(addr) = &args.addr {
        project.config.server.addr.clone_from(addr);
    } else if args.no_serve {
        // Only the sample request will come: any free port.
        project.config.server.addr = "127.0.0.1:0".into();
    }
    // Serve, and ask the running server for one user's recommendations with their trace.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let no_serve = args.no_serve;
    let stop = std::sync::Mutex::new(Some(stop));
    crate::serve_until(
        &project,
        Some(&|addr| {
            println!("[4/4] serve     http://{addr}");
            let stop = stop.lock().expect("poisoned").take();
            std::thread::spawn(move || {
                if let Err(e) = sample(addr) {
                    eprintln!("                (no sample recommendation: {e})");
                }
                if no_serve {
                    println!("                stopped (--no-serve); run `cascade serve` to serve again");
                    if let Some(stop) = stop {
                        let _ = stop.send(());
                    }
                } else {
                    println!(
                        "                try: curl -s http://{addr}/v1/recommendations -d '{{\"user\": \"{SAMPLE_USER}\", \"explain\": true}}'"
                    );
                    println!("                     curl -s http://{addr}/v1/items/i1/similar");
                    println!("                     curl -s http://{addr}/metrics   (Ctrl-C to stop)");
                }
            });
        }),
        async move {
            let _ = stopped.await;
        },
    )
}

/// The user the sample recommendation is for (the synthetic world's users are `u0`, `u1`, ...).
const SAMPLE_USER: &str = "u1";

/// Asks the server for `SAMPLE_USER`'s recommendations with `explain: true` and prints them.
fn sample(addr: std::net::SocketAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let response: serde_json::Value = runtime.block_on(async {
        let client = reqwest::Client::new();
        let body = serde_json::json!({"user": SAMPLE_USER, "k": 5, "explain": true});
        // The server replays the log into its live view at start; wait until it knows the user.
        let mut last = serde_json::Value::Null;
        for _ in 0..300 {
            let r = client.post(format!("http://{addr}/v1/recommendations")).json(&body).send().await?;
            last = r.json().await?;
            if last["path"]["cold_start"] == false {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::Ok(last)
    })?;
    let path = &response["path"];
    println!(
        "                POST /v1/recommendations {{\"user\": \"{SAMPLE_USER}\", \"k\": 5, \"explain\": true}}: bundle v{}, ranked by {}, sources {}",
        response["model_version"],
        path["ranked_by"].as_str().unwrap_or("?"),
        path["sources"]
    );
    for item in response["items"].as_array().into_iter().flatten() {
        let trace = &item["explain"];
        let hits: Vec<String> = trace["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| format!("{}#{}", h["source"].as_str().unwrap_or("?"), h["rank"]))
            .collect();
        let reasons: Vec<String> = trace["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!("{} {:+.3}", r["feature"].as_str().unwrap_or("?"), r["contribution"].as_f64().unwrap_or(0.0))
            })
            .collect();
        println!(
            "                  {}. {:<8} p={:.3}  from {}  because {}{}",
            item["position"].as_u64().unwrap_or(0) + 1,
            item["id"].as_str().unwrap_or("?"),
            item["score"].as_f64().unwrap_or(0.0),
            hits.join(", "),
            reasons.join(", "),
            if item["explored"] == true { "  (explored)" } else { "" }
        );
    }
    Ok(())
}
