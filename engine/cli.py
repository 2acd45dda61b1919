"""Urban Form Mapper engine: python -m engine TOOL ... (python -m engine TOOL --help for each tool).

Tools:
  cluster   cluster the tiles of a raster into K groups by CNN features (k-means or DeepCluster)
  predict   assign the tiles of another raster to the clusters of a saved model
  sweep     sensitivity runs over K and tile size: consistent ids, agreement metrics, plots
  stats     building, road, NDVI and population statistics per tile and per cluster of a run
  export    a run's layers as Shapefile, GeoPackage or CSV
  train-seg     train a building segmentation model (U-Net) from footprints
  segment       map every building of a raster with a trained model
  evaluate-seg  IoU, precision, recall, F1 and object F1 of predicted buildings
  probe     check a raster and tiling; tile count and model speed (JSON)
  check     report the Python, torch version and available devices (JSON)

Exit codes: 0 success, 2 bad input (the message says which input and the
fix), 1 any other failure, 130 cancelled. Messages go to stderr; with
``--progress json`` stdout carries only JSON progress lines.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap

from .contract import defaults
from .contract.progress import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED
from .errors import BadInput, Cancelled

EPILOG_CLUSTER = textwrap.dedent("""\
    outputs (next to --out):
      OUT.gpkg               layer 'tiles': tile_id, row, col, cluster, clust_dist, pc1, pc2, valid_frac
                             (+ the statistics and a 'clusters' layer with --buildings/--roads/..., as `stats`)
      OUT_clusters.tif       cluster map, one pixel per tile (255 = skipped tile), with a colour table
      OUT_quicklook.png      the image with the clusters over it
      OUT_model.pt           the fitted model: CNN weights, PCA, centroids, tiling (for `predict`)
      OUT_manifest.json      parameters, versions, seed, device, timings, input checksum; for DeepCluster
                             the loss, NMI and (with --buildings) eta-squared of building coverage per epoch
      OUT_checkpoint.pt      DeepCluster only, while training; kept when a run is interrupted (--resume)

    examples:
      python -m engine cluster image.tif --out run.gpkg --k 8 --tile-size 64px
      python -m engine cluster image.tif --out run.gpkg --k 6 --tile-size 20m --overlap 5m \\
          --backbone efficientnet_lite0 --weights imagenet --seed 1
      python -m engine cluster image.tif --out deep.gpkg --k 6 --method deepcluster --epochs 5 \\
          --backbone efficientnet_lite0 --buildings footprints.gpkg
    """)

EPILOG_PREDICT = textwrap.dedent("""\
    outputs (next to --out): OUT.gpkg, OUT_clusters.tif, OUT_quicklook.png, OUT_manifest.json
    (as for cluster; the clusters are the model's, so colours and ids match the model's run).

    The raster must have the model's band count and about its ground resolution (within
    --res-tolerance); --resample cuts tiles of the model's ground size and resizes them instead.

    example:
      python -m engine predict run_model.pt other_city.tif --out other.gpkg
    """)

EPILOG_SWEEP = textwrap.dedent("""\
    outputs (next to --out):
      SWEEP.gpkg             one layer per tile size (tiles_32px, tiles_64px, ...) with a column per K
                             (k2 ... k12); cluster ids are matched across K so a colour means the same place
      SWEEP_metrics.csv      per tile size and K: silhouette, Calinski-Harabasz, Davies-Bouldin, NMI/ARI with
                             the previous K, agreement across tile sizes
      SWEEP_metrics.png, SWEEP_lineage_<size>.png, SWEEP_pca_<size>.png    plots
      SWEEP_manifest.json    parameters, versions, what is complete and what is missing

    example:
      python -m engine sweep image.tif --out sweep.gpkg --k 2..12 --tile-size 32px,64px,128px
    """)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return v


def _add_tiling(p, sweep: bool = False) -> None:
    if not sweep:
        p.add_argument("--tile-size", default="64px",
                       help="tile side in pixels ('64px') or ground metres ('20m'; geographic and Web Mercator "
                            "rasters are warped on the fly to the local UTM zone) (default 64px)")
    p.add_argument("--overlap", default="0px", help="overlap between neighbouring tiles, px or m (default 0px)")
    p.add_argument("--edge", choices=("drop", "pad"), default="drop",
                   help="tiles that hang over the right/bottom edge: drop them or pad with invalid pixels")
    p.add_argument("--min-valid", type=float, default=0.5,
                   help="skip tiles with a smaller share of valid pixels (nodata/alpha/outside) (default 0.5)")
    p.add_argument("--bands", default=None,
                   help="1-based bands to use, '1,2,3' or a single band (default: RGB, or band 1)")


def _add_area(p) -> None:
    p.add_argument("--extent", default=None,
                   help="only tiles whose centre lies in xmin,ymin,xmax,ymax (in the raster's CRS)")
    p.add_argument("--area", default=None,
                   help="only tiles whose centre lies in the polygons of this vector file (any CRS)")


def _add_device(p) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="inference precision (default: bf16 where the CPU supports it, fp16/bf16 on CUDA)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="tiles per batch for features (default: about 1 Mpx per batch on CPU, 16 Mpx on GPU)")


def _add_weights(p, what: str) -> None:
    offline = ", ".join(defaults.OFFLINE_BACKBONES)
    p.add_argument("--weights", default=defaults.DEFAULT_WEIGHTS,
                   help=f"'imagenet' ({what} weights: packaged for {offline}, from the local torch cache for "
                        f"the others; nothing is downloaded), 'none' (random), or a state-dict file "
                        f"(default {defaults.DEFAULT_WEIGHTS})")


def _add_model(p) -> None:
    p.add_argument("--backbone", default=defaults.DEFAULT_BACKBONE,
                   help=f"CNN: {', '.join(defaults.BACKBONES)} (default {defaults.DEFAULT_BACKBONE})")
    _add_weights(p, "ImageNet")
    _add_device(p)
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same clusters (default 0)")
    p.add_argument("--pca-dims", default="auto",
                   help="PCA dimensions before k-means: 'auto' (90%% of variance, at most one per 10 tiles) or N")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=False,
                   help="whiten PCA components (the published recipe; off by default: it amplifies noise "
                        "when tiles are few)")


def _add_method(p) -> None:
    p.add_argument("--method", choices=("kmeans", "deepcluster"), default="kmeans",
                   help="kmeans: k-means on fixed CNN features (fast, the default); deepcluster: k-means "
                        "pseudo-labels fine-tune the CNN, repeated for --epochs")
    g = p.add_argument_group("DeepCluster training (--method deepcluster)")
    g.add_argument("--epochs", type=_positive_int, default=5, help="training epochs (default 5)")
    g.add_argument("--lr", default="auto",
                   help="SGD learning rate; auto: low for pretrained weights, higher from scratch (default auto)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, default=1e-5, help="SGD weight decay (default 1e-5)")
    g.add_argument("--train-batch-size", type=_positive_int, default=64, help="training crops per batch (default 64)")
    g.add_argument("--freeze", default="auto",
                   help="early blocks kept fixed: auto (about half for pretrained weights, none from scratch), "
                        "none, or a number (default auto)")
    g.add_argument("--crops-per-tile", type=_positive_int, default=8,
                   help="training crops per tile per epoch, shifted up to half a tile (default 8)")
    g.add_argument("--patience", type=_positive_int, default=2,
                   help="with --buildings: stop after this many epochs without a better eta-squared and keep "
                        "the best epoch (default 2)")
    g.add_argument("--sobel", action="store_true",
                   help="feed the CNN grey level and Sobel gradients instead of colour")


def _add_run(p) -> None:
    p.add_argument("--cache-dir", default=None,
                   help="feature cache folder (default $URBANFORM_CACHE or ~/.cache/urbanform/features)")
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="compute features afresh and keep none")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_progress(p)


def _add_progress(p) -> None:
    p.add_argument("--progress", choices=("auto", "bar", "log", "json", "none"), default="auto",
                   help="progress: a bar on a terminal, plain lines otherwise, or JSON lines on stdout")


def _add_stats(p, buildings_help: str) -> None:
    g = p.add_argument_group("urban-form statistics (the stats tool; also after cluster)")
    g.add_argument("--buildings", default=None, help=buildings_help)
    g.add_argument("--roads", default=None,
                   help="road lines (any vector file and CRS): road_len, road_dist and major_dist per tile")
    g.add_argument("--road-field", default="highway",
                   help="road attribute that says which roads are major (default highway, as in OSM)")
    g.add_argument("--major-values", default=None,
                   help="comma-separated values of --road-field that are major roads (default: motorway, trunk, "
                        "primary, secondary and their _link)")
    g.add_argument("--population", default=None,
                   help="population raster of counts per cell (WorldPop style, any CRS): pop_dens in people/km2")
    g.add_argument("--nir-band", type=_positive_int, default=None,
                   help="1-based near-infrared band of the raster (or of --ndvi-raster): mean NDVI per tile")
    g.add_argument("--red-band", type=_positive_int, default=None, help="1-based red band for NDVI (default 1)")
    g.add_argument("--ndvi-raster", default=None, help="a separate multispectral raster for NDVI")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for failures")
    sub = parser.add_subparsers(dest="tool", metavar="TOOL")

    c = sub.add_parser("cluster", help="cluster raster tiles by CNN features (k-means or DeepCluster)",
                       description="Cut RASTER into tiles, compute CNN features and cluster them with k-means, "
                                   "or with DeepCluster (k-means pseudo-labels that fine-tune the CNN).",
                       epilog=EPILOG_CLUSTER, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("raster", help="input raster (GeoTIFF or any GDAL raster with a CRS)")
    c.add_argument("--out", required=True, help="output GeoPackage (.gpkg); other outputs are named after it")
    c.add_argument("--k", type=_positive_int, default=8, help="number of clusters K, >= 2 (default 8)")
    _add_tiling(c)
    _add_area(c)
    _add_model(c)
    _add_method(c)
    _add_stats(c, "building footprints (any vector file and CRS): the building statistics per tile and "
                  "cluster as `stats` computes them, and the eta-squared of building coverage in the manifest "
                  "(per epoch for DeepCluster, where it also picks the epoch kept)")
    c.add_argument("--save-model", default=None, help="where to write the model (default OUT_model.pt)")
    c.add_argument("--resume", action="store_true",
                   help="continue an interrupted DeepCluster run from OUT_checkpoint.pt (same parameters)")
    c.add_argument("--no-quicklook", dest="quicklook", action="store_false", help="skip the PNG quicklook")
    _add_run(c)

    pd = sub.add_parser("predict", help="assign another raster's tiles to a saved model's clusters",
                        description="Cut RASTER into tiles as MODEL's run did and put every tile into MODEL's "
                                    "clusters (another city, another date).",
                        epilog=EPILOG_PREDICT, formatter_class=argparse.RawDescriptionHelpFormatter)
    pd.add_argument("model", help="a model file written by cluster (OUT_model.pt)")
    pd.add_argument("raster", help="the raster to assign")
    pd.add_argument("--out", required=True, help="output GeoPackage (.gpkg); other outputs are named after it")
    pd.add_argument("--resample", action="store_true",
                    help="accept another resolution: tiles of the model's ground size resized to its pixels")
    pd.add_argument("--res-tolerance", type=float, default=0.1,
                    help="accepted difference in ground pixel size without --resample (default 0.1 = 10%%)")
    _add_area(pd)
    _add_device(pd)
    pd.add_argument("--no-quicklook", dest="quicklook", action="store_false", help="skip the PNG quicklook")
    pd.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_progress(pd)

    sw = sub.add_parser("sweep", help="cluster over a range of K and tile sizes, with agreement metrics and plots",
                        description="Sensitivity analysis: cluster RASTER for every K and tile size, make cluster "
                                    "ids consistent across K, and measure how clusters change.",
                        epilog=EPILOG_SWEEP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sw.add_argument("raster", help="input raster")
    sw.add_argument("--out", required=True, help="output GeoPackage (.gpkg); other outputs are named after it")
    sw.add_argument("--k", default="2..12", help="K values: '2..12', '2,4,6' or '2..6,8,12' (default 2..12)")
    sw.add_argument("--tile-size", default="32px,64px,128px",
                    help="comma-separated tile sizes in px or m (default 32px,64px,128px)")
    _add_tiling(sw, sweep=True)
    _add_model(sw)
    _add_method(sw)
    sw.add_argument("--resume", action="store_true", help="finish an interrupted sweep (same parameters)")
    _add_stats(sw, "building footprints: the building statistics on every tile-size layer, and the "
                   "eta-squared of each statistic for every tile size and K (SWEEP_stats_eta.csv/.png)")
    _add_run(sw)

    st = sub.add_parser("stats", help="statistics per tile and per cluster of a run (buildings, roads, NDVI, people)",
                        description="Add urban-form statistics to the tiles of RUN.gpkg, write its 'clusters' layer "
                                    "(per-cluster profile), the eta-squared table (RUN_stats.csv) and profile plots.")
    st.add_argument("run", help="a run's GeoPackage (from cluster or predict)")
    _add_stats(st, "building footprints (any vector file and CRS): bldg_count, bldg_area, bldg_cov, bldg_mean, "
                   "bldg_orien per tile")
    st.add_argument("--overwrite", action="store_true", help="recompute statistics the run already has")
    _add_progress(st)

    ex = sub.add_parser("export", help="a run's layers as Shapefile, GeoPackage or CSV",
                        description="Write every layer of RUN.gpkg to DIR as one file per layer.")
    ex.add_argument("run", help="a run's GeoPackage")
    ex.add_argument("--format", choices=("shp", "gpkg", "csv"), default="shp",
                    help="shp (with .prj and UTF-8 .cpg), gpkg, or csv (no geometry) (default shp)")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--overwrite", action="store_true", help="replace existing files")

    ts = sub.add_parser("train-seg", help="train a building segmentation model (U-Net) from footprints",
                        description="Rasterise FOOTPRINTS onto RASTER and train a U-Net on chips of the labelled "
                                    "area, with validation on spatially separate blocks.")
    ts.add_argument("raster")
    ts.add_argument("--buildings", required=True, help="building footprints (any vector file and CRS)")
    ts.add_argument("--out", required=True, help="the model file to write (.pt)")
    ts.add_argument("--encoder", default=defaults.DEFAULT_SEG_ENCODER,
                    help=f"U-Net encoder: {', '.join(defaults.SEG_ENCODERS)} "
                         f"(default {defaults.DEFAULT_SEG_ENCODER})")
    _add_weights(ts, "the encoder's ImageNet")
    ts.add_argument("--chip", type=_positive_int, default=256, help="chip side in px, a multiple of 32 (default 256)")
    ts.add_argument("--epochs", type=_positive_int, default=None, help="training epochs")
    ts.add_argument("--minutes", type=float, default=None, help="training time budget instead of --epochs")
    ts.add_argument("--val-fraction", type=float, default=0.2, help="share of blocks held out (default 0.2)")
    ts.add_argument("--lr", type=float, default=None, help="AdamW learning rate, cosine decay (default 0.001)")
    ts.add_argument("--encoder-lr", type=float, default=None,
                    help="the encoder's learning rate as a share of --lr (default 0.1 with pretrained weights, "
                         "1 from scratch)")
    ts.add_argument("--chips-per-epoch", type=_positive_int, default=None,
                    help="chips per epoch (default one per labelled training cell, at least 256)")
    ts.add_argument("--label-area", default=None, help="polygons of the mapped area (default: footprints' extent)")
    ts.add_argument("--bands", default=None, help="1-based bands to use (default: RGB, or band 1)")
    ts.add_argument("--seed", type=int, default=0)
    _add_device(ts)
    ts.add_argument("--resume", action="store_true", help="continue from the checkpoint next to --out")
    ts.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    _add_progress(ts)

    sg = sub.add_parser("segment", help="map every building of a raster with a trained model",
                        description="Sliding-window inference with blended overlaps, streamed block by block; "
                                    "writes OUT_mask.tif (and OUT_prob.tif) and the buildings layer of OUT.gpkg.")
    sg.add_argument("raster")
    sg.add_argument("--model", required=True, help="a model file from train-seg")
    sg.add_argument("--out", required=True, help="output GeoPackage (.gpkg)")
    sg.add_argument("--overlap", type=int, default=None,
                    help="overlap between windows in px (default a quarter of the model's chip: 64 for 256)")
    sg.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    sg.add_argument("--probability", action="store_true", help="also write OUT_prob.tif")
    sg.add_argument("--min-area", type=float, default=4.0, help="drop buildings and holes below this m2")
    sg.add_argument("--simplify", type=float, default=0.5, help="simplification tolerance in m (default 0.5)")
    sg.add_argument("--regularize", action="store_true", help="square building outlines to right angles")
    sg.add_argument("--resample", action="store_true", help="accept another resolution than the model's")
    _add_device(sg)
    sg.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_progress(sg)

    ev = sub.add_parser("evaluate-seg", help="pixel and object scores of predicted buildings against footprints",
                        description="Pixel IoU, accuracy, precision, recall, F1 and object-level F1 (matched at "
                                    "IoU >= 0.5) of a mask GeoTIFF or a buildings layer; prints JSON.")
    ev.add_argument("--pred", required=True, help="OUT_mask.tif or OUT.gpkg from segment")
    ev.add_argument("--truth", required=True, help="true footprints (any vector file and CRS)")
    ev.add_argument("--area", default=None, help="only inside these polygons")

    pr = sub.add_parser("probe", help="tile count of a raster and tiling (JSON); with --speed, model tiles/s",
                        description="Check a raster and tiling without running them and print what a run would "
                                    "do as JSON (exit 2 with the message on bad input).")
    pr.add_argument("raster")
    for name in ("--tile-size", "--overlap", "--edge", "--bands", "--backbone", "--weights", "--device",
                 "--precision"):
        pr.add_argument(name, default={"--tile-size": "64px", "--overlap": "0px", "--edge": "drop",
                                       "--backbone": defaults.DEFAULT_BACKBONE, "--weights": defaults.DEFAULT_WEIGHTS,
                                       "--device": "auto", "--precision": "auto"}.get(name), help="as for cluster")
    pr.add_argument("--batch-size", type=_positive_int, default=None, help="as for cluster")
    pr.add_argument("--extent", default=None, help="as for cluster: count only tiles inside")
    pr.add_argument("--area", default=None, help="as for cluster: count only tiles inside")
    pr.add_argument("--speed", action="store_true", help="also time the model on random tiles (imports torch)")

    k = sub.add_parser("check", help="report the Python, torch and available devices as JSON")
    k.add_argument("--backbone", default=None, help="also check that this backbone's ImageNet weights are here")
    return parser


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Cancelled("terminated")


def _fields(cls, args, **renames) -> dict:
    """The dataclass fields of ``cls`` that ``args`` has (argparse dest names match field names)."""
    from dataclasses import fields

    ns = vars(args)
    out = {f.name: ns[f.name] for f in fields(cls) if f.name in ns}
    out.update({field: ns[dest] for field, dest in renames.items()})
    return out


def _run(fn, params, args):
    from .progress import Progress

    progress = Progress(args.progress)
    try:
        return fn(params, progress)
    finally:
        progress.close()


def _print_outputs(manifest: dict, args, summary: str) -> None:
    if args.progress == "json":
        return
    print(f"{summary}; {manifest['timings_s']['total']:.1f} s", file=sys.stderr)
    for name, path in manifest["outputs"].items():
        print(f"  {name:10s} {path}", file=sys.stderr)


def _stats_params(args, run: str, overwrite: bool):
    from .tools.stats import StatsParams

    return StatsParams(**{**_fields(StatsParams, args), "run": run, "overwrite": overwrite})


def cmd_cluster(args) -> int:
    from .tools.cluster import ClusterParams, run_cluster

    # with --buildings/--roads/... run_cluster runs the statistics too (as the Python API does)
    manifest = _run(run_cluster, ClusterParams(**_fields(ClusterParams, args)), args)
    sizes = manifest["clustering"]["cluster_sizes"]
    summary = f"{manifest['tiling']['tiles_valid']} tiles in {len(sizes)} clusters (sizes {sizes})"
    if "evaluation" in manifest:
        summary += f"; eta-squared of building coverage {manifest['evaluation']['eta2_bldg_cov']:.3f}"
    _print_outputs(manifest, args, summary)
    _print_statistics(manifest, args)
    return 0


def cmd_predict(args) -> int:
    from .tools.predict import PredictParams, run_predict

    manifest = _run(run_predict, PredictParams(**_fields(PredictParams, args)), args)
    sizes = manifest["clustering"]["cluster_sizes"]
    _print_outputs(manifest, args, f"{manifest['tiling']['tiles_valid']} tiles assigned (sizes {sizes})")
    return 0


def cmd_sweep(args) -> int:
    from .tools.sweep import SweepParams, run_sweep

    params = SweepParams(**_fields(SweepParams, args, k="k", tile_sizes="tile_size"))
    # with --buildings/--roads/... run_sweep runs the statistics too (as the Python API does)
    manifest = _run(run_sweep, params, args)
    _print_outputs(manifest, args, f"sweep complete: {', '.join(manifest.get('layers', {}))}")
    if "sweep_statistics" in manifest and args.progress != "json":
        print(f"  stats_eta  {manifest['sweep_statistics']['eta_csv']}", file=sys.stderr)
    return 0


def _print_statistics(manifest: dict, args) -> None:
    if args.progress == "json":
        return
    stats = manifest.get("statistics", {})
    for row in stats.get("eta_squared", []):
        value = "-" if row.get("eta2") is None else f"{row['eta2']:.3f}"
        print(f"  eta-squared {row['stat']:10s} {value}", file=sys.stderr)
    for name, path in stats.get("outputs", {}).items():
        print(f"  {name:10s} {path}", file=sys.stderr)


def cmd_stats(args) -> int:
    from .tools.stats import run_stats

    _print_statistics(_run(run_stats, _stats_params(args, args.run, args.overwrite), args), args)
    return 0


def cmd_export(args) -> int:
    from .tools.export import run_export

    for path in run_export(args.run, args.format, args.out, args.overwrite).values():
        print(path, file=sys.stderr)
    return 0


def cmd_train_seg(args) -> int:
    from .tools.train_seg import TrainParams, run_train

    given = {k: v for k, v in _fields(TrainParams, args).items() if v is not None}   # None: the estimator's default
    manifest = _run(run_train, TrainParams(**given), args)
    if args.progress != "json":
        best = manifest.get("val_iou")
        print(f"trained {manifest.get('epochs_done', '?')} epochs; best validation IoU "
              f"{best if best is None else round(best, 3)}; model {args.out}", file=sys.stderr)
    return 0


def cmd_segment(args) -> int:
    from .tools.segment import SegmentParams, run_segment

    manifest = _run(run_segment, SegmentParams(**_fields(SegmentParams, args)), args)
    if args.progress != "json":
        for name, path in manifest.get("outputs", {}).items():
            print(f"  {name:10s} {path}", file=sys.stderr)
    return 0


def cmd_evaluate_seg(args) -> int:
    from .tools.evaluate_seg import evaluate

    print(json.dumps(evaluate(args.pred, args.truth, args.area), default=float))
    return 0


def cmd_probe(args) -> int:
    from .tools.probe import probe

    print(json.dumps(probe(args.raster, args.tile_size, args.overlap, args.edge, args.bands, args.speed,
                           args.backbone, args.weights, args.device, args.precision, args.batch_size,
                           args.extent, args.area)))
    return 0


def cmd_check(args) -> int:
    from .tools.check import check

    info = check(args.backbone)
    print(json.dumps(info))
    return 0 if info["ok"] else 1


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tool is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return {"cluster": cmd_cluster, "predict": cmd_predict, "sweep": cmd_sweep, "stats": cmd_stats,
                "export": cmd_export, "train-seg": cmd_train_seg, "segment": cmd_segment,
                "evaluate-seg": cmd_evaluate_seg, "probe": cmd_probe,
                "check": cmd_check}[args.tool](args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt) as exc:
        detail = str(exc) if isinstance(exc, Cancelled) else ""
        # a bare SIGTERM/Ctrl+C left nothing; tools that keep finished parts (sweep) say what they kept
        print(f"cancelled: {detail}" if detail not in ("", "terminated") else "cancelled: no output was written",
              file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            raise
        print(f"failed: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED
