"""`python -m analysis bundle RESULTS --out NAME.tar.gz`: results others can take.

The bundle holds every record below RESULTS (`records/`, same relative paths), each
record's kept-subset sidecar beside it, the score exports of the static methods that ran
(`scores/`, score.py's format: `method=precomputed method.path=NAME.tar.gz:scores/...`
reads them; their proxy trainings come from the score cache, computed where missing),
and `manifest.json`: the prunebench version and commit, the package versions, the data
sets' fingerprints, the commands, the leaderboard the records give, and the sha256 of
every other member, which every reader checks (`benchmarks.bundles`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import platform
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from analysis.collect import canonical, collect, local_records, short_hash
from analysis.errors import AnalysisError
from analysis.leaderboard import build_tables
from analysis.render import render
from benchmarks.atomic import atomic_write
from benchmarks.bundles import FORMAT, MANIFEST, SUFFIXES
from benchmarks.errors import PrunebenchError
from benchmarks.results import git_state, utc_now

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "hydra-core",
    "faiss-cpu",
    "scikit-posthocs",
    "wandb",
    "timm",
)
# methods whose scores say nothing another run could reuse: no score, or a seeded draw
NO_EXPORT = ("full", "random", "precomputed", "subset")


def build_bundle(source: Path, out: Path, scores: bool = True) -> dict[str, Any]:
    """Write the bundle of `source` to `out` (atomically); return its manifest."""
    if not str(out).endswith(SUFFIXES):
        raise AnalysisError(f"--out {str(out)!r}: a bundle's name ends in .tar.gz")
    records = local_records(source)
    members: dict[str, bytes] = {}
    for record in records:
        path = Path(record["record_path"])
        relative = path.relative_to(source)
        members[f"records/{relative.as_posix()}"] = path.read_bytes()
        entry = (record.get("selection") or {}).get("subset")
        sidecar = path.with_name(entry["file"]) if entry else None
        if sidecar is not None and sidecar.is_file():
            members[f"records/{relative.with_name(sidecar.name).as_posix()}"] = sidecar.read_bytes()
    if scores:
        members.update(score_exports(records))
    found = collect(str(source))
    tables = build_tables(found.runs)
    manifest = {
        "format": FORMAT,
        "created_at": utc_now(),
        "prunebench": _version("prunebench"),
        **git_state(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES if _version(name)},
        "data": _fingerprints(records),
        "commands": sorted({command(r) for r in records}),
        "records": len(records),
        "notes": found.notes,
        "leaderboard": render(tables, "md"),
        "members": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    _write_tar(out, {MANIFEST: json.dumps(manifest, indent=1).encode(), **members})
    return manifest


def command(record: Mapping[str, Any]) -> str:
    """The command that ran the record: its Hydra overrides where the record keeps them,
    else one rebuilt from its cell (the record's `config` is complete either way)."""
    overrides = record.get("overrides")
    if overrides is not None:
        return " ".join(["python run.py", *overrides])
    config = record.get("config") or {}
    cell = record["cell"]
    parts = [
        f"data={(config.get('data') or {}).get('name', cell['data'])}",
        f"model={cell['model']}",
        f"method={cell['method_name']}",
        f"prune.fraction={cell['fraction']:g}",
        f"seed={cell['seed']}",
        f"train.epochs={cell['epochs']}",
        f"train.budget={cell['budget']}",
    ]
    return " ".join(["python run.py", *parts]) + "  # rebuilt from the cell"


def score_exports(records: list[dict[str, Any]]) -> dict[str, bytes]:
    """score.py's export of each static method variant that ran (one per variant, whatever
    the fraction and seed), as bundle members."""
    from benchmarks.export import export_method_scores
    from benchmarks.plugins import load_plugins

    variants: dict[str, dict[str, Any]] = {}
    for record in records:
        cell = record["cell"]
        selection = record.get("selection") or {}
        if record.get("status") != "finished" or "dynamic" in selection:
            continue
        if cell["method_name"] in NO_EXPORT:
            continue
        config = {k: v for k, v in record["config"].items() if k not in ("prune", "seed")}
        variants.setdefault(short_hash(canonical(config)), record)
    members: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="prunebench-bundle-scores-") as scratch:
        folder = Path(scratch)
        for key, record in sorted(variants.items()):
            cfg = OmegaConf.create(record["config"])
            load_plugins(list(cfg.get("plugins") or []))
            name = f"{record['cell']['data']}_{record['cell']['model']}_{record['cell']['method']}"
            out = folder / f"{_safe(name)}_{key}.csv"
            try:
                export_method_scores(cfg, out)
            except PrunebenchError as err:
                raise AnalysisError(
                    f"cannot export the scores of {name} ({err}); --no-scores leaves them out"
                ) from None
            for path in (out, out.with_name(out.name + ".json")):
                members[f"scores/{path.name}"] = path.read_bytes()
    return members


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._=-" else "-" for c in name)


def _fingerprints(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, set[str]] = {}
    for record in records:
        data = record.get("data") or {}
        if data.get("fingerprint"):
            found.setdefault(record["cell"]["data"], set()).add(data["fingerprint"])
    return {name: sorted(prints) for name, prints in sorted(found.items())}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _write_tar(out: Path, members: Mapping[str, bytes]) -> None:
    """A gzipped tar of `members`, written atomically (a reader never sees half a bundle)."""
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(f: io.BufferedWriter) -> None:
        with tarfile.open(fileobj=f, mode="w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))

    atomic_write(out, write)


def log_artifact(out: Path, project: str, manifest: Mapping[str, Any]) -> str:
    """Log the bundle as a W&B artifact (type `prunebench-bundle`) of ENTITY/PROJECT."""
    import wandb

    entity, _, name = project.rpartition("/")
    run = wandb.init(entity=entity or None, project=name, job_type="bundle")
    try:
        artifact = wandb.Artifact(
            out.name.removesuffix(".tar.gz").removesuffix(".tgz"),
            type="prunebench-bundle",
            metadata={k: manifest[k] for k in ("format", "prunebench", "records", "data")},
        )
        artifact.add_file(str(out))
        run.log_artifact(artifact)
    finally:
        run.finish()
    return f"{run.entity}/{run.project}/{artifact.name}"
