"""The Redis event log: a stream ``PREFIX:events`` plus an index per identity.

Event ids: every append runs one script that takes each event's id from the counter ``PREFIX:events:seq`` (INCR)
and adds the event to the stream under the entry id ``N-0``. So ``LoggedEvent.id`` is the stream entry's first
part, ids are increasing ints that are never handed out twice (even after the stream is trimmed), and a query
after an id is a stream range. Each entry holds the capture time, camera, name, the event as JSON
(`store.codec`), crop and worker.

Stream entries cannot be changed, so an operator's "not this person" on a track adds its events' ids to the set
``PREFIX:events:unnamed`` (read with each query; those events are returned without a name) and takes them out of
the identity's index (a withdrawn ``track_identified`` is skipped); and a rename (a visitor merged into a person) is recorded in the hash
``PREFIX:events:renames`` (visitor -> person) and applied when events are read; the sorted set of the visitor's
event ids (``PREFIX:events:name:<hex name>``) is moved into the person's in the same script, and appends resolve
the rename too, so a query by identity reads one sorted set. A stream entry keeps the name it was written with, so
it is its own record of the rename: ``restore_identity`` (an unmerge) drops the rename record and moves back to the
visitor's sorted set exactly the ids in the person's that were written naming the visitor (``UNRENAME_SCRIPT``, one
pass over the person's ids while it holds the server); they read as they were written from then on. Queries without an identity walk the stream newest
first (XREVRANGE) and filter.

A stream keeps a deleted entry's bytes (XDEL only flags it in its node, and DUMP and RDB snapshots still hold
it), so ``delete_identity`` (an erasure) rewrites the whole stream without the identity's events, in one script
(atomic: O(events) while it runs).

Expiry walks the stream oldest first, a page at a time, and deletes the events captured before the cut; it stops
after a page holding an event captured ``EXPIRE_SKEW_S`` or more after the cut (appends come roughly in capture
order), so an event appended that much later than those around it is deleted up to that much late, never kept.
"""

from __future__ import annotations

import json
from typing import Iterator, Sequence

import redis

from store.codec import event_from_json, event_json, not_ahead, renamed_event, unnamed_event
from store.redis.client import redis_op
from store.redis.keys import StoreKeys
from store.types import EventQuery, EventRecord, LoggedEvent

MAX_QUERY_LIMIT = 10_000
PAGE = 500
EXPIRE_SKEW_S = 3600.0
MAX_RENAME_HOPS = 16
# An append is idempotent for this long: the script keeps each record's event id under the SHA-1 of the record, so an
# append that timed out on the worker (a hung server) but ran on the server once it resumed is not logged a second
# time when the worker retries it; the retry gets the same ids. Retries come within the worker's retry delay
# (store.buffered: at most 10 s apart), far within this.
APPEND_MEMORY_S = 600

RESOLVE_LUA = """
local function resolve(renames, name)
  for _ = 1, 16 do
    local nxt = redis.call('HGET', renames, name)
    if not nxt then return name end
    name = nxt
  end
  return name
end
local function hex(s)
  return (s:gsub('.', function(c) return string.format('%02x', c:byte()) end))
end
"""
APPEND_SCRIPT = RESOLVE_LUA + """
local ids = {}
for i = 4, #ARGV do
  local done = ARGV[2] .. ':' .. redis.sha1hex(ARGV[i])
  local before = redis.call('GET', done)
  if before then
    ids[#ids + 1] = tonumber(before)
  else
  local r = cjson.decode(ARGV[i])
  local n = redis.call('INCR', KEYS[1])
  redis.call('SET', done, n, 'EX', tonumber(ARGV[3]))
  local fields = {'ts', r.ts, 'camera', r.camera, 'body', r.body}
  if r.name then
    table.insert(fields, 'name'); table.insert(fields, r.name)
    redis.call('ZADD', ARGV[1] .. ':' .. hex(resolve(KEYS[3], r.name)), n, n)
  end
  if r.crop then table.insert(fields, 'crop'); table.insert(fields, r.crop) end
  if r.worker then table.insert(fields, 'worker'); table.insert(fields, r.worker) end
  redis.call('XADD', KEYS[2], n .. '-0', unpack(fields))
  ids[#ids + 1] = n
  end
end
return ids
"""
RENAME_SCRIPT = """
local n = redis.call('ZCARD', KEYS[1])
if n > 0 then
  redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', 'MAX')
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return n
"""
# Undo a rename (an unmerge): the rename record KEYS[3][ARGV[1]] must still be ARGV[2] (else -1); it goes, and each
# id in the person's index KEYS[1] whose stream entry (KEYS[4]) was written naming ARGV[1] moves back to KEYS[2].
UNRENAME_SCRIPT = """
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[3], ARGV[1])
local moved = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local found = redis.call('XRANGE', KEYS[4], id .. '-0', id .. '-0')
  if #found == 1 then
    local fields = found[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'name' and fields[i + 1] == ARGV[1] then
        redis.call('ZREM', KEYS[1], id)
        redis.call('ZADD', KEYS[2], id, id)
        moved = moved + 1
      end
    end
  end
end
return moved
"""

# Rewrite the stream KEYS[1] into KEYS[2] without the events of the identity index KEYS[3] (read here, so an
# event appended meanwhile goes too), rename it into place and drop the index. A page at a time bounds memory.
# Withdrawn events (ids in the set KEYS[4]) whose entry still names the identity: ARGV[1] maps entry id -> the
# fields it is rewritten with (the event un-named), ARGV[2] lists those deleted (a withdrawn track_identified);
# neither counts as removed (they were no longer the identity's events).
REWRITE_SCRIPT = """
local doomed = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do doomed[id .. '-0'] = true end
local replaced = cjson.decode(ARGV[1])
local dropped = {}
for _, id in ipairs(cjson.decode(ARGV[2])) do
  dropped[id] = true
  redis.call('SREM', KEYS[4], string.match(id, '^(%d+)'))
end
redis.call('DEL', KEYS[2])
local low, removed = '-', 0
while true do
  local page = redis.call('XRANGE', KEYS[1], low, '+', 'COUNT', 1000)
  for _, entry in ipairs(page) do
    if doomed[entry[1]] then removed = removed + 1
    elseif dropped[entry[1]] then
    elseif replaced[entry[1]] then redis.call('XADD', KEYS[2], entry[1], unpack(replaced[entry[1]]))
    else redis.call('XADD', KEYS[2], entry[1], unpack(entry[2])) end
  end
  if #page < 1000 then break end
  low = '(' .. page[#page][1]
end
redis.call('DEL', KEYS[1], KEYS[3])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[1]) end
return removed
"""


def _record_json(record: EventRecord) -> str:
    data = {"ts": repr(float(record.event.capture_ts)), "camera": record.event.camera,
            "body": event_json(record.event), "name": record.event.name, "crop": record.crop,
            "worker": record.worker}
    return json.dumps({k: v for k, v in data.items() if v is not None})


def _event_id(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _resolve(renames: dict[bytes, bytes], name: str) -> str:
    for _ in range(MAX_RENAME_HOPS):
        nxt = renames.get(name.encode("utf-8"))
        if nxt is None:
            return name
        name = nxt.decode("utf-8")
    return name


def _matches(event: LoggedEvent, query: EventQuery) -> bool:
    ts = event.event.capture_ts
    return ((query.since is None or ts >= query.since) and (query.until is None or ts < query.until)
            and (query.camera is None or event.event.camera == query.camera)
            and (query.identity is None or event.event.name == query.identity))


class RedisEventLog:
    def __init__(self, client: redis.Redis, keys: StoreKeys, where: str) -> None:
        self._r = client
        self._k = keys
        self.where = where
        self._append = client.register_script(APPEND_SCRIPT)
        self._rename = client.register_script(RENAME_SCRIPT)
        self._rewrite = client.register_script(REWRITE_SCRIPT)
        self._unrename = client.register_script(UNRENAME_SCRIPT)

    @redis_op("appending events")
    def append(self, records: Sequence[EventRecord]) -> list[int]:
        if not records:
            return []
        ids = self._append(keys=[self._k.event_seq, self._k.events, self._k.renames],
                           args=[self._k.event_names_base, self._k.event_appended_base, APPEND_MEMORY_S,
                                 *map(_record_json, not_ahead(records))])
        return [int(i) for i in ids]

    def _logged(self, entry_id: bytes, fields: dict[bytes, bytes], renames: dict[bytes, bytes],
                unnamed: frozenset[int] = frozenset()) -> LoggedEvent | None:
        """The logged event, or None for a withdrawn one."""
        event = event_from_json(fields[b"body"].decode("utf-8"))
        if event.name is not None and _event_id(entry_id) in unnamed:
            event = unnamed_event(event)
            if event is None:
                return None
        elif event.name is not None:
            event = renamed_event(event, event.name, _resolve(renames, event.name))
        crop, worker = fields.get(b"crop"), fields.get(b"worker")
        return LoggedEvent(_event_id(entry_id), event, None if crop is None else crop.decode("utf-8"),
                           None if worker is None else worker.decode("utf-8"))

    def _newest_first(self, after_id: int | None) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        low = "-" if after_id is None else f"({after_id}-0"
        high = "+"
        while True:
            entries = self._r.xrevrange(self._k.events, max=high, min=low, count=PAGE)
            yield from entries
            if len(entries) < PAGE:
                return
            high = b"(" + entries[-1][0]

    def _oldest_first(self, after_id: int | None) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        low = "-" if after_id is None else f"({after_id}-0"
        while True:
            entries = self._r.xrange(self._k.events, min=low, max="+", count=PAGE)
            yield from entries
            if len(entries) < PAGE:
                return
            low = b"(" + entries[-1][0]

    def _of_identity(self, identity: str, after_id: int | None,
                     oldest_first: bool = False) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        low = "-inf" if after_id is None else f"({after_id}"
        high = "+inf"
        while True:
            if oldest_first:
                ids = self._r.zrangebyscore(self._k.events_of(identity), low, high, start=0, num=PAGE)
            else:
                ids = self._r.zrevrangebyscore(self._k.events_of(identity), high, low, start=0, num=PAGE)
            pipe = self._r.pipeline(transaction=False)
            for event_id in ids:
                pipe.xrange(self._k.events, min=f"{int(event_id)}-0", max=f"{int(event_id)}-0")
            for found in pipe.execute():
                yield from found  # an event expired since the ids were read is simply not there
            if len(ids) < PAGE:
                return
            if oldest_first:
                low = f"({int(ids[-1])}"
            else:
                high = f"({int(ids[-1])}"

    @redis_op("querying events")
    def query(self, query: EventQuery) -> list[LoggedEvent]:
        if not 1 <= query.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit: expected 1..{MAX_QUERY_LIMIT}, got {query.limit}")
        renames = self._r.hgetall(self._k.renames)
        unnamed = frozenset(int(i) for i in self._r.smembers(self._k.unnamed))
        if query.identity is not None:
            entries = self._of_identity(query.identity, query.after_id, query.oldest_first)
        else:
            entries = self._oldest_first(query.after_id) if query.oldest_first else self._newest_first(query.after_id)
        out: list[LoggedEvent] = []
        for entry_id, fields in entries:
            logged = self._logged(entry_id, fields, renames, unnamed)
            if logged is not None and _matches(logged, query):
                out.append(logged)
                if len(out) == query.limit:
                    break
        return out

    @redis_op("renaming events")
    def rename_identity(self, old: str, new: str) -> int:
        return int(self._rename(keys=[self._k.events_of(old), self._k.events_of(new), self._k.renames],
                                args=[old, new]))

    @redis_op("restoring renamed events")
    def restore_identity(self, old: str, new: str) -> int:
        moved = int(self._unrename(keys=[self._k.events_of(new), self._k.events_of(old), self._k.renames,
                                         self._k.events], args=[old, new]))
        return max(moved, 0)

    @redis_op("un-naming a track's events")
    def unname_track(self, camera: str, track: int, name: str) -> int:
        renames = self._r.hgetall(self._k.renames)
        doomed = []
        for entry_id, fields in self._of_identity(name, None):
            logged = self._logged(entry_id, fields, renames)
            if logged is not None and logged.event.camera == camera and logged.event.track == track and logged.event.name == name:
                doomed.append(logged.id)
        if doomed:
            pipe = self._r.pipeline(transaction=True)
            pipe.sadd(self._k.unnamed, *doomed)
            pipe.zrem(self._k.events_of(name), *doomed)
            pipe.execute()
        return len(doomed)

    @redis_op("deleting an identity's events")
    def delete_identity(self, name: str) -> tuple[int, list[str]]:
        ids = [int(i) for i in self._r.zrange(self._k.events_of(name), 0, -1)]
        pipe = self._r.pipeline(transaction=False)
        for event_id in ids:
            pipe.xrange(self._k.events, min=f"{event_id}-0", max=f"{event_id}-0")
        crops = {fields[b"crop"].decode("utf-8") for found in pipe.execute() for _, fields in found
                 if b"crop" in fields}
        replaced, dropped = self._withdrawn_naming(name)
        removed = 0
        if ids or replaced or dropped:
            removed = int(self._rewrite(keys=[self._k.events, self._k.events_rewrite, self._k.events_of(name),
                                              self._k.unnamed],
                                        args=[json.dumps(replaced), json.dumps(dropped)]))
        self._forget_renames(name)
        return removed, sorted(crops)

    def _withdrawn_naming(self, name: str) -> tuple[dict[str, list[str]], list[str]]:
        """Withdrawn events ("not this person") whose stream entry still names ``name``: entry id -> the fields it
        is rewritten with (the event un-named, as a query returns it), and the entry ids deleted (a withdrawn
        ``track_identified``, which a query skips)."""
        ids = sorted(int(i) for i in self._r.sscan_iter(self._k.unnamed, count=1000))
        replaced: dict[str, list[str]] = {}
        dropped: list[str] = []
        for start in range(0, len(ids), PAGE):
            pipe = self._r.pipeline(transaction=False)
            for event_id in ids[start:start + PAGE]:
                pipe.xrange(self._k.events, min=f"{event_id}-0", max=f"{event_id}-0")
            for entry_id, fields in (entry for found in pipe.execute() for entry in found):
                event = event_from_json(fields[b"body"].decode("utf-8"))
                if event.name != name and fields.get(b"name") != name.encode("utf-8"):
                    continue
                unnamed = unnamed_event(event)
                if unnamed is None:
                    dropped.append(entry_id.decode())
                    continue
                kept = {key.decode(): value.decode("utf-8") for key, value in fields.items() if key != b"name"}
                kept["body"] = event_json(unnamed)
                replaced[entry_id.decode()] = [part for pair in kept.items() for part in pair]
        return replaced, dropped

    def _forget_renames(self, name: str) -> None:
        """The rename records into or from ``name`` (a visitor merged into it): they name it too."""
        encoded = name.encode("utf-8")
        renames = self._r.hgetall(self._k.renames)
        doomed = [old for old, new in renames.items() if new == encoded or old == encoded]
        if doomed:
            self._r.hdel(self._k.renames, *doomed)

    @redis_op("expiring events")
    def expire(self, older_than: float) -> int:
        renames = self._r.hgetall(self._k.renames)
        removed, low = 0, "-"
        while True:
            entries = self._r.xrange(self._k.events, min=low, max="+", count=PAGE)
            doomed = [(entry_id, fields) for entry_id, fields in entries if float(fields[b"ts"]) < older_than]
            if doomed:
                removed += self._delete(doomed, renames)
            stop = any(float(fields[b"ts"]) >= older_than + EXPIRE_SKEW_S for _, fields in entries)
            if stop or len(entries) < PAGE:
                return removed
            low = b"(" + entries[-1][0]

    def _delete(self, entries: list[tuple[bytes, dict[bytes, bytes]]], renames: dict[bytes, bytes]) -> int:
        """Delete events and their identity index entries; how many events this call deleted (another worker
        running retention at once may delete some first)."""
        pipe = self._r.pipeline(transaction=True)
        pipe.xdel(self._k.events, *[entry_id for entry_id, _ in entries])
        for entry_id, fields in entries:
            if b"name" in fields:
                name = _resolve(renames, fields[b"name"].decode("utf-8"))
                pipe.zrem(self._k.events_of(name), _event_id(entry_id))
        return int(pipe.execute()[0])

    def close(self) -> None:
        """The connection is closed by the store that owns it."""
