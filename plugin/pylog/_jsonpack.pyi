# pylog._jsonpack, compiled from _jsonpack.c (see pylog.jsonpack).

def pairs(texts: list[bytes], message_keys: tuple[str, ...], level_keys: tuple[str, ...],
          time_keys: tuple[str, ...], names: tuple[bytes, ...], max_bytes: int,
          ) -> tuple[bytes, bytes, bytes] | None: ...
def entries(texts: list[bytes], times: list[int], sources: list[str], extras: bytes,
            ends: bytes, counts: bytes, middles: tuple[bytes, ...], sub_second: bool,
            ) -> tuple[bytes, bytes] | None: ...
