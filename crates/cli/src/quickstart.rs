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
    /// Stop after the last step instead of serving.
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
    if args.no_serve {
        println!("[4/4] serve     skipped (--no-serve); run `cascade serve --config {}`", config_path.display());
        return Ok(());
    }
    if let Some(addr) = &args.addr {
        project.config.server.addr.clone_from(addr);
    }
    crate::serve(
        &project,
        Some(&|addr| {
            println!("[4/4] serve     http://{addr}  (Ctrl-C to stop)");
            println!("                try: curl http://{addr}/v1/items/i1");
            println!("                     curl http://{addr}/metrics");
        }),
    )
}
