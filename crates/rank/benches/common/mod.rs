//! What the LightGBM comparison benches share: running the Python peer and reading its output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Python with LightGBM: `$CASCADE_BENCH_PYTHON`, else the venv the benchmark docs set up.
pub fn default_python() -> PathBuf {
    std::env::var_os("CASCADE_BENCH_PYTHON").map_or_else(|| "/work/venv/bin/python".into(), PathBuf::from)
}

/// Runs `benches/lightgbm_peer.py ARGS` with `python`; returns its last stdout line (JSON).
pub fn peer(python: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/lightgbm_peer.py");
    let out = Command::new(python).arg(script).args(args).stderr(Stdio::inherit()).output().expect("run peer");
    assert!(out.status.success(), "lightgbm_peer.py {args:?} failed");
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap_or_default().to_string()
}

/// Little-endian f64s, as the peer writes predictions.
pub fn read_f64(path: &Path) -> Vec<f64> {
    std::fs::read(path).expect("read").chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A number field of a flat JSON object, without a JSON dependency in the benches.
pub fn json_number(json: &str, key: &str) -> f64 {
    let at = json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} missing in {json}"));
    let rest = json[at + key.len() + 3..].trim_start();
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim().parse().unwrap()
}
