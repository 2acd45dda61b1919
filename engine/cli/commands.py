"""Which params value, run function and printer each tool of the CLI has.

``COMMANDS`` maps the declared tool name (``engine.contract.tools.TOOLS``) to
a :class:`Command`: the module of ``engine.tools`` (imported only when the
tool runs, so ``--help`` and ``probe`` stay light), the name of its params
class, and the printer that reports the run's result on stderr (or the JSON
answer on stdout) and gives the exit code. To add a tool: declare it in
``engine/contract/tools.py``, write ``engine/tools/<name>.py``, add it here.
"""
from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from typing import Callable


def _quiet(args) -> bool:
    """With ``--progress json`` stdout is for the plugin's JSON lines and stderr for errors only."""
    return getattr(args, "progress", None) == "json"


def _outputs(manifest: dict, args, summary: str) -> None:
    if _quiet(args):
        return
    print(f"{summary}; {manifest['timings_s']['total']:.1f} s", file=sys.stderr)
    for name, path in manifest["outputs"].items():
        print(f"  {name:10s} {path}", file=sys.stderr)


def _statistics(manifest: dict, args) -> None:
    if _quiet(args):
        return
    stats = manifest.get("statistics", {})
    for row in stats.get("eta_squared", []):
        value = "-" if row.get("eta2") is None else f"{row['eta2']:.3f}"
        print(f"  eta-squared {row['stat']:10s} {value}", file=sys.stderr)
    for name, path in stats.get("outputs", {}).items():
        print(f"  {name:10s} {path}", file=sys.stderr)


def print_cluster(manifest: dict, args) -> None:
    sizes = manifest["clustering"]["cluster_sizes"]
    summary = f"{manifest['tiling']['tiles_valid']} tiles in {len(sizes)} clusters (sizes {sizes})"
    if "evaluation" in manifest:
        summary += f"; eta-squared of building coverage {manifest['evaluation']['eta2_bldg_cov']:.3f}"
    _outputs(manifest, args, summary)
    _statistics(manifest, args)


def print_predict(manifest: dict, args) -> None:
    sizes = manifest["clustering"]["cluster_sizes"]
    _outputs(manifest, args, f"{manifest['tiling']['tiles_valid']} tiles assigned (sizes {sizes})")


def print_sweep(manifest: dict, args) -> None:
    _outputs(manifest, args, f"sweep complete: {', '.join(manifest.get('layers', {}))}")
    if "sweep_statistics" in manifest and not _quiet(args):
        print(f"  stats_eta  {manifest['sweep_statistics']['eta_csv']}", file=sys.stderr)


def print_stats(manifest: dict, args) -> None:
    _statistics(manifest, args)


def print_export(manifest: dict, args) -> None:
    for path in manifest["outputs"].values():
        print(path, file=sys.stderr)


def print_train_seg(manifest: dict, args) -> None:
    if not _quiet(args):
        best = manifest.get("val_iou")
        print(f"trained {manifest.get('epochs_done', '?')} epochs; best validation IoU "
              f"{best if best is None else round(best, 3)}; model {manifest['model']}", file=sys.stderr)


def print_segment(manifest: dict, args) -> None:
    if not _quiet(args):
        for name, path in manifest.get("outputs", {}).items():
            print(f"  {name:10s} {path}", file=sys.stderr)


def print_report(manifest: dict, args) -> None:
    _outputs(manifest, args, f"report of the {manifest['kind']} run: {len(manifest['sections'])} sections, "
                             f"{manifest['bytes'] / 1e6:.1f} MB")


def print_change(manifest: dict, args) -> None:
    c = manifest["change"]
    _outputs(manifest, args, f"{c['changed']} of {c['tiles']} tiles changed cluster ({c['changed_share']:.1%}); "
                             f"median change score {c['median_score']:.3f}")


def print_similar(manifest: dict, args) -> None:
    s = manifest["similar"]
    top = "-" if s["top_similarity"] is None else f"{s['top_similarity']:.3f}"
    _outputs(manifest, args, f"{len(s['query_tiles'])} query tile(s); mean similarity of the top {len(s['top'])} "
                             f"tiles {top}, of all {s['mean_similarity']:.3f}")


def print_classify(manifest: dict, args) -> None:
    c = manifest["classify"]
    sizes = dict(zip(manifest["classes"], manifest["class_sizes"], strict=True))
    if "accuracy" in c:
        summary = (f"{c['labels']} labelled tiles; spatially cross-validated accuracy {c['accuracy']:.3f} "
                   f"({c['folds']} folds of {c['block_tiles']} x {c['block_tiles']} tile blocks); tiles per class "
                   f"{sizes}")
    else:
        summary = f"classified with {c['model']}; tiles per class {sizes}"
    _outputs(manifest, args, summary)


def print_json(result: dict, args) -> None:          # noqa: ARG001 - every printer's signature
    """The answer as one JSON line on stdout (evaluate-seg, probe)."""
    print(json.dumps(result, default=float))


def print_check(info: dict, args) -> int:
    print_json(info, args)
    return 0 if info["ok"] else 1


@dataclass(frozen=True)
class Command:
    """A tool of the CLI: ``engine.tools.<module>``'s ``params`` class and ``run``, and its ``printer``
    (``printer(result, args)``; an int it returns is the exit code, else 0)."""

    module: str
    params: str
    printer: Callable

    def load(self) -> tuple[type, Callable]:
        """(params class, run function), importing the tool's module now."""
        module = importlib.import_module(f"engine.tools.{self.module}")
        return getattr(module, self.params), module.run


COMMANDS: dict[str, Command] = {
    "cluster": Command("cluster", "ClusterParams", print_cluster),
    "predict": Command("predict", "PredictParams", print_predict),
    "sweep": Command("sweep", "SweepParams", print_sweep),
    "stats": Command("stats", "StatsParams", print_stats),
    "export": Command("export", "ExportParams", print_export),
    "train-seg": Command("train_seg", "TrainParams", print_train_seg),
    "segment": Command("segment", "SegmentParams", print_segment),
    "evaluate-seg": Command("evaluate_seg", "EvaluateSegParams", print_json),
    "probe": Command("probe", "ProbeParams", print_json),
    "check": Command("check", "CheckParams", print_check),
    "report": Command("report", "ReportParams", print_report),
    "change": Command("change", "ChangeParams", print_change),
    "similar": Command("similar", "SimilarParams", print_similar),
    "classify": Command("classify", "ClassifyParams", print_classify),
}
