#!/usr/bin/env python
"""Per-speaker recording statistics of one or more data specs (median over each speaker's clips).

Example: python scripts/audit_speakers.py ../shared/data/fsdd/train ../shared/data/fsdd/dev
Columns: clips, median seconds, silence before / after the speech (10-ms frames within 20 dB of the
loudest), the first frame's level against the loudest, peak level, distinct sample values (a few
dozen means 8-bit audio), DC offset as a share of the peak.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import entry_point
from pipeline.config import DataSpec
from pipeline.data.audit import speaker_stats
from pipeline.io import write_json

COLUMNS = (("clips", "clips", "{:.0f}"), ("seconds", "s", "{:.2f}"), ("lead_ms", "lead ms", "{:.0f}"),
           ("trail_ms", "trail ms", "{:.0f}"), ("first_frame_db", "first frame dB", "{:.1f}"),
           ("peak_dbfs", "peak dBFS", "{:.1f}"), ("levels", "levels", "{:.0f}"), ("dc_of_peak", "DC/peak", "{:+.3f}"),
           ("sample_rate", "Hz", "{:.0f}"))


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="+", help="folders or manifests (as data.train/data.eval take them)")
    p.add_argument("--speaker-column", default="speaker")
    p.add_argument("--output", type=Path, help="also write the statistics as JSON here")
    a = p.parse_args()
    report = {}
    header = ["data", "speaker", *(title for _, title, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for path in a.data:
        stats, skipped = speaker_stats(DataSpec(path=path, speaker_column=a.speaker_column))
        report[path] = {"speakers": stats, "skipped": skipped}
        for speaker, s in stats.items():
            lines.append("| " + " | ".join([path, speaker, *(fmt.format(s[key]) for key, _, fmt in COLUMNS)]) + " |")
        if skipped:
            lines.append(f"{path}: {len(skipped)} rows skipped, e.g. {skipped[0]}")
    print("\n".join(lines))
    if a.output:
        write_json(a.output, report)


if __name__ == "__main__":
    main()
