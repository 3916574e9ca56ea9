"""The bench results as tables a person reads."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from parley.bench import CLIENTS, READ_PAUSE_S, WARM_EXPORTS, BenchResult


def print_report(result: BenchResult, console: Console) -> None:
    m = result.machine
    libraries = ", ".join(f"{name} {version}" for name, version in m["libraries"].items() if version)
    console.print(
        f"[bold]parley bench[/bold] scale {result.scale}, store {result.store}, {result.events:,} events; "
        f"{m['cpus']} cores ({m['cpu']}, cache {m['cache']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"{libraries}"
    )
    ingest = Table("path", "events", "seconds", "events/s", "request p50 ms", "request max ms", title="Ingest")
    for name, row in (
        ("bulk (parley ingest)", result.bulk_ingest),
        ("HTTP, 4 clients x 1,000", result.http_ingest),
        ("HTTP, the same, while read", result.while_ingesting),
    ):
        ingest.add_row(
            name,
            f"{row['events']:,}",
            f"{row['seconds']}",
            f"{row['events_per_s']:,}",
            f"{row.get('request_p50_ms', '-')}",
            f"{row.get('request_max_ms', '-')}",
        )
    console.print(ingest)
    console.print(
        f"The bulk load's rows put in their order as it ended: {result.bulk_ingest['reorder_s']} s. "
        "Checkpoints of the store while each ingested (every write waits for one): "
        + "; ".join(
            f"{name} {row['checkpoints']}, the longest {row['checkpoint_max_s']} s, "
            f"{row['checkpoint_total_s']} s in all"
            for name, row in (
                ("bulk (its closing one included)", result.bulk_ingest),
                ("HTTP alone", result.http_ingest),
                ("while read", result.while_ingesting),
            )
        )
    )
    polled = Table(
        "endpoint",
        "range",
        "reads",
        "p50 ms",
        "p95 ms",
        "max ms",
        title=f"Reads while 4 clients ingest (a reader an endpoint, {READ_PAUSE_S} s between its requests)",
    )
    for row in result.while_ingesting["reads"]:
        polled.add_row(
            row["endpoint"], row["range"], f"{row['reads']}", f"{row['p50_ms']}", f"{row['p95_ms']}", f"{row['max_ms']}"
        )
    console.print(polled)
    reads = Table(
        "endpoint",
        "range",
        "p50 ms",
        "p95 ms",
        "cold ms",
        "bytes",
        title=f"Reads ({CLIENTS} clients, warm, {result.warm_requests} requests each)",
    )
    for row in result.reads:
        reads.add_row(
            row["endpoint"],
            row["range"],
            f"{row['p50_ms']}",
            f"{row['p95_ms']}",
            f"{row.get('cold_ms')}",
            f"{row['bytes']:,}",
        )
    console.print(reads)
    e = result.export
    console.print(
        f"Export: {e['rows']:,} rows in {e['seconds']} s = {e['rows_per_s']:,} rows/s; server RSS "
        f"{e['idle_rss_mb']} MB idle, {e['peak_rss_mb']} MB peak (+{e['rss_growth_mb']} MB); "
        f"then the median of {WARM_EXPORTS} more: {e['warm_median_s']} s = "
        f"{e['warm_rows_per_s']:,} rows/s, peak RSS {e['warm_peak_rss_mb']} MB"
    )
    console.print(
        f"Store on disk: {result.store_bytes / 2**20:,.1f} MiB; start-up to first answer: {result.startup_s} s"
    )
