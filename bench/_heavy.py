"""A heavy-tailed benchmark world: a large prefix table and ingress IPv4 flows whose remote
addresses follow a Zipf-like law (a few addresses in most records).

The synthetic world (``flowatlas synth``) has ~500 prefixes and remote addresses spread fairly
evenly; real ingress traffic is neither. This world has about 900 k prefixes (IPv4 lengths
drawn from the shape of a global routing table, mostly /24s, some nested; plus IPv6 routes the
flows never touch, so the table is as big as a real one) and draws each record's remote
address from a population by a Zipf law, so a handful of addresses carry most records and
most addresses appear once or twice. Every record is ingress: the remote address is the
source, the destination is one of our addresses, and the exporter belongs to the region
whose prefixes hold it. A few percent of remote addresses lie outside every prefix (Unknown).

Deterministic from the seed: the same arguments give the same archive and table bytes.
Written as an archive (``flowatlas.toml``, ``prefixes.csv``, ``day=YYYY-MM-DD/`` Parquet),
like ``flowatlas synth``, so every engine reads the same files.

    python bench/_heavy.py --records 5000000 -o bench/_data/heavy-5000000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

#: network types a prefix may carry (the seed's, less Migration: a link type, not a prefix's)
TYPES = ("CDN", "Hosting", "Hyperscaler", "ISP Regional", "ISP Tier1", "Neocloud")
#: IPv4 prefix lengths and their shares, roughly a global routing table's (mostly /24)
V4_LENGTHS = (
    (16, 0.025),
    (17, 0.01),
    (18, 0.02),
    (19, 0.035),
    (20, 0.05),
    (21, 0.05),
    (22, 0.11),
    (23, 0.09),
    (24, 0.61),
)
#: our regions: (name, IPv4 prefix as (first address, length), exporters)
REGIONS = (
    ("US-West", (0xC6120000, 17), ("10.10.0.1", "10.10.0.2")),
    ("US-East", (0xC6128000, 18), ("10.20.0.1", "10.20.0.2")),
    ("CA-East", (0xC612C000, 18), ("10.30.0.1",)),
)
V4_MAPPED = 0xFFFF_0000_0000
START_US = 1_751_328_000_000_000  # 2025-07-01 00:00 UTC
US_PER_DAY = 86_400_000_000
ZIPF_A = 1.15


def _v4_text(addr: np.ndarray, length: np.ndarray) -> list[str]:
    a = addr.astype(np.uint64)
    parts = [(a >> np.uint64(s)) & np.uint64(0xFF) for s in (24, 16, 8, 0)]
    rows = zip(*(p.tolist() for p in parts), length.tolist(), strict=True)
    return [f"{w}.{x}.{y}.{z}/{n}" for w, x, y, z, n in rows]


def make_prefixes(rng: np.random.Generator, n_v4: int, n_v6: int) -> tuple[pa.Table, np.ndarray]:
    """The prefix CSV's rows, and the IPv4 ones as (first address, length) rows."""
    lengths = rng.choice(
        [n for n, _ in V4_LENGTHS], size=n_v4, p=[p for _, p in V4_LENGTHS]
    ).astype(np.int64)
    # public space, clear of 0/8, 10/8, 127/8, our 198.18.0.0/16 and multicast (224/3)
    first = rng.integers(1 << 24, 223 << 24, size=n_v4, dtype=np.int64)
    first &= ~((np.int64(1) << (32 - lengths)) - 1)
    bad = ((first >> 24) == 10) | ((first >> 24) == 127) | ((first >> 16) == 0xC612)
    first, lengths = first[~bad], lengths[~bad]
    pairs = np.unique(np.stack([first, lengths], axis=1), axis=0)
    first, lengths = pairs[:, 0], pairs[:, 1]
    v4 = _v4_text(first, lengths)
    # IPv6 routes (/32 to /48 in 2000::/4): the table's size, never a flow's remote address
    v6_len = rng.choice([32, 36, 40, 44, 48], size=n_v6, p=[0.2, 0.1, 0.15, 0.15, 0.4])
    top = rng.integers(0x2000 << 16, 0x3000 << 16, size=n_v6, dtype=np.int64)
    low = rng.integers(0, 1 << 16, size=n_v6, dtype=np.int64)
    v6 = sorted(
        {
            f"{t >> 16:x}:{t & 0xFFFF:x}:{lw >> (48 - n) << (48 - n):x}::/{n}"
            for t, lw, n in zip(top.tolist(), low.tolist(), v6_len.tolist(), strict=True)
        }
    )
    n = len(v4) + len(v6)
    asn = rng.integers(64_512, 4_200_000_000, size=n, dtype=np.int64)
    table = pa.table(
        {
            "prefix": pa.array(v4 + v6, pa.string()),
            "network_type": pa.array(
                np.asarray(TYPES, dtype=object)[rng.integers(0, len(TYPES), n)], pa.string()
            ),
            "asn": pa.array(asn, pa.uint32()),
            "org": pa.array([f"AS{a}" for a in asn.tolist()], pa.string()),
        }
    )
    return table, np.stack([first, lengths], axis=1)


def _config(prefixes_csv: str) -> str:
    lines = [
        "# flowatlas configuration of a heavy-tailed benchmark archive (bench/_heavy.py)",
        "[cube]",
        'bucket = "1h"',
        'rollups = ["day", "month", "quarter", "all"]',
        "ipv6_prefix = 64",
        "sketch_precision = 12",
        'sketch_period = "day"',
    ]
    for name, (first, length), exporters in REGIONS:
        a = [(first >> s) & 0xFF for s in (24, 16, 8, 0)]
        lines += [
            "",
            "[[regions]]",
            f'name = "{name}"',
            f'prefixes = ["{a[0]}.{a[1]}.{a[2]}.{a[3]}/{length}"]',
            "exporters = [" + ", ".join(f'"{e}"' for e in exporters) + "]",
        ]
    lines += [
        "",
        "[classify]",
        "sources = [",
        f'    {{ path = "{prefixes_csv}", format = "prefix-csv", name = "heavy world" }},',
        "]",
        "",
    ]
    return "\n".join(lines)


def _mapped(v4: np.ndarray) -> np.ndarray:
    """16-byte IPv4-mapped addresses (big-endian) of uint32 addresses, as an (n, 16) view."""
    out = np.zeros((v4.size, 16), dtype=np.uint8)
    out[:, 10:12] = 0xFF
    out[:, 12:] = v4.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out


def _fixed(b: np.ndarray) -> pa.Array:
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(b), [None, pa.py_buffer(np.ascontiguousarray(b).tobytes())]
    )


def generate(out: Path, records: int, *, days: int = 30, seed: int = 1,
             prefixes: int = 900_000) -> Path:  # fmt: skip
    """Write the archive; returns ``out``."""
    from flowatlas.io.archive import ArchiveWriter
    from flowatlas.schema import FLOW_SCHEMA_V1

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=False)
    n_v6 = prefixes // 9
    table, v4 = make_prefixes(rng, prefixes - n_v6, n_v6)
    pacsv.write_csv(table, out / "prefixes.csv")
    (out / "flowatlas.toml").write_text(_config("prefixes.csv"))
    # the population of remote addresses: one per prefix drawn (weighted to small prefixes),
    # a random host in it; 3% anywhere in public space (mostly no prefix: Unknown)
    population = min(max(records // 8, 10_000), 4_000_000)
    pick = rng.integers(0, len(v4), size=population)
    span = np.int64(1) << (32 - v4[pick, 1])
    remote = v4[pick, 0] + (rng.random(population) * span).astype(np.int64)
    stray = rng.random(population) < 0.03
    remote[stray] = rng.integers(1 << 24, 223 << 24, size=int(stray.sum()))
    remote = rng.permutation(remote).astype(np.uint32)
    exporters = [(e, first, length) for _, (first, length), ex in REGIONS for e in ex]
    import ipaddress

    exp_bytes = np.array(
        [list(ipaddress.IPv6Address(f"::ffff:{e}").packed) for e, _, _ in exporters], np.uint8
    )
    writer = ArchiveWriter(out, source=f"bench/_heavy.py seed={seed}")
    per_day = np.full(days, records // days)
    per_day[: records % days] += 1
    for day, n in enumerate(per_day.tolist()):  # one write, so one row group, per day
        rank = (rng.zipf(ZIPF_A, size=n) - 1) % population
        src = remote[rank]
        which = rng.integers(0, len(exporters), size=n)
        first = np.array([f for _, f, _ in exporters], np.int64)[which]
        size = np.int64(1) << (32 - np.array([ln for _, _, ln in exporters], np.int64)[which])
        dst = (first + rng.integers(0, 1 << 30, size=n) % size).astype(np.uint32)
        start = START_US + day * US_PER_DAY + np.sort(rng.integers(0, US_PER_DAY, size=n))
        packets = rng.zipf(1.6, size=n).clip(1, 1_000_000).astype(np.uint64)
        nbytes = packets * rng.integers(40, 1500, size=n).astype(np.uint64)
        columns = {
            "time_start": pa.array(start, pa.int64()).cast(FLOW_SCHEMA_V1.field(0).type),
            "time_end": pa.array(start + rng.integers(0, 60_000_000, size=n), pa.int64()).cast(
                FLOW_SCHEMA_V1.field(1).type
            ),
            "exporter": _fixed(exp_bytes[which]),
            "in_if": pa.array(rng.integers(1, 9, size=n), pa.uint32()),
            "out_if": pa.array(rng.integers(9, 17, size=n), pa.uint32()),
            "src_addr": _fixed(_mapped(src)),
            "dst_addr": _fixed(_mapped(dst)),
            "src_port": pa.array(rng.integers(1024, 65536, size=n), pa.uint16()),
            "dst_port": pa.array(rng.choice([443, 80, 53, 22], size=n), pa.uint16()),
            "proto": pa.array(rng.choice([6, 17], size=n, p=[0.8, 0.2]), pa.uint8()),
            "bytes": pa.array(nbytes, pa.uint64()),
            "packets": pa.array(packets, pa.uint64()),
            "sampling_rate": pa.array(np.ones(n, np.uint32), pa.uint32()),
            "src_as": pa.array(np.zeros(n, np.uint32), pa.uint32()),
            "dst_as": pa.array(np.zeros(n, np.uint32), pa.uint32()),
        }
        writer.write(pa.table(columns, schema=FLOW_SCHEMA_V1))
    writer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--prefixes", type=int, default=900_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args(argv)
    generate(args.out, args.records, days=args.days, seed=args.seed, prefixes=args.prefixes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
