"""LightGBM side of benches/fraud_vs_lightgbm.rs and benches/gbdt_vs_lightgbm.rs: prepares the
data and trains / times LightGBM 4.7.0 in the same run as cascade-rank's trainer, so both meet the
same machine load. Metrics are computed by the Rust benchmark from the predictions written here,
with the same code for both libraries.

  python lightgbm_peer.py fraud-gen --out DIR
      shared/bench/bench_fraud.py's data: time split, 24 text columns as integer codes of their
      sorted training values (unseen -> NaN, categorical), 6 numeric columns. Writes
      DIR/{fit,valid,train,test}.x (row-major little-endian f64), DIR/*.y (f64 labels) and
      DIR/meta.json {"n_features", "categorical", "names", "rows": {...}}.
  python lightgbm_peer.py fraud-run --dir DIR --repeats 3
      bench_fraud.py's LightGBM run with num_threads=1: early stopping (AUC, 100 rounds) on
      fit/valid, rounds = max(20, best), refit on train (timed; Dataset construction timed apart),
      DIR/lgb_test.pred, batch throughput, single-row Booster.predict latency p50/p99.
  python lightgbm_peer.py rank-run --train CSV --valid CSV --params JSON --out DIR --repeats 3
      lambdarank with the given parameters, 1 thread: training time (median), DIR/lgb_valid.pred,
      batch throughput on the validation rows and latency of predict() on 500 rows.
A JSON object with the timings is the last line of stdout.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve()
TARGET = "FraudFound_P"
DROP = ["PolicyNumber", "Year", TARGET]
MONTHS = {m: i for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])}
FRAUD_PARAMS = {"objective": "binary", "metric": "auc", "learning_rate": 0.05, "num_leaves": 31,
                "min_data_in_leaf": 50, "feature_fraction": 0.8, "lambda_l2": 1.0, "cat_smooth": 10,
                "num_threads": 1, "seed": 42, "deterministic": True, "verbose": -1}


def shared_data():
    # next to the repository, or $CASCADE_SHARED (the folder holding data/ and bench/)
    env = [Path(os.environ["CASCADE_SHARED"]) / "data"] if "CASCADE_SHARED" in os.environ else []
    for p in env + [HERE.parents[4] / "shared" / "data", HERE.parents[3] / "shared" / "data"]:
        if (p / "fraud-vehicle-insurance").is_dir():
            return p
    sys.exit("shared/data/fraud-vehicle-insurance not found next to the repository")


def encode(df, cats_from):
    # as shared/bench/bench_fraud.py
    X = df.drop(columns=DROP).copy()
    cat_cols = [c for c in X.columns if X[c].dtype == object or str(X[c].dtype) in ("str", "string")]
    for c in cat_cols:
        levels = sorted(cats_from[c].astype(str).unique())
        m = {v: i for i, v in enumerate(levels)}
        X[c] = X[c].astype(str).map(m).astype(float)
    return X.astype(float), [X.columns.get_loc(c) for c in cat_cols]


def fraud_gen(a):
    df = pd.read_csv(shared_data() / "fraud-vehicle-insurance" / "fraud_oracle.csv", sep=";")
    df["_m"] = df.Month.map(MONTHS)
    train = df[df.Year <= 1995]
    test = df[df.Year == 1996]
    fit_part = train[(train.Year == 1994) | (train._m < 6)]
    val_part = train[(train.Year == 1995) & (train._m >= 6)]
    train, test, fit_part, val_part = (d.drop(columns="_m") for d in (train, test, fit_part, val_part))
    os.makedirs(a.out, exist_ok=True)
    rows = {}
    for name, part in (("fit", fit_part), ("valid", val_part), ("train", train), ("test", test)):
        X, cat_idx = encode(part, train)
        np.ascontiguousarray(X.to_numpy(dtype=np.float64)).astype("<f8").tofile(os.path.join(a.out, f"{name}.x"))
        part[TARGET].to_numpy(dtype=np.float64).astype("<f8").tofile(os.path.join(a.out, f"{name}.y"))
        rows[name] = len(part)
    meta = {"n_features": int(X.shape[1]), "categorical": cat_idx, "names": list(X.columns), "rows": rows}
    json.dump(meta, open(os.path.join(a.out, "meta.json"), "w"))
    print(json.dumps(meta), flush=True)


def load(d, name, nf):
    X = np.fromfile(os.path.join(d, f"{name}.x"), dtype="<f8").reshape(-1, nf)
    y = np.fromfile(os.path.join(d, f"{name}.y"), dtype="<f8")
    return X, y


def fraud_run(a):
    meta = json.load(open(os.path.join(a.dir, "meta.json")))
    nf, cat = meta["n_features"], meta["categorical"]
    Xf, yf = load(a.dir, "fit", nf)
    Xv, yv = load(a.dir, "valid", nf)
    Xtr, ytr = load(a.dir, "train", nf)
    Xte, _ = load(a.dir, "test", nf)
    es = lgb.train(FRAUD_PARAMS, lgb.Dataset(Xf, yf, categorical_feature=cat), num_boost_round=2000,
                   valid_sets=[lgb.Dataset(Xv, yv, categorical_feature=cat)],
                   callbacks=[lgb.early_stopping(100, verbose=False)])
    n_rounds = max(20, es.best_iteration)
    booster, construct, fit = fit_timed(
        lambda: lgb.Dataset(Xtr, ytr, categorical_feature=cat, free_raw_data=False),
        FRAUD_PARAMS, n_rounds, a.repeats)
    p = booster.predict(Xte, num_threads=1)
    p.astype("<f8").tofile(os.path.join(a.dir, "lgb_test.pred"))
    batch = batch_seconds(booster, Xte, a.repeats)
    lat = []
    for _ in range(a.repeats):
        for i in range(len(Xte)):
            row = Xte[i:i + 1]
            t0 = time.perf_counter()
            booster.predict(row, num_threads=1)
            lat.append(time.perf_counter() - t0)
    lat = np.asarray(lat) * 1e6
    print(json.dumps({
        "best_iteration": int(es.best_iteration), "n_rounds": int(n_rounds),
        "valid_auc_at_best": float(es.best_score["valid_0"]["auc"]),
        "train_s": float(np.median(fit)), "construct_s": float(np.median(construct)),
        "batch_rows_per_s": len(Xte) / float(np.median(batch)),
        "p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99)),
    }), flush=True)


def fit_timed(make_dataset, params, rounds, repeats):
    """Builds the dataset and trains `repeats` times; returns the last booster and both timings."""
    construct, fit = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        d = make_dataset()
        d.construct()
        t1 = time.perf_counter()
        booster = lgb.train(params, d, num_boost_round=rounds)
        t2 = time.perf_counter()
        construct.append(t1 - t0)
        fit.append(t2 - t1)
    return booster, construct, fit


def batch_seconds(booster, X, repeats):
    """Seconds to score all of X on one thread, `repeats` times."""
    batch = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        booster.predict(X, num_threads=1)
        batch.append(time.perf_counter() - t0)
    return batch


def read_ltr(path):
    df = pd.read_csv(path)
    y = df["label"].to_numpy(dtype=np.float64)
    g = df["group"].to_numpy()
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    X = np.ascontiguousarray(df.drop(columns=["label", "group"]).to_numpy(dtype=np.float64))
    return X, y, sizes


def rank_run(a):
    X, y, sizes = read_ltr(a.train)
    Xv, yv, vsizes = read_ltr(a.valid)
    p = json.loads(a.params)
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [p["eval_at"]],
              "learning_rate": p["learning_rate"], "num_leaves": p["num_leaves"],
              "min_data_in_leaf": p["min_data_in_leaf"], "max_bin": p["max_bin"],
              "lambdarank_truncation_level": p["lambdarank_truncation_level"],
              "num_threads": 1, "seed": 42, "deterministic": True, "verbose": -1}
    booster, construct, fit = fit_timed(
        lambda: lgb.Dataset(X, y, group=sizes, free_raw_data=False),
        params, p["num_iterations"], a.repeats)
    pred = booster.predict(Xv, num_threads=1)
    pred.astype("<f8").tofile(os.path.join(a.out, "lgb_valid.pred"))
    batch = batch_seconds(booster, Xv, a.repeats)
    lat = []
    n = len(Xv) // 500
    for i in range(max(200, n)):
        block = Xv[(i % n) * 500:(i % n + 1) * 500]
        t0 = time.perf_counter()
        booster.predict(block, num_threads=1)
        lat.append(time.perf_counter() - t0)
    lat = np.asarray(lat) * 1e6
    print(json.dumps({
        "train_s": float(np.median(fit)), "construct_s": float(np.median(construct)),
        "trees": booster.num_trees(),
        "batch_rows_per_s": len(Xv) / float(np.median(batch)),
        "p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99)),
    }), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("fraud-gen")
    g.add_argument("--out", required=True)
    r = sub.add_parser("fraud-run")
    r.add_argument("--dir", required=True)
    r.add_argument("--repeats", type=int, default=3)
    k = sub.add_parser("rank-run")
    k.add_argument("--train", required=True)
    k.add_argument("--valid", required=True)
    k.add_argument("--params", required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    {"fraud-gen": fraud_gen, "fraud-run": fraud_run, "rank-run": rank_run}[a.cmd](a)


if __name__ == "__main__":
    main()
