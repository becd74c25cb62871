#!/usr/bin/env python3
"""Render the raw samples written by compare.sh as one Markdown table + JSON.

Input: a TSV file, one sample per line:
    row <TAB> metric <TAB> unit <TAB> better(hi|lo|-) <TAB> proxy <TAB> value
and a notes file (free text lines). Each (row, metric, proxy) may have several
samples (one per run); the table shows the median, with the spread
((max-min)/median) when there is more than one sample, and each proxy's ratio
to HAProxy's median.

usage: report.py SAMPLES.tsv NOTES.txt OUT.md OUT.json [meta key=value ...]
"""
import json
import statistics
import sys

PROXIES = ["direct", "llmgw", "haproxy", "nginx"]
TITLES = {"direct": "upstream direct", "llmgw": "llmgw", "haproxy": "HAProxy", "nginx": "nginx"}


def fmt(v):
    if v is None:
        return ""
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    samples_path, notes_path, md_path, json_path = sys.argv[1:5]
    meta = dict(kv.split("=", 1) for kv in sys.argv[5:])
    groups = {}  # (row, metric) -> {"unit", "better", "proxies": {proxy: [values]}}
    order = []
    with open(samples_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 6:
                continue
            row, metric, unit, better, proxy, value = parts
            try:
                value = float(value)
            except ValueError:
                continue
            key = (row, metric)
            if key not in groups:
                groups[key] = {"unit": unit, "better": better, "proxies": {}}
                order.append(key)
            groups[key]["proxies"].setdefault(proxy, []).append(value)
    try:
        notes = [l.rstrip("\n") for l in open(notes_path) if l.strip()]
    except FileNotFoundError:
        notes = []

    out_rows = []
    for key in order:
        g = groups[key]
        res = {}
        for p, vals in g["proxies"].items():
            med = statistics.median(vals)
            spread = (max(vals) - min(vals)) / med * 100 if len(vals) > 1 and med else None
            res[p] = {"median": med, "runs": vals, "spread_pct": spread}
        ha = res.get("haproxy", {}).get("median")
        for p, r in res.items():
            r["ratio_to_haproxy"] = (r["median"] / ha) if ha else None
        out_rows.append({"row": key[0], "metric": key[1], "unit": g["unit"],
                         "better": {"hi": "higher", "lo": "lower"}.get(g["better"], ""),
                         "results": res})

    cols = [p for p in PROXIES if any(p in r["results"] for r in out_rows)]
    ratio_cols = [p for p in cols if p not in ("direct", "haproxy")]
    hdr = ["row", "metric", "unit"] + [TITLES[p] for p in cols] + [f"{TITLES[p]} / HAProxy" for p in ratio_cols]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in out_rows:
        cells = [r["row"], r["metric"] + {"higher": " ↑", "lower": " ↓"}.get(r["better"], ""), r["unit"]]
        for p in cols:
            x = r["results"].get(p)
            if x is None:
                cells.append("–")
            else:
                s = fmt(x["median"])
                if x["spread_pct"] is not None:
                    s += f" ±{x['spread_pct'] / 2:.0f}%"
                cells.append(s)
        for p in ratio_cols:
            x = r["results"].get(p)
            cells.append(f"{x['ratio_to_haproxy']:.2f}×" if x and x["ratio_to_haproxy"] is not None else "–")
        lines.append("| " + " | ".join(cells) + " |")
    md = []
    if meta:
        md.append(" · ".join(f"{k}: {v}" for k, v in meta.items()))
        md.append("")
    md += lines
    md.append("")
    md.append("Medians of the runs; ±N% is half the (max−min)/median spread; ↑ higher is better, ↓ lower is better.")
    if notes:
        md.append("")
        md += [f"- {n}" for n in notes]
    text = "\n".join(md) + "\n"
    with open(md_path, "w") as f:
        f.write(text)
    with open(json_path, "w") as f:
        json.dump({"meta": meta, "rows": out_rows, "notes": notes}, f, indent=1)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
