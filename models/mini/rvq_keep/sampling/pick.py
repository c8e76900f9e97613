# the selection rule of docs/NEXT_MODEL.md (last section): highest exact; ties -> lower CFG, then higher temperature
import json, glob, re
rows = []
for f in glob.glob("runs/s11/sel/T*_cfg*.json"):
    T, G = map(float, re.search(r"T([\d.]+)_cfg([\d.]+)\.json", f).groups())
    d = json.load(open(f))
    rows.append((d["exact_match"], -G, T, f, d["cer"]))
rows.sort(reverse=True)
best = rows[0]
json.dump({"chosen": {"temperature": best[2], "cfg_scale": -best[1]},
           "grid": [{"temperature": r[2], "cfg_scale": -r[1], "exact_match": r[0], "cer": round(r[4], 4)}
                    for r in sorted(rows, key=lambda r: (-r[2], -r[1]))]},
          open("runs/s11/selection.json", "w"), indent=1)
print(best[2], -best[1])
