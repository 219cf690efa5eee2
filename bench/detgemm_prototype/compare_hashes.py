"""Compare per-shape output hashes of test_capi.py runs (native vs qemu CPUs)."""
import json, sys
runs = {f: json.load(open(f)) for f in sys.argv[1:]}
base = runs[sys.argv[1]]
ok = True
for shape in base:
    vals = {f: sorted(set(r[shape].values())) for f, r in runs.items()}
    same = all(v == vals[sys.argv[1]] and len(v) == 1 for v in vals.values())
    ok &= same
    print(f"{shape:18s} {vals[sys.argv[1]][0]} identical_in_all_runs_and_isas={same}")
print("ALL IDENTICAL:", ok)
