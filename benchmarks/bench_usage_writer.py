"""Measure UsageWriter throughput into PostgreSQL (target: ≥ 5,000 records/s sustained).

    python benchmarks/bench_usage_writer.py [--url postgresql://postgres@127.0.0.1:5432/test]
        [--records 100000] [--rate 0]

Creates a scratch database next to the one in --url, records --records usage rows as fast as a
gateway would hand them over (or at --rate records/s), waits until every row is in the table, and
prints records/s and the CPU time this process spent per record (recording and writing share the
gateway's event loop, so that is what recording costs a request). The scratch database is dropped
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from concord.records.db import open_database
from concord.records.usage import UsageRecord, UsageWriter


async def bench(url: str, records: int, rate: float, batch_size: int) -> tuple[float, float]:
    base, _, _ = url.rpartition("/")
    name = f"concord_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = await open_database(f"{base}/{name}", base_dir=Path.cwd())
        with tempfile.TemporaryDirectory() as journal:
            writer = UsageWriter(db, journal, batch_size=batch_size)
            await writer.start()
            started, cpu = time.perf_counter(), time.process_time()
            for i in range(records):
                writer.record(
                    UsageRecord(
                        request_id=f"req-{i}",
                        workspace=f"ws-{i % 20}",
                        status=200,
                        key_id=f"key_{i % 200}",
                        key_name=f"key-{i % 200}",
                        user=f"u{i % 1000}",
                        requested_model="gpt-4o",
                        served_model="gpt-4o",
                        provider="openai",
                        route="default",
                        input_tokens=1200,
                        output_tokens=300,
                        cached_tokens=100,
                        cost_usd=0.0045,
                        latency_ms=812.5,
                        ttft_ms=95.0,
                    )
                )
                if rate:
                    await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
                elif i % 1000 == 999:
                    await asyncio.sleep(0)  # let the writer run, as a busy event loop would
            await writer.aclose()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            if writer.journalled:
                print(f"warning: {writer.journalled} records went to the journal", file=sys.stderr)
        await db.close()
        return records / elapsed, cpu / records * 1e6
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="records/s; 0 = as fast as possible"
    )
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    per_second, cpu_us = asyncio.run(bench(args.url, args.records, args.rate, args.batch_size))
    print(
        f"{args.records} records in PostgreSQL: {per_second:,.0f} records/s, "
        f"{cpu_us:.1f} µs CPU per record"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
