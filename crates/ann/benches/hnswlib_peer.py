"""Helper for benches/ann_vs_hnswlib.rs: makes the vector sets of shared/bench/bench_ann.py and
runs hnswlib on them, driven line by line by the Rust benchmark so both libraries are timed in
the same sitting.

  python hnswlib_peer.py gen --set gauss|als-items|als-like --n 200000 --nq 1000 --out DIR
      writes DIR/{X.f32,Q.f32} (row-major little-endian float32), DIR/truth.u32 (exact top-10
      ids per query, by inner product, as bench_ann.exact_topk), DIR/meta.txt "n dim nq".
  python hnswlib_peer.py serve --dir DIR
      reads commands on stdin, answers one line each on stdout:
        build M EFC THREADS SPACE -> "build SECONDS"       (construction + add_items)
        search EF REPEATS          -> "search EF RECALL QPS" (1 thread, one batch call, median)
        quit
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def exact_topk(X, Q, k=10, block=100):
    # identical to shared/bench/bench_ann.py
    out = np.empty((len(Q), k), dtype=np.int64)
    for s in range(0, len(Q), block):
        S = Q[s:s + block] @ X.T
        part = np.argpartition(-S, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, part, 1), axis=1)
        out[s:s + block] = np.take_along_axis(part, order, 1)
    return out


def recall(found, truth):
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / truth.shape[1] for f, t in zip(found, truth)]))


def gen(a):
    if a.set == "gauss":
        # exactly as bench_ann.py main(): "gauss-200k"
        rng = np.random.default_rng(42)
        X = rng.standard_normal((a.n, 64), dtype=np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        Q = np.random.default_rng(43).standard_normal((a.nq, 64), dtype=np.float32)
        Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    elif a.set in ("als-items", "als-like"):
        # the ALS item/user factors of bench_ann.py (refit here with implicit, as it does)
        bench = next((p for p in (HERE.parents[4] / "shared" / "bench", HERE.parents[3] / "shared" / "bench")
                      if (p / "bench_ann.py").exists()), None)
        if bench is None:
            sys.exit("shared/bench/bench_ann.py not found next to the repository")
        sys.path.insert(0, str(bench))
        import bench_ann
        items, users, uids, _ = bench_ann.als_vectors()
        if a.set == "als-items":
            X, Q = items, users[uids]
        else:  # als-like-200k, exactly as bench_ann.py main()
            rng = np.random.default_rng(44)
            sigma = 0.5 * float(items.std(axis=0).mean())
            centers = rng.integers(0, len(items), size=a.n)
            X = items[centers] + sigma * rng.standard_normal((a.n, items.shape[1]), dtype=np.float32)
            Q = users
    else:
        sys.exit(f"unknown set {a.set}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    truth = exact_topk(X, Q).astype(np.uint32)
    os.makedirs(a.out, exist_ok=True)
    X.astype("<f4").tofile(os.path.join(a.out, "X.f32"))
    Q.astype("<f4").tofile(os.path.join(a.out, "Q.f32"))
    truth.astype("<u4").tofile(os.path.join(a.out, "truth.u32"))
    with open(os.path.join(a.out, "meta.txt"), "w") as f:
        f.write(f"{X.shape[0]} {X.shape[1]} {Q.shape[0]}\n")
    print(X.shape[0], X.shape[1], Q.shape[0], flush=True)


def serve(a):
    import hnswlib

    meta = open(os.path.join(a.dir, "meta.txt")).read().split()
    n, dim, nq = (int(x) for x in meta)
    X = np.fromfile(os.path.join(a.dir, "X.f32"), dtype="<f4").reshape(n, dim)
    Q = np.fromfile(os.path.join(a.dir, "Q.f32"), dtype="<f4").reshape(nq, dim)
    truth = np.fromfile(os.path.join(a.dir, "truth.u32"), dtype="<u4").reshape(nq, 10)
    idx = None
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "build":
            m, efc, threads, space = int(cmd[1]), int(cmd[2]), int(cmd[3]), cmd[4]
            idx = None
            t0 = time.perf_counter()
            idx = hnswlib.Index(space=space, dim=dim)
            idx.init_index(max_elements=n, ef_construction=efc, M=m, random_seed=100)
            idx.set_num_threads(threads)
            idx.add_items(X, np.arange(n))
            print("build", time.perf_counter() - t0, flush=True)
        elif cmd[0] == "search":
            ef, repeats = int(cmd[1]), int(cmd[2])
            idx.set_ef(ef)
            r = recall(idx.knn_query(Q, k=10, num_threads=1)[0], truth)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                idx.knn_query(Q, k=10, num_threads=1)
                ts.append(time.perf_counter() - t0)
            print("search", ef, r, nq / sorted(ts)[len(ts) // 2], flush=True)
        else:
            print("error unknown command", cmd[0], flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--set", default="gauss")
    g.add_argument("--n", type=int, default=200_000)
    g.add_argument("--nq", type=int, default=1_000)
    g.add_argument("--out", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--dir", required=True)
    a = ap.parse_args()
    gen(a) if a.cmd == "gen" else serve(a)


if __name__ == "__main__":
    main()
