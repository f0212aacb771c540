"""The LogEntry wire message, compiled from ``proto/entry.proto`` (Docker's own schema).

Regenerate ``proto/entry_pb2.py`` with ``scripts/gen-proto.sh`` after editing the .proto.
"""

from google.protobuf.message import DecodeError

from .proto.entry_pb2 import LogAttr, LogBatch, LogColumns, LogEntry, PartialLogEntryMetadata

__all__ = ["DecodeError", "LogAttr", "LogBatch", "LogColumns", "LogEntry", "PartialLogEntryMetadata"]
