"""prepare: stream every line of the input CSV(s) in Python and keep every Nth row."""

from __future__ import annotations

import os
import sys

import stageparams

source, target = sys.argv[1], sys.argv[2]
every = int(stageparams.load("prepare")["sample_every"])
if os.path.isdir(source):
    files = [os.path.join(source, name) for name in sorted(os.listdir(source))]
else:
    files = [source]
os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
seen = kept = 0
with open(target, "wb") as out:
    for number, path in enumerate(files):
        with open(path, "rb") as f:
            header = f.readline()
            if number == 0:
                out.write(header)
            for index, line in enumerate(f):
                seen += 1
                if index % every == 0:
                    out.write(line)
                    kept += 1
print(f"prepare: read {seen} rows from {len(files)} file(s), kept {kept}")
