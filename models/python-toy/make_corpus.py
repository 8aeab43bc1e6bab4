"""Writes corpus.jsonl: small, syntactically valid Python functions for the python-toy model.

The corpus is synthetic (no third-party data): function names, parameter lists and bodies are
drawn from the small vocabularies below with a fixed seed, so the file is reproducible with
`python3 models/python-toy/make_corpus.py`. About one function in eight is named `add`, with one,
two or three parameters, so "a function named add with two parameters" is a requirement that
unguided samples meet only sometimes.
"""

import json
import random

NAMES = ["add", "sub", "mul", "scale", "mean", "clamp", "square", "area", "total",
         "bigger", "count", "norm", "shift", "halve", "double", "ratio"]
PARAMS = ["a", "b", "c", "x", "y", "n", "k", "value", "factor", "items", "lo", "hi"]
OPS = ["+", "-", "*", "/", "%"]
VARS = ["result", "out", "acc", "tmp", "s"]


def expr(params):
    if len(params) == 1:
        p = params[0]
        return random.choice([f"{p} * {p}", f"{p} + 1", f"{p} // 2", f"-{p}", f"abs({p})", f"{p} * 2"])
    a, b = random.sample(params, 2)
    e = f"{a} {random.choice(OPS)} {b}"
    if len(params) > 2 and random.random() < 0.6:
        c = [p for p in params if p not in (a, b)][0]
        e = f"{e} {random.choice(OPS[:3])} {c}"
    return e


def body(params):
    kind = random.random()
    if kind < 0.35:
        return [f"return {expr(params)}"]
    if kind < 0.6:
        v = random.choice(VARS)
        return [f"{v} = {expr(params)}", f"return {v}"]
    if kind < 0.8 and len(params) >= 2:
        a, b = random.sample(params, 2)
        cmp = random.choice([">", "<", ">=", "<=", "=="])
        return [f"if {a} {cmp} {b}:", f"    return {a}", f"return {b}"]
    p = params[0]
    v = random.choice(VARS)
    return [f"{v} = 0", f"for i in range({p}):", f"    {v} += i", f"return {v}"]


def function():
    name = "add" if random.random() < 0.125 else random.choice(NAMES[1:])
    params = random.sample(PARAMS, random.choice([1, 2, 2, 3]))
    lines = [f"def {name}({', '.join(params)}):"] + ["    " + line for line in body(params)]
    return "\n".join(lines)


def main():
    random.seed(7)
    seen = set()
    with open("models/python-toy/corpus.jsonl", "w") as f:
        while len(seen) < 6000:
            text = function()
            if text in seen:
                continue
            seen.add(text)
            compile(text, "<corpus>", "exec")  # every example is valid Python
            f.write(json.dumps({"text": text}) + "\n")


main()
