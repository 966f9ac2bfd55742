#!/usr/bin/env bash
# Checks the Grafana dashboard (touchstone-dashboard.json) against Grafana's own published
# dashboard schema: the TypeScript types of the `@grafana/schema` npm package (pinned in
# schema/package.json), with the TypeScript compiler in strict mode. The dashboard is written
# out as a TypeScript constant of type `Dashboard`, so every field is checked against the
# schema: unknown keys, wrong types and values outside an enumeration fail. The keys Grafana
# adds only to a dashboard exported for sharing (`__inputs`, `__requires`, `__elements`) are
# not part of the dashboard model and are left out of the check.
# Installs into target/grafana-schema (npm ci from the lock file) on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$root/target/grafana-schema"
mkdir -p "$work"
cp "$here/schema/package.json" "$here/schema/package-lock.json" "$work/"
if ! (cd "$work" && npm ls --silent >/dev/null 2>&1); then
    (cd "$work" && npm ci --silent --no-audit --no-fund)
fi
python3 - "$here/touchstone-dashboard.json" "$work/dashboard.ts" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1], encoding="utf-8"))
for export_only in ("__inputs", "__requires", "__elements"):
    dashboard.pop(export_only, None)
with open(sys.argv[2], "w", encoding="utf-8") as out:
    out.write("import type { Dashboard } from '@grafana/schema';\n")
    out.write("export const dashboard: Dashboard = ")
    out.write(json.dumps(dashboard, indent=2, ensure_ascii=False))
    out.write(";\n")
PY
cd "$work"
npx --no-install tsc --noEmit --strict --moduleResolution bundler --module esnext \
    --target es2020 dashboard.ts
echo "touchstone-dashboard.json conforms to @grafana/schema $(node -p "require('./node_modules/@grafana/schema/package.json').version")"
