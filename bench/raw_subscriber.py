"""Raw ingest reference: a plain paho subscriber that writes each events message straight to the database.

Per message it parses the JSON (``json.loads``, no validation), runs one ``executemany`` of
``INSERT … ON CONFLICT (kiosk_id, epoch, seq) DO NOTHING`` into the hub's ``events`` table (on
PostgreSQL the key also holds kind and device_time), commits, and publishes the same application ack
the bridge sends, so publishers behave identically.
QoS 1 with paho's automatic ack (sent when the callback returns). SQLite gets the hub's pragmas
(WAL, ``synchronous=FULL``). This is the floor of what any bridge must pay, not a design to copy: it
does the database work on the network thread and trusts its input.

    python -m bench.raw_subscriber --host 127.0.0.1 --port 1883 (--sqlite PATH | --pg CONNINFO)
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from datetime import UTC, datetime

import click
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

EVENTS_FILTER = "antoan/v1/kiosk/+/events"
#: Same flow control as the bridge's default ``receive_maximum``.
RECEIVE_MAXIMUM = 200

_SQLITE_INSERT = (
    "INSERT INTO events (kiosk_id, epoch, seq, uuid, kind, device_time, received_at, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kiosk_id, epoch, seq) DO NOTHING"
)
# The key of PostgreSQL's partitioned events table (hub/db/partitions.py) holds the partition keys too.
_PG_INSERT = (
    "INSERT INTO events (kiosk_id, epoch, seq, uuid, kind, device_time, received_at, body) "
    "VALUES (%s, %s, %s, %s, %s, %s::timestamptz, %s, %s::json) "
    "ON CONFLICT (kiosk_id, epoch, seq, kind, device_time) DO NOTHING"
)


def _ranges(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


class _SqliteWriter:
    def __init__(self, path: str):
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000"):
            self.conn.execute(f"PRAGMA {pragma}")

    def write(self, rows: list[tuple]) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        self.conn.execute("BEGIN")
        try:
            self.conn.executemany(_SQLITE_INSERT, [(*r, now, b) for *r, b in rows])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


class _PgWriter:
    def __init__(self, conninfo: str):
        import psycopg

        self.conn = psycopg.connect(conninfo, connect_timeout=10)

    def write(self, rows: list[tuple]) -> None:
        now = datetime.now(UTC)
        with self.conn.cursor() as cur:
            cur.executemany(_PG_INSERT, [(*r, now, b) for *r, b in rows])
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, required=True)
@click.option("--sqlite", "sqlite_path", type=click.Path(dir_okay=False), help="SQLite hub database file.")
@click.option("--pg", "pg_conninfo", help="libpq connection URL of a PostgreSQL hub database.")
def main(host: str, port: int, sqlite_path: str | None, pg_conninfo: str | None) -> None:
    """Subscribe to every kiosk's events and store them with no validation (benchmark reference)."""
    if (sqlite_path is None) == (pg_conninfo is None):
        raise click.UsageError("give exactly one of --sqlite and --pg")
    writer = _SqliteWriter(sqlite_path) if sqlite_path else _PgWriter(pg_conninfo)
    stats = {"messages": 0, "events": 0}

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"broker refused: {reason_code}", file=sys.stderr, flush=True)
            return
        client.subscribe(EVENTS_FILTER, qos=1)

    def on_message(client, userdata, message):
        kiosk_id = message.topic.split("/")[3]
        batch = json.loads(message.payload)
        epoch = batch["epoch"]
        rows = [
            (kiosk_id, epoch, e["seq"], e["uuid"], e["kind"], e["device_time"], json.dumps(e["body"]))
            for e in batch["events"]
        ]
        writer.write(rows)
        ack = {"v": 1, "epoch": epoch, "ranges": _ranges([r[2] for r in rows])}
        client.publish(f"antoan/v1/kiosk/{kiosk_id}/ack", json.dumps(ack), qos=1)
        stats["messages"] += 1
        stats["events"] += len(rows)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    client.on_message = on_message
    client.max_inflight_messages_set(1000)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect(host, port, keepalive=30, clean_start=True, properties=props)
    try:
        client.loop_forever()
    except KeyboardInterrupt:
        pass
    finally:
        writer.close()
        print(f"raw subscriber stored {stats['events']} events from {stats['messages']} messages", flush=True)


if __name__ == "__main__":
    main()
