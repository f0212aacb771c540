"""parse=json's fast path for a logger's usual lines: objects decoded into a struct type made
for the keys its lines have had (its *shape*), not into dicts.

A JSON logger writes the same few keys on every line. Once a batch has been parsed the general
way (:mod:`pylog.jsonlines`), its keys become a msgspec struct type whose every field may be
absent; later batches are decoded straight into it (half the cost of a dict, and msgpack-encoded
by the fluentd sink without a dict either). A line with a key the shape lacks, a line that is
not an object, a value taken out that is not text, or a batch that may be too deep, sends the
batch down the general path, which then learns the new keys. What the two paths produce is the
same: the same message, level and time, and fields that encode to the same map (its keys in the
order the shape learned them, not always the line's).
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Sequence
from itertools import chain, repeat
from operator import attrgetter
from typing import Any

import msgspec
import orjson

MAX_FIELDS = 64  # lines with more keys than this in all take the general path
SKIP_AFTER_MISS = 8  # batches: a log with text among its objects is not tried at every batch
UNSET = msgspec.UNSET


Scalar = str | int | float | bool | None | msgspec.UnsetType


class Shape:
    """A struct type with one field per key (fields ``f0``, ``f1``... named as the keys when
    encoded), and its JSON decoder, which refuses a key it does not have. A key is optional
    and a plain value (text, number, true, false, null), except that a ``deep`` one may be an
    object or an array, and a ``required`` one is text on every line (message, level or time
    keys: taken out with no check a line)."""

    def __init__(self, keys: tuple[str, ...], deep: frozenset[str] = frozenset(),
                 required: frozenset[str] = frozenset()) -> None:
        self.keys, self.deep, self.required = keys, deep, required
        self.field = {k: f"f{i}" for i, k in enumerate(keys)}
        fields: list[Any] = [(self.field[k], str) for k in keys if k in required]  # first
        fields += [(self.field[k], Any if k in deep else Scalar, UNSET)
                   for k in keys if k not in required]
        kind = msgspec.defstruct("Fields", fields,
                                 rename={f: k for k, f in self.field.items()},
                                 forbid_unknown_fields=True, gc=False)  # JSON makes no cycles
        self.decode = msgspec.json.Decoder(kind).decode


class Shapes:
    """The shape a parser has learned from its container's lines, and when to try it."""

    def __init__(self) -> None:
        self.shape: Shape | None = None
        self.wide = False  # the lines have had more than MAX_FIELDS keys: never learned
        self.skip = 0
        self.loose: set[str] = set()  # taken keys a line has lacked, or had as not text

    def ready(self) -> bool:
        """Whether to try the shape on this batch (one of the batches to skip counts down)."""
        if self.shape is None:
            return False
        if self.skip:
            self.skip -= 1
            return False
        return True

    def decode(self, texts: list[bytes]) -> list[Any] | None:
        """Every line as the shape's struct, or None (the general path's turn)."""
        assert self.shape is not None
        try:
            return list(map(self.shape.decode, texts))
        except msgspec.DecodeError:  # a new key, not an object, not JSON: learned after
            return None

    def learn(self, objs: Sequence[dict[str, Any] | None], taken: Sequence[tuple[str, ...]] = (),
              ) -> None:
        """The general path's objects (before anything is taken out of them): their keys join
        the shape's, a key with an object or array among its values becomes deep, and of each
        of ``taken`` (message, level, time keys) the first the shape has is required while
        every line has it as text. A batch with text among its objects makes the next few skip
        the shape."""
        if None in objs:
            self.skip = SKIP_AFTER_MISS
        if self.wide:
            return
        present = [o for o in objs if o is not None]
        old = self.shape.keys if self.shape is not None else ()
        keys = tuple(dict.fromkeys(chain(old, *present)))
        if len(keys) > MAX_FIELDS:
            self.shape, self.wide = None, True
            return
        # CPython tracks a dict only if it holds a container: the others are flat
        deep = frozenset(self.shape.deep if self.shape is not None else ()).union(
            k for o in filter(gc.is_tracked, present) for k, v in o.items()
            if isinstance(v, (dict, list)))
        found = [next((k for k in ks if k in keys), None) for ks in taken]
        # of each taken list, the first key the shape has (not one two lists share: the
        # first to take it leaves none for the other)
        firsts = {k for k in found if k is not None and found.count(k) == 1}
        for k in firsts - self.loose:
            if not all(isinstance(o.get(k), str) for o in present):
                self.loose.add(k)
        required = frozenset(firsts - self.loose)
        if self.shape is None or (keys, deep, required) != (
                self.shape.keys, self.shape.deep, self.shape.required):
            self.shape = Shape(keys, deep, required)

    @property
    def flat(self) -> bool:
        """Whether every line the shape decodes is one level deep."""
        return self.shape is not None and not self.shape.deep

    def take(self, objs: list[Any], keys: tuple[str, ...],
             ) -> tuple[list[str | None], bool] | None:
        """Each struct's value of the first of ``keys`` it has, taken out of it, as text (None:
        it has none, or null), and whether every one is text; None if a value is an object,
        an array or an integer msgpack cannot hold, which the general path says as orjson
        would (the next batches then skip the shape)."""
        assert self.shape is not None
        known = [k for k in keys if k in self.shape.field]
        if not known:
            return [None] * len(objs), False
        names = [self.shape.field[k] for k in known]
        got: list[Any] = list(map(attrgetter(names[0]), objs))
        if known[0] in self.shape.required or all(map(isinstance, got, repeat(str))):
            # the first key everywhere, as text
            deque(map(setattr, objs, repeat(names[0]), repeat(UNSET)), 0)
            return got, True
        for i, (obj, value) in enumerate(zip(objs, got)):
            name = names[0]
            if value is UNSET:
                for name in names[1:]:
                    value = getattr(obj, name)
                    if value is not UNSET:
                        break
                else:
                    got[i] = None
                    continue
            text = _text(value)
            if text is _NOT_SAID:
                self.skip = SKIP_AFTER_MISS
                return None
            setattr(obj, name, UNSET)
            got[i] = text
        return got, None not in got


_NOT_SAID = object()


def said_as_text(value: Any) -> str | None:
    """A taken value as text: text and null as they are, anything else as its JSON (orjson's)."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _text(value: Any) -> Any:
    """A taken value as the general path says it (:func:`said_as_text`); _NOT_SAID for what
    only the general path can say the same way (an object, an array, an integer past 64
    bits)."""
    if value is None or isinstance(value, (str, bool, float)) or isinstance(value, int) and \
            -2**63 <= value < 2**64:
        return said_as_text(value)
    return _NOT_SAID
