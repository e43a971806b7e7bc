"""Benchmarks of the AnToan Check-in sync path: hub ingest throughput and a kiosk's backlog drain.

Run ``python -m bench [ingest|backlog|all]`` (or ``./run bench``). Each benchmark starts its own
mosquitto and fresh databases on loopback, writes ``bench/results/<name>.json`` and prints a table.
"""
