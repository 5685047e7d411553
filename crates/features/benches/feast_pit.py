"""Feast's local offline store on the tables of `cascade features bench-pit --generate --dir DIR`.

Usage: /work/venv-feast/bin/python feast_pit.py DIR
Times `get_historical_features(...).to_df()` (entity rows read from DIR/entity_df.parquet), prints
peak RSS, then compares every value with DIR/cascade_out.parquet (written by the cascade join) by
row_id. Feature rows are at whole seconds and label rows at x.500 s, so Feast's `<= T` and
Cascade's `< T` select the same rows.
"""

import json
import os
import resource
import sys
import tempfile
import time
from datetime import timedelta

import numpy as np
import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float64

d = os.path.abspath(sys.argv[1])
meta = json.load(open(os.path.join(d, "meta.json")))
repo = tempfile.mkdtemp(prefix="feast-repo-")
with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
    f.write(
        "project: bench\nregistry: registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: online.db\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
store = FeatureStore(repo_path=repo)
user = Entity(name="user", join_keys=["user_id"])
views, refs = [], []
for v in range(meta["views"]):
    src = FileSource(name=f"view_{v}_src", path=os.path.join(d, f"view_{v}.parquet"), timestamp_field="event_timestamp")
    names = meta["features"][v]
    views.append(
        FeatureView(
            name=f"view_{v}",
            entities=[user],
            ttl=timedelta(seconds=meta["ttl_seconds"]),
            schema=[Field(name=n, dtype=Float64) for n in names],
            source=src,
            online=False,
        )
    )
    refs += [f"view_{v}:{n}" for n in names]
store.apply([user] + views)

t0 = time.time()
entity_df = pd.read_parquet(os.path.join(d, "entity_df.parquet"))
df = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
wall = time.time() - t0
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"feast {__import__('feast').__version__} get_historical_features: {len(df)} rows x {len(refs)} features: {wall:.3f} s, peak RSS {peak_mb:.0f} MiB")

ours = pd.read_parquet(os.path.join(d, "cascade_out.parquet")).sort_values("row_id").reset_index(drop=True)
assert len(ours) == len(entity_df) and (ours["row_id"].values == np.arange(len(ours))).all()
# Feast's file store drops an entity row when, for some view, the entity has rows but none
# within [T - ttl, T] (its TTL filter removes every candidate), and collapses entity rows with the
# same (keys, T); only the rows it returned are compared.
theirs = df.sort_values("row_id").reset_index(drop=True)
print(f"feast returned {len(theirs)} of {len(entity_df)} entity rows ({len(entity_df) - len(theirs)} dropped)")
ours = ours.set_index("row_id").loc[theirs["row_id"].values].reset_index()
mismatches = 0
for v in range(meta["views"]):
    for n in meta["features"][v]:
        a, b = ours[n].to_numpy(dtype=float, na_value=np.nan), theirs[n].to_numpy(dtype=float, na_value=np.nan)
        bad = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        if bad.any():
            i = int(np.argmax(bad))
            print(f"  {n}: {int(bad.sum())} mismatches, first row_id {ours['row_id'][i]}: cascade {a[i]} feast {b[i]}")
        mismatches += int(bad.sum())
present = int(sum(ours[n].notna().sum() for v in range(meta["views"]) for n in meta["features"][v]))
print(f"compared {len(ours)} rows x {len(refs)} features ({present} values present): {mismatches} mismatches")
