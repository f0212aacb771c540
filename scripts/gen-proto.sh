#!/usr/bin/env bash
# Compile plugin/pylog/proto/*.proto with the protobuf compiler shipped in grpcio-tools (whose
# include directory has google/protobuf/timestamp.proto, which loki_push.proto imports).
set -euo pipefail
cd "$(dirname "$0")/../plugin/pylog/proto"
inc=$(python3 -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
python3 -m grpc_tools.protoc -I. -I"$inc" --python_out=. --pyi_out=. entry.proto loki_push.proto
