#!/usr/bin/env python3
"""Writes JSON Lines of E2E restaurant-record lists, the long-document training corpus of
models/e2e-long (see its README).

Each line is {"text": "[record,record,...]"}: 2 to 8 records drawn from the E2E meaning
representations, each rendered as `diffusion-lm` renders one (compact JSON, keys in the E2E field
order, familyFriendly a boolean), so a list is valid under examples/schemas/restaurant_list.json
when it has 4 to 12 records and its records have the required fields.

Usage: scripts/make-record-lists.py data/e2e/devset.csv data/e2e/testset_w_refs.csv > lists.jsonl
(deterministic: seed 0)
"""
import csv
import json
import random
import re
import sys

FIELDS = [("name", "name"), ("eatType", "eatType"), ("food", "food"), ("priceRange", "priceRange"),
          ("customer rating", "customerRating"), ("area", "area"), ("familyFriendly", "familyFriendly"),
          ("near", "near")]


def record(mr: str) -> str:
    got = dict((k.strip(), v.strip()) for k, v in re.findall(r"([^,\[]+)\[([^\]]*)\]", mr))
    parts = []
    for field, key in FIELDS:
        if field in got:
            v = got[field]
            value = {"yes": True, "no": False}.get(v, v) if field == "familyFriendly" else v
            parts.append(f"{json.dumps(key)}:{json.dumps(value, ensure_ascii=False)}")
    return "{" + ",".join(parts) + "}"


def main() -> None:
    mrs = []
    for path in sys.argv[1:]:
        with open(path, newline="", encoding="utf-8") as f:
            mrs.extend(row["mr"] for row in csv.DictReader(f))
    mrs = sorted(set(mrs))
    rng = random.Random(0)
    for _ in range(20000):
        n = rng.randint(2, 8)
        items = [record(m) for m in rng.sample(mrs, n)]
        sys.stdout.write(json.dumps({"text": "[" + ",".join(items) + "]"}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
