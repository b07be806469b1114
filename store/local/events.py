"""The local event log: one row per event in ``store.sqlite`` (the event as JSON, plus the columns it is queried
by). A rename (a visitor merged into a person) rewrites the events and records each renamed id with the visitor
flag it had in ``renamed_events``; ``restore_identity`` (an unmerge) rewrites exactly those back. Those records go
with an erasure of either name, and with the events themselves when they expire."""

from __future__ import annotations

from typing import Sequence

from store.codec import event_from_json, event_json, not_ahead, renamed_event, restored_event, unnamed_event
from store.local.sqlite import RecordsDb
from store.types import EventQuery, EventRecord, LoggedEvent

MAX_QUERY_LIMIT = 10_000


class LocalEventLog:
    def __init__(self, records: RecordsDb) -> None:
        self._records = records

    def append(self, records: Sequence[EventRecord]) -> list[int]:
        if not records:
            return []
        records = not_ahead(records)
        with self._records.transaction() as db:
            return [int(db.execute("INSERT INTO events (capture_ts, camera, name, body, crop, worker) VALUES "
                                   "(?, ?, ?, ?, ?, ?)",
                                   (r.event.capture_ts, r.event.camera, r.event.name, event_json(r.event), r.crop,
                                    r.worker)).lastrowid) for r in records]

    def query(self, query: EventQuery) -> list[LoggedEvent]:
        if not 1 <= query.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit: expected 1..{MAX_QUERY_LIMIT}, got {query.limit}")
        where, args = [], []
        for column, op, value in (("capture_ts", ">=", query.since), ("capture_ts", "<", query.until),
                                  ("camera", "=", query.camera), ("name", "=", query.identity),
                                  ("id", ">", query.after_id)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = "SELECT id, body, crop, worker FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "ASC" if query.oldest_first else "DESC"
        rows = self._records.read(sql + f" ORDER BY id {order} LIMIT ?", (*args, query.limit))
        return [LoggedEvent(int(i), event_from_json(body), crop, worker) for i, body, crop, worker in rows]

    def rename_identity(self, old: str, new: str) -> int:
        with self._records.transaction() as db:
            rows = db.execute("SELECT id, body FROM events WHERE name = ?", (old,)).fetchall()
            for event_id, body in rows:
                before = event_from_json(body)
                event = renamed_event(before, old, new)
                db.execute("UPDATE events SET name = ?, body = ? WHERE id = ?", (new, event_json(event), event_id))
                db.execute("INSERT OR REPLACE INTO renamed_events VALUES (?, ?, ?, ?)",
                           (event_id, old, new, int(before.visitor)))
        return len(rows)

    def restore_identity(self, old: str, new: str) -> int:
        with self._records.transaction() as db:
            rows = db.execute("SELECT events.id, events.body, renamed_events.visitor FROM renamed_events JOIN events "
                              "ON events.id = renamed_events.event_id WHERE renamed_events.old = ? AND "
                              "renamed_events.new = ? AND events.name = ?", (old, new, new)).fetchall()
            for event_id, body, visitor in rows:
                event = restored_event(event_from_json(body), old, new, bool(visitor))
                db.execute("UPDATE events SET name = ?, body = ? WHERE id = ?", (old, event_json(event), event_id))
            db.execute("DELETE FROM renamed_events WHERE old = ? AND new = ?", (old, new))
        return len(rows)

    def unname_track(self, camera: str, track: int, name: str) -> int:
        changed = 0
        with self._records.transaction() as db:
            rows = db.execute("SELECT id, body FROM events WHERE camera = ? AND name = ?", (camera, name)).fetchall()
            for event_id, body in rows:
                event = event_from_json(body)
                if event.track != track:
                    continue
                unnamed = unnamed_event(event)
                if unnamed is None:
                    db.execute("DELETE FROM events WHERE id = ?", (event_id,))
                else:
                    db.execute("UPDATE events SET name = NULL, body = ? WHERE id = ?", (event_json(unnamed), event_id))
                changed += 1
        return changed

    def delete_identity(self, name: str) -> tuple[int, list[str]]:
        with self._records.transaction() as db:
            rows = db.execute("SELECT crop FROM events WHERE name = ?", (name,)).fetchall()
            db.execute("DELETE FROM events WHERE name = ?", (name,))
            db.execute("DELETE FROM renamed_events WHERE old = ? OR new = ?", (name, name))
        return len(rows), sorted({crop for (crop,) in rows if crop})

    def expire(self, older_than: float) -> int:
        with self._records.transaction() as db:
            removed = db.execute("DELETE FROM events WHERE capture_ts < ?", (older_than,)).rowcount
            if removed:
                db.execute("DELETE FROM renamed_events WHERE event_id NOT IN (SELECT id FROM events)")
            return removed

    def close(self) -> None:
        """The record database is closed by the store that owns it."""
