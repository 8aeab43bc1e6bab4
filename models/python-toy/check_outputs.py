"""Independent check of `examples/syntax_tree_python` outputs with Python's own parser.

    cargo run --release -p diffusion-lm --example syntax_tree_python -- 128 100 runs/python-out
    python3 models/python-toy/check_outputs.py runs/python-out

For each run file it prints how many outputs `ast.parse` accepts and how many define a function
`add` with exactly two plain parameters (the example's query).
"""

import ast
import glob
import json
import sys


def add_two(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "add":
            a = node.args
            if len(a.args) == 2 and not (a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.posonlyargs):
                return True
    return False


def main(out_dir):
    for path in sorted(glob.glob(f"{out_dir}/run*.jsonl")):
        rows = [json.loads(line) for line in open(path)]
        parsed = add = 0
        for row in rows:
            try:
                tree = ast.parse(row["text"])
            except SyntaxError:
                continue
            parsed += 1
            add += add_two(tree)
        print(f"{rows[0]['run']}: ast.parse {parsed}/{len(rows)}; add/2 {add}/{len(rows)}")


main(sys.argv[1] if len(sys.argv) > 1 else "runs/python-out")
