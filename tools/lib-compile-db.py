#!/usr/bin/env python3
"""lib-compile-db.py BUILDDIR OUTDIR - copy BUILDDIR/compile_commands.json to OUTDIR with only the
library's C sources (lib/**/*.c), for the static analysers (tools/check-cppcheck.sh,
tools/check-clang-tidy.sh); prints those sources, one a line."""
import json
import os
import sys

build, out = sys.argv[1], sys.argv[2]
root = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
lib = os.path.join(root, "lib") + os.sep
with open(os.path.join(build, "compile_commands.json")) as f:
    db = json.load(f)
keep = []
for e in db:
    path = os.path.realpath(os.path.join(e["directory"], e["file"]))
    if path.startswith(lib) and path.endswith(".c"):
        keep.append(e)
        print(os.path.relpath(path, root))
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "compile_commands.json"), "w") as f:
    json.dump(keep, f, indent=1)
