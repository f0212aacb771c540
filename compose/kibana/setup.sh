#!/bin/sh
# One-shot setup of the pylog demo stack (the kibana-setup service, curlimages/curl): wait until
# Kibana is available, then import the saved objects kept beside this script, in this order:
# the data view (pylog-*), then the Lens panels, saved search and dashboard that use it.
# Re-running it is harmless: overwrite=true replaces the objects with the same ids.
set -eu

KIBANA_URL="${KIBANA_URL:-http://kibana:5601}"
DIR="$(dirname "$0")"
FILES="data-view.ndjson dashboard.ndjson"

tries=0
# Ready for an import when its saved-objects service is (another plugin may stay "degraded").
until curl -fsS "$KIBANA_URL/api/status" 2>/dev/null \
    | grep -Eq '"savedObjects":\{[^}]*"level":"available"'; do
  tries=$((tries + 1))
  if [ "$tries" -gt 120 ]; then
    echo "kibana-setup: Kibana at $KIBANA_URL was not available after 10 minutes" >&2
    exit 1
  fi
  sleep 5
done

for f in $FILES; do
  answer=$(curl -sS -X POST "$KIBANA_URL/api/saved_objects/_import?overwrite=true" \
    -H 'kbn-xsrf: true' --form "file=@$DIR/$f")
  case "$answer" in
    *'"success":true'*) echo "kibana-setup: imported $f: $answer" ;;
    *) echo "kibana-setup: importing $f failed: $answer" >&2; exit 1 ;;
  esac
done
echo "kibana-setup: done; the dashboard is at /app/dashboards#/view/pylog-namespaces"
