//! cascade-ann HNSW vs hnswlib 0.8.0 on the same vectors, in the same run.
//!
//! ```text
//! cargo bench -p cascade-ann --bench ann_vs_hnswlib -- [--set gauss|als-items|als-like] [--n 200000]
//!     [--nq 1000] [--repeats 3] [--build-repeats 1] [--efs 10,16,...] [--python PATH] [--ours-first]
//! ```
//!
//! `benches/hnswlib_peer.py`, run with `--python` (default `$CASCADE_BENCH_PYTHON`, else
//! `/work/venv/bin/python`; it needs numpy and hnswlib, and implicit for the ALS sets), writes
//! the vector set of `shared/bench/bench_ann.py` with its exact top-10 (numpy, as `exact_topk`)
//! into a temporary directory:
//! - `gauss` (default): 200,000 × 64 normalised N(0,1) vectors from numpy's `default_rng(42)`,
//!   1,000 queries from `default_rng(43)`, exactly as `gauss-200k`;
//! - `als-items`: the ALS item factors (3,585 × 64) of ml-1m-u1to2998, 590 user queries;
//! - `als-like`: `als-like-200k` (item factors + noise, all 2,992 users as queries).
//!
//! It then serves hnswlib builds and searches over stdin/stdout. Protocol section 3: inner
//! product, M = 16, ef_construction = 200, k = 10; build time with all threads (rayon's pool,
//! `RAYON_NUM_THREADS`, and the same count for hnswlib); for each ef, recall@10 against the exact
//! top-10 and single-thread QPS = queries / wall time of one pass over all queries (hnswlib: one
//! `knn_query` batch call with `num_threads=1`; ours: a loop of `search` calls), median of
//! `--repeats`. The two libraries alternate per ef so background load hits both alike; the sweep
//! (protocol section 3: ef 10..2048) stops once both reach recall 0.999. The summary shows the
//! cheapest ef reaching recall 0.95 and 0.99 for each library.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use cascade_ann::{Filter, Hnsw, Metric, Params};

const EFS: [usize; 16] = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048];
const K: usize = 10;

struct Args {
    set: String,
    n: usize,
    nq: usize,
    repeats: usize,
    build_repeats: usize,
    efs: Vec<usize>,
    python: PathBuf,
    ours_first: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        set: "gauss".into(),
        n: 200_000,
        nq: 1_000,
        repeats: 3,
        build_repeats: 1,
        efs: EFS.to_vec(),
        python: std::env::var_os("CASCADE_BENCH_PYTHON").map_or_else(|| "/work/venv/bin/python".into(), PathBuf::from),
        ours_first: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--set" => a.set = value(),
            "--n" => a.n = value().parse().expect("--n"),
            "--nq" => a.nq = value().parse().expect("--nq"),
            "--repeats" => a.repeats = value().parse().expect("--repeats"),
            "--build-repeats" => a.build_repeats = value().parse().expect("--build-repeats"),
            "--efs" => a.efs = value().split(',').map(|x| x.parse().expect("--efs")).collect(),
            "--python" => a.python = value().into(),
            "--ours-first" => a.ours_first = true,
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).expect("read").chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn read_u32(path: &Path) -> Vec<u32> {
    std::fs::read(path).expect("read").chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Waits (up to 30 min) for the venv to have numpy and hnswlib: it may still be being created.
fn wait_for_python(python: &Path) {
    let start = Instant::now();
    loop {
        let ok = Command::new(python)
            .args(["-c", "import numpy, hnswlib"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(1800), "{} never got numpy + hnswlib", python.display());
        eprintln!("waiting for {} to have numpy and hnswlib ...", python.display());
        std::thread::sleep(Duration::from_secs(30));
    }
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn ask(&mut self, cmd: &str) -> Vec<String> {
        writeln!(self.stdin, "{cmd}").expect("write to peer");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from peer");
        assert!(!line.is_empty(), "hnswlib peer exited");
        line.split_whitespace().map(String::from).collect()
    }
}

struct Point {
    ef: usize,
    recall: f64,
    qps: f64,
}

fn recall(found: &[Vec<u32>], truth: &[u32]) -> f64 {
    let hits: usize =
        found.iter().zip(truth.chunks_exact(K)).map(|(f, t)| f.iter().filter(|id| t.contains(id)).count()).sum();
    hits as f64 / (found.len() * K) as f64
}

fn cheapest(points: &[Point], target: f64) -> String {
    points
        .iter()
        .find(|p| p.recall >= target)
        .map_or_else(|| "not reached".to_string(), |p| format!("ef={:<5} R={:.3} {:>8.0} QPS", p.ef, p.recall, p.qps))
}

fn main() {
    let args = parse_args();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    wait_for_python(&args.python);
    let dir = tempfile::tempdir().expect("tempdir");
    let threads = rayon::current_num_threads();

    let t = Instant::now();
    let status = Command::new(&args.python)
        .arg(here.join("hnswlib_peer.py"))
        .args(["gen", "--set", &args.set, "--n", &args.n.to_string(), "--nq", &args.nq.to_string(), "--out"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("run hnswlib_peer.py gen");
    assert!(status.success(), "hnswlib_peer.py gen failed");
    let meta: Vec<usize> = std::fs::read_to_string(dir.path().join("meta.txt"))
        .expect("meta")
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (n, dim, nq) = (meta[0], meta[1], meta[2]);
    let x = read_f32(&dir.path().join("X.f32"));
    let q = read_f32(&dir.path().join("Q.f32"));
    let truth = read_u32(&dir.path().join("truth.u32"));
    assert_eq!((x.len(), q.len(), truth.len()), (n * dim, nq * dim, nq * K));
    println!(
        "set {} n={n} dim={dim} nq={nq} | M=16 ef_construction=200 inner product | build {threads} threads, \
         search 1 thread | cascade-ann kernels: {:?}",
        args.set,
        cascade_ann::isa()
    );
    println!("data + exact top-10 in {:.1} s", t.elapsed().as_secs_f64());

    let mut child = Command::new(&args.python)
        .arg(here.join("hnswlib_peer.py"))
        .args(["serve", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hnswlib peer");
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut peer = Peer { child, stdin, stdout };
    let mut ready = String::new();
    peer.stdout.read_line(&mut ready).expect("peer ready");
    assert_eq!(ready.trim(), "ready");

    // Builds (alternating, median of --build-repeats each).
    let params = Params::new(Metric::InnerProduct).m(16).ef_construction(200);
    let (mut theirs_build, mut ours_build) = (Vec::new(), Vec::new());
    let mut index = None;
    for _ in 0..args.build_repeats {
        let mut run_theirs = || {
            let r = peer.ask(&format!("build 16 200 {threads} ip"));
            theirs_build.push(r[1].parse::<f64>().unwrap());
        };
        let mut run_ours = || {
            index = None;
            let t = Instant::now();
            index = Some(Hnsw::build(&x, dim, &params).expect("build"));
            ours_build.push(t.elapsed().as_secs_f64());
        };
        if args.ours_first {
            run_ours();
            run_theirs();
        } else {
            run_theirs();
            run_ours();
        }
    }
    let index = index.unwrap();
    let (theirs_build, ours_build) = (median(theirs_build), median(ours_build));
    println!("build s: hnswlib {theirs_build:.2}, cascade-ann {ours_build:.2}");

    let queries: Vec<&[f32]> = q.chunks_exact(dim).collect();
    let filter = Filter::new();
    let (mut theirs, mut ours) = (Vec::new(), Vec::new());
    println!("{:>5} | {:>14} {:>9} | {:>14} {:>9}", "ef", "hnswlib R@10", "QPS", "cascade R@10", "QPS");
    for &ef in &args.efs {
        let r = peer.ask(&format!("search {ef} {}", args.repeats));
        let t_point = Point { ef, recall: r[2].parse().unwrap(), qps: r[3].parse().unwrap() };
        let found: Vec<Vec<u32>> =
            queries.iter().map(|qv| index.search(qv, K, ef, &filter).into_iter().map(|h| h.0).collect()).collect();
        let our_recall = recall(&found, &truth);
        let times: Vec<f64> = (0..args.repeats)
            .map(|_| {
                let t = Instant::now();
                for qv in &queries {
                    std::hint::black_box(index.search(qv, K, ef, &filter));
                }
                t.elapsed().as_secs_f64()
            })
            .collect();
        let o_point = Point { ef, recall: our_recall, qps: nq as f64 / median(times) };
        println!(
            "{ef:>5} | {:>14.4} {:>9.0} | {:>14.4} {:>9.0}",
            t_point.recall, t_point.qps, o_point.recall, o_point.qps
        );
        let done = t_point.recall >= 0.999 && o_point.recall >= 0.999;
        theirs.push(t_point);
        ours.push(o_point);
        if done {
            break;
        }
    }
    let _ = writeln!(peer.stdin, "quit");
    drop(peer.stdin);
    let _ = peer.child.wait();

    println!();
    println!("| library | build s ({threads} threads) | recall@10 ≥ 0.95 (1 thread) | recall@10 ≥ 0.99 (1 thread) |");
    println!("|---|---:|---|---|");
    println!("| hnswlib 0.8.0 | {theirs_build:.2} | {} | {} |", cheapest(&theirs, 0.95), cheapest(&theirs, 0.99));
    println!("| cascade-ann | {ours_build:.2} | {} | {} |", cheapest(&ours, 0.95), cheapest(&ours, 0.99));
}
