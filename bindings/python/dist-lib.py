#!/usr/bin/env python3
"""dist-lib.py - meson dist script of bindings/python (meson.build): make the source distribution
self-contained.

In the repository, subprojects/hybridctx holds symlinks to the library's build inputs at the
repository root (meson.build, meson_options.txt, lib, include, tools); in an archive they would
point outside it. This script replaces each link, in $MESON_PROJECT_DIST_ROOT, with what it
names as committed (git archive of HEAD, as `meson dist` takes the package itself).
"""
import io
import os
import subprocess
import sys
import tarfile


def main():
    src = os.path.join(os.environ["MESON_PROJECT_SOURCE_ROOT"], "subprojects", "hybridctx")
    dist = os.path.join(os.environ["MESON_PROJECT_DIST_ROOT"], "subprojects", "hybridctx")
    links = sorted(os.listdir(dist))
    if not links or not all(os.path.islink(os.path.join(dist, n)) for n in links):
        sys.exit(f"dist-lib.py: {dist} should hold symlinks only, not {links}")
    root = os.path.dirname(os.path.realpath(os.path.join(src, "meson.build")))
    for n in links:  # each names the same entry of the repository root
        if os.path.realpath(os.path.join(src, n)) != os.path.join(root, n):
            sys.exit(f"dist-lib.py: subprojects/hybridctx/{n} does not lead to {root}/{n}")
    tar = subprocess.run(["git", "archive", "--format=tar", "HEAD", "--", *links], cwd=root,
                         check=True, stdout=subprocess.PIPE).stdout
    for n in links:
        os.unlink(os.path.join(dist, n))
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        names = t.getnames()
        missing = [n for n in links if n not in names]
        if missing:
            sys.exit(f"dist-lib.py: HEAD of {root} lacks {' '.join(missing)}")
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and the later releases of 3.8 to 3.11
            t.extractall(dist, filter="data")
        else:
            t.extractall(dist)
    print(f"dist-lib.py: subprojects/hybridctx: {' '.join(links)} from {root} at HEAD "
          f"({len(names)} entries)")


if __name__ == "__main__":
    main()
