"""Sums an Nsight Compute CSV (gpu__time_duration.sum per launch) by kernel name.

usage: ncu_summary.py NCU.csv
"""
import csv
import sys
from collections import defaultdict


def main():
    rows = []
    with open(sys.argv[1], newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") == "gpu__time_duration.sum":
            rows.append(r)
    total, count, by = 0.0, 0, defaultdict(lambda: [0.0, 0])
    for r in rows:
        v = float(r["Metric Value"].replace(",", ""))
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(r["Metric Unit"], 1.0)
        name = r["Kernel Name"].split("(")[0][:60]
        by[name][0] += v * scale
        by[name][1] += 1
        total += v * scale
        count += 1
    print(f"{sys.argv[1]}: {count} launches, {total:.1f} us of GPU time")
    for name, (us, n) in sorted(by.items(), key=lambda kv: -kv[1][0]):
        print(f"  {us:9.1f} us {n:5d} x {us / n:7.2f} us  {name}")


if __name__ == "__main__":
    main()
