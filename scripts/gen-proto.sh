#!/usr/bin/env bash
# Compile plugin/pylog/proto/entry.proto with the protobuf compiler shipped in grpcio-tools.
set -euo pipefail
cd "$(dirname "$0")/../plugin/pylog/proto"
python3 -m grpc_tools.protoc -I. --python_out=. --pyi_out=. entry.proto
