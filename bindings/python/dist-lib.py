#!/usr/bin/env python3
"""dist-lib.py - meson dist script of bindings/python (meson.build): make the source distribution
self-contained.

In the repository, subprojects/hybridctx is a symlink to the repository root (the library's meson
project); in an archive it would point outside the archive. This script replaces it, in
$MESON_PROJECT_DIST_ROOT, with the library's build inputs as committed (git archive of HEAD, as
`meson dist` takes the package itself): the root meson.build and meson_options.txt, lib/,
include/, tools/, the licences and README.md. The C tests and their data (tests/, 26 MB) are left
out: the package builds the library with tests=disabled.
"""
import io
import os
import subprocess
import sys
import tarfile

PATHS = ["meson.build", "meson_options.txt", "lib", "include", "tools", "LICENSE-MIT",
         "LICENSE-APACHE", "README.md"]


def main():
    src = os.environ["MESON_PROJECT_SOURCE_ROOT"]
    dist = os.environ["MESON_PROJECT_DIST_ROOT"]
    root = os.path.realpath(os.path.join(src, "subprojects", "hybridctx"))
    target = os.path.join(dist, "subprojects", "hybridctx")
    if not os.path.islink(target):
        sys.exit(f"dist-lib.py: {target} is not the symlink to the repository root")
    tar = subprocess.run(["git", "archive", "--format=tar", "HEAD", "--", *PATHS], cwd=root,
                         check=True, stdout=subprocess.PIPE).stdout
    os.unlink(target)
    os.mkdir(target)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        names = t.getnames()
        missing = [p for p in PATHS if p not in names]
        if missing:
            sys.exit(f"dist-lib.py: HEAD of {root} lacks {' '.join(missing)}")
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and the later releases of 3.8 to 3.11
            t.extractall(target, filter="data")
        else:
            t.extractall(target)
    print(f"dist-lib.py: subprojects/hybridctx: {len(names)} entries of {root} at HEAD")


if __name__ == "__main__":
    main()
