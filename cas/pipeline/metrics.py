"""Metrics files: what a record keeps of them, read so that they can never stop one.

A run's metrics are the files its pipeline declares (`metrics:` of a stage or the top
level; `-M` for a command-line stage), in JSON, YAML or TOML, at most
MAX_METRICS_FILE bytes each. collect_metrics reads the ones present into plain values
(msgpack-able: str keys, no dates, ints within 64 bits); a missing, oversized or
malformed file is skipped, because the record of a run must be written even when
the run broke its metrics. Flat `key: value` YAML is read without ruamel
(cas/core/yamlsubset.py), which is most of what a run costs when its metrics are YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

METRIC_FORMATS = (".json", ".yaml", ".yml", ".toml")
MAX_METRICS_FILE = 16 * 1024 * 1024  # bytes: a metrics file is a summary, not data


def collect_metrics(root: Path, files: Sequence[str]) -> dict[str, Any]:
    """{file: content} of the metrics files present (JSON, YAML or TOML); others skipped.

    A metrics file that does not parse is skipped, not fatal: the record of a run
    must be written even when its metrics are broken.
    """
    out: dict[str, Any] = {}
    for f in files:
        path = Path(root) / f
        suffix = path.suffix.lower()
        if suffix not in METRIC_FORMATS:
            continue
        try:
            if not path.is_file() or path.stat().st_size > MAX_METRICS_FILE:
                continue
            text = path.read_text("utf-8")
            if suffix == ".json":
                import json
                data = json.loads(text)
            elif suffix == ".toml":
                import tomllib
                data = tomllib.loads(text)
            else:
                from cas.core.yamlsubset import parse_flat_yaml
                data = parse_flat_yaml(text)  # `key: value` lines: no ruamel import
                if data is None:
                    from ruamel.yaml import YAML
                    from ruamel.yaml.error import YAMLError
                    try:
                        data = YAML(typ="safe", pure=True).load(text)
                    except YAMLError:
                        continue
        # Unreadable or malformed (a half-written file, a script's own format): the
        # experiment is still recorded, without that file's metrics.
        except (OSError, UnicodeDecodeError, ValueError):  # JSON and TOML errors are ValueErrors
            continue
        out[f] = _plainify(data)
    return out


def _plainify(v: Any) -> Any:
    import datetime
    import math

    if isinstance(v, dict):
        return {str(k): _plainify(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plainify(x) for x in v]
    if isinstance(v, (datetime.date, datetime.datetime, datetime.time)):
        return v.isoformat()
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v <= 2**64 - 1:
        return float(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v if not (isinstance(v, float) and math.isnan(v)) else v
    return str(v)
