//! Cascade's ALS against implicit 0.7.3's in one run, on the same split file.
//!
//! ```text
//! cargo run --release -p cascade-models --example als_vs_implicit -- \
//!     [--train PATH] [--test PATH] [--factors 64] [--iterations 15] [--reg 30] [--alpha 1] \
//!     [--repeats 3] [--python /work/venv/bin/python | --no-python]
//! ```
//!
//! Defaults: the ml-1m-u1to2998 split and the ALS setting chosen for it in
//! shared/bench/RESULTS.md (factors 64, 15 iterations, regularization 30, alpha 1). The Python
//! side (`als_vs_implicit.py` next to this file) is started once, loads the same files the
//! same way, and fits on command, so its fits interleave with ours under the same machine load.
//! Timing = wall time of `fit` from an in-memory CSR (PROTOCOL.md §2), all threads, median of
//! `--repeats` after one untimed warm-up fit each. NDCG@10 follows PROTOCOL.md §2.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[path = "split/mod.rs"]
mod split;
use std::time::Instant;

use cascade_models::{Als, AlsParams, Retriever};

struct Args {
    train: String,
    test: String,
    factors: usize,
    iterations: usize,
    reg: f32,
    alpha: f32,
    repeats: usize,
    seed: u64,
    cg_steps: usize,
    python: Option<String>,
}

fn parse_args() -> Args {
    let split = split::DEFAULT_SPLIT;
    let mut a = Args {
        train: format!("{split}/train.tsv.gz"),
        test: format!("{split}/test.tsv.gz"),
        factors: 64,
        iterations: 15,
        reg: 30.0,
        alpha: 1.0,
        repeats: 3,
        seed: 42,
        cg_steps: 3,
        python: Some(std::env::var("CASCADE_PYTHON").unwrap_or_else(|_| "/work/venv/bin/python".into())),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-python" {
            a.python = None;
            continue;
        }
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--train" => a.train = v,
            "--test" => a.test = v,
            "--factors" => a.factors = v.parse().expect("--factors"),
            "--iterations" => a.iterations = v.parse().expect("--iterations"),
            "--reg" => a.reg = v.parse().expect("--reg"),
            "--alpha" => a.alpha = v.parse().expect("--alpha"),
            "--repeats" => a.repeats = v.parse().expect("--repeats"),
            "--seed" => a.seed = v.parse().expect("--seed"),
            "--cg-steps" => a.cg_steps = v.parse().expect("--cg-steps"),
            "--python" => a.python = Some(v),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// Share of the machine's CPU time used by anything over the last `ms` milliseconds.
fn busy_pct(ms: u64) -> f64 {
    let read = || -> Option<(u64, u64)> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        Some((v.iter().sum(), v[3] + v.get(4).copied().unwrap_or(0)))
    };
    let (Some((t0, i0)), _) = (read(), std::thread::sleep(std::time::Duration::from_millis(ms))) else {
        return f64::NAN;
    };
    let Some((t1, i1)) = read() else { return f64::NAN };
    100.0 * (1.0 - (i1 - i0) as f64 / (t1 - t0).max(1) as f64)
}

/// CPU seconds (user + system, all threads) used by this process so far.
fn cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    if f.len() == 2 { (f[0] + f[1]) / 100.0 } else { f64::NAN }
}

struct Python {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Python {
    fn ask(&mut self, cmd: &str) -> serde_json::Value {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{cmd}").expect("write to python");
        stdin.flush().expect("flush");
        self.read()
    }

    fn read(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read from python");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("python said {line:?}: {e}"))
    }
}

fn main() {
    let a = parse_args();
    let data = split::load(&a.train, &a.test);
    let (m, eval_users) = (&data.train, &data.eval_users);
    println!(
        "data: {} users x {} items, {} train interactions, {} eval users; threads {}",
        m.rows,
        m.cols,
        m.nnz(),
        eval_users.len(),
        rayon::current_num_threads()
    );

    let params = AlsParams {
        factors: a.factors,
        regularization: a.reg,
        alpha: a.alpha,
        iterations: a.iterations,
        cg_steps: a.cg_steps,
        seed: a.seed,
    };
    println!("params: {params:?}");

    let mut py = a.python.as_ref().map(|exe| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/als_vs_implicit.py");
        let mut child = Command::new(exe)
            .arg(script)
            .args([&a.train, &a.test])
            .args([a.factors.to_string(), a.iterations.to_string(), a.reg.to_string(), a.alpha.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut p = Python { child, out };
        let ready = p.read();
        println!("implicit: {ready}");
        p
    });

    let fit = || {
        let (t, c) = (Instant::now(), cpu_s());
        let model = Als::fit(m, &params).expect("fit");
        (model, t.elapsed().as_secs_f64(), cpu_s() - c)
    };
    // Warm-up (thread pools, page faults), untimed.
    let (mut model, _, _) = fit();
    if let Some(p) = py.as_mut() {
        p.ask("fit");
    }
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for rep in 0..a.repeats {
        let busy = busy_pct(300);
        let (m2, t, cpu) = fit();
        model = m2;
        ours.push(t);
        let py_run = py.as_mut().map(|p| p.ask("fit"));
        let t_py = py_run
            .as_ref()
            .map(|r| (r["train_s"].as_f64().unwrap_or(f64::NAN), r["cpu_s"].as_f64().unwrap_or(f64::NAN)));
        if let Some((tp, _)) = t_py {
            theirs.push(tp);
        }
        println!(
            "repeat {rep}: cascade {t:.3} s wall / {cpu:.2} s CPU, implicit {} (machine busy {busy:.0}% just before)",
            t_py.map_or("-".to_string(), |(w, c)| format!("{w:.3} s wall / {c:.2} s CPU"))
        );
    }

    let t = Instant::now();
    let recs = model.recommend_all(m, eval_users, 10);
    let score_s = t.elapsed().as_secs_f64();
    let (ndcg, hr) = data.ndcg_hr(&recs);
    let (ours_med, theirs_med) = (median(ours), median(theirs));
    println!("cascade  ALS: train {ours_med:.3} s (median), NDCG@10 {ndcg:.4}, HR@10 {hr:.4}, score {score_s:.3} s");
    if let Some(p) = py.as_mut() {
        let e = p.ask("eval");
        println!(
            "implicit ALS: train {theirs_med:.3} s (median), NDCG@10 {:.4}, HR@10 {:.4}, score {:.3} s",
            e["ndcg@10"].as_f64().unwrap_or(f64::NAN),
            e["hr@10"].as_f64().unwrap_or(f64::NAN),
            e["score_s"].as_f64().unwrap_or(f64::NAN)
        );
        println!("ratio cascade / implicit train time: {:.3}", ours_med / theirs_med);
        let stdin = p.child.stdin.as_mut().expect("stdin");
        let _ = writeln!(stdin, "quit");
        let _ = p.child.wait();
    }
}
