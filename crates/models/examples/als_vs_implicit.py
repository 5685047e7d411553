"""implicit 0.7.3 side of `cargo run --release -p cascade-models --example als_vs_implicit`.

Loads the split exactly like shared/bench/common.py (dense ids = sorted original ids, binary
values), then waits for commands on stdin so the Rust example can interleave its own fits with
implicit's in one run:  `fit` -> {"train_s": ...};  `eval` -> NDCG@10 etc. of the last fit;
`quit`.  Every answer is one JSON line on stdout.

Usage: python als_vs_implicit.py TRAIN TEST FACTORS ITERATIONS REGULARIZATION ALPHA
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit does its own threading
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gzip  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

warnings.filterwarnings("ignore")
import implicit  # noqa: E402
from implicit.cpu.als import AlternatingLeastSquares  # noqa: E402


def read(path):
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, dtype=np.int64, delimiter="\t", ndmin=2)


def main():
    train_path, test_path = sys.argv[1], sys.argv[2]
    factors, iterations = int(sys.argv[3]), int(sys.argv[4])
    reg, alpha = float(sys.argv[5]), float(sys.argv[6])
    tr, te = read(train_path), read(test_path)
    users, items = np.unique(tr[:, 0]), np.unique(tr[:, 1])
    rows, cols = np.searchsorted(users, tr[:, 0]), np.searchsorted(items, tr[:, 1])
    ui = sp.csr_matrix((np.ones(len(tr), dtype=np.float32), (rows, cols)), shape=(len(users), len(items)))
    ui.sum_duplicates()
    ui.data[:] = 1.0
    uidx = {u: i for i, u in enumerate(users.tolist())}
    truth = {}
    for u, it in zip(te[:, 0].tolist(), te[:, 1].tolist()):
        if u in uidx:
            truth.setdefault(u, set()).add(it)
    eval_users = sorted(truth)
    print(json.dumps({"ready": True, "implicit": implicit.__version__, "users": int(ui.shape[0]),
                      "items": int(ui.shape[1]), "nnz": int(ui.nnz)}), flush=True)
    model = None
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "fit":
            model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=reg, alpha=alpha,
                                            random_state=42, num_threads=0, calculate_training_loss=False)
            t0, c0 = time.perf_counter(), time.process_time()
            model.fit(ui, show_progress=False)
            print(json.dumps({"train_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}), flush=True)
        elif cmd == "eval":
            uids = np.array([uidx[u] for u in eval_users], dtype=np.int32)
            t0 = time.perf_counter()
            ids, _ = model.recommend(uids, ui[uids], N=10, filter_already_liked_items=True)
            score_s = time.perf_counter() - t0
            disc = 1.0 / np.log2(np.arange(2, 12))
            ndcg = hr = 0.0
            for u, row in zip(eval_users, ids):
                rel = truth[u]
                hits = np.array([items[i] in rel if i >= 0 else False for i in row[:10]], dtype=bool)
                if hits.any():
                    hr += 1
                    ndcg += disc[: len(hits)][hits].sum() / disc[: min(10, len(rel))].sum()
            n = len(eval_users)
            print(json.dumps({"ndcg@10": ndcg / n, "hr@10": hr / n, "eval_users": n, "score_s": score_s}), flush=True)
        elif cmd == "quit":
            break


if __name__ == "__main__":
    main()
