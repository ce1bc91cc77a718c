#!/usr/bin/env bash
# check-apidoc.sh - build the HTML API reference from the public headers with doxygen
# (docs/Doxyfile) and fail on any warning (an undocumented public symbol, an incomplete @param
# list, a malformed command) or on any public symbol that has no documentation in doxygen's XML
# (this also covers the values of anonymous enums, which doxygen itself does not warn about).
#   tools/check-apidoc.sh        output: docs/api/html/index.html (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v doxygen >/dev/null || { echo "check-apidoc: doxygen is not installed (apt-get install doxygen)" >&2; exit 2; }
out=docs/api
rm -rf "$out"
mkdir -p "$out"
rc=0
doxygen docs/Doxyfile || rc=$?
if [ -s "$out/warnings.log" ]; then
    cat "$out/warnings.log" >&2
    echo "check-apidoc: doxygen warnings (above)" >&2
    exit 1
fi
[ "$rc" -eq 0 ] || { echo "check-apidoc: doxygen failed ($rc)" >&2; exit 1; }
python3 - "$out/xml" <<'PY'
import sys, xml.etree.ElementTree as ET
from pathlib import Path

def text(e):
    return "".join(e.itertext()).strip() if e is not None else ""

missing, n = [], 0
for f in sorted(Path(sys.argv[1]).glob("*.xml")):
    if f.name == "index.xml":
        continue
    root = ET.parse(f).getroot()
    for cd in root.iter("compounddef"):
        if cd.get("kind") not in ("file", "struct"):
            continue
        name = text(cd.find("compoundname"))
        for m in list(cd.iter("memberdef")) + list(cd.iter("enumvalue")):
            n += 1
            doc = text(m.find("briefdescription")) + text(m.find("detaileddescription"))
            if not doc:
                loc = m.find("location")
                where = f"{loc.get('file')}:{loc.get('line')}" if loc is not None else name
                missing.append(f"{where}: {m.get('kind', 'enumvalue')} {text(m.find('name'))} is not documented")
if n == 0:
    sys.exit("check-apidoc: no symbols found in doxygen's XML")
for line in missing:
    print(line, file=sys.stderr)
if missing:
    sys.exit(f"check-apidoc: {len(missing)} undocumented public symbols")
print(f"check-apidoc: {n} public symbols documented")
PY
echo "check-apidoc: HTML reference in $out/html/index.html"
