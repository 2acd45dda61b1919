"""Urban Form Mapper engine: python -m engine TOOL ... (python -m engine TOOL --help for each tool).

Tools:
  cluster   cluster the tiles of a raster into K groups by CNN features
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

from .errors import BadInput, Cancelled

EPILOG_CLUSTER = textwrap.dedent("""\
    outputs (next to --out):
      OUT.gpkg               layer 'tiles': tile_id, row, col, cluster, clust_dist, pc1, pc2, valid_frac
      OUT_clusters.tif       cluster map, one pixel per tile (255 = skipped tile), with a colour table
      OUT_quicklook.png      the image with the clusters over it
      OUT_model.npz          the fitted PCA + k-means (for assigning other rasters)
      OUT_manifest.json      parameters, versions, seed, device, timings, input checksum

    examples:
      python -m engine cluster image.tif --out run.gpkg --k 8 --tile-size 64px
      python -m engine cluster image.tif --out run.gpkg --k 6 --tile-size 20m --overlap 5m \\
          --backbone efficientnet_lite0 --weights imagenet --seed 1
    """)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for failures")
    sub = parser.add_subparsers(dest="tool", metavar="TOOL")

    c = sub.add_parser("cluster", help="cluster raster tiles by CNN features",
                       description="Cut RASTER into tiles, compute CNN features and cluster them with k-means.",
                       epilog=EPILOG_CLUSTER, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("raster", help="input raster (GeoTIFF or any GDAL raster with a CRS)")
    c.add_argument("--out", required=True, help="output GeoPackage (.gpkg); other outputs are named after it")
    c.add_argument("--k", type=_positive_int, default=8, help="number of clusters K, >= 2 (default 8)")
    c.add_argument("--tile-size", default="64px",
                   help="tile side in pixels ('64px') or ground metres ('20m'; geographic and Web Mercator "
                        "rasters are warped on the fly to the local UTM zone) (default 64px)")
    c.add_argument("--overlap", default="0px", help="overlap between neighbouring tiles, px or m (default 0px)")
    c.add_argument("--edge", choices=("drop", "pad"), default="drop",
                   help="tiles that hang over the right/bottom edge: drop them or pad with invalid pixels")
    c.add_argument("--min-valid", type=float, default=0.5,
                   help="skip tiles with a smaller share of valid pixels (nodata/alpha/outside) (default 0.5)")
    c.add_argument("--extent", default=None,
                   help="only tiles whose centre lies in xmin,ymin,xmax,ymax (in the raster's CRS)")
    c.add_argument("--area", default=None,
                   help="only tiles whose centre lies in the polygons of this vector file (any CRS)")
    c.add_argument("--bands", default=None,
                   help="1-based bands to use, '1,2,3' or a single band (default: RGB, or band 1)")
    c.add_argument("--backbone", default="resnet18",
                   help="CNN: resnet18, resnet50, vgg16, efficientnet_lite0 (default resnet18)")
    c.add_argument("--weights", default="imagenet",
                   help="'imagenet' (local torch cache, or packaged for efficientnet_lite0), 'none' (random), "
                        "or a state-dict file (default imagenet)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    c.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="inference precision (default: bf16 where the CPU supports it, fp16/bf16 on CUDA)")
    c.add_argument("--batch-size", type=_positive_int, default=None,
                   help="tiles per batch (default: about 1 Mpx per batch on CPU, 16 Mpx on GPU)")
    c.add_argument("--seed", type=int, default=0, help="random seed; same seed, same clusters (default 0)")
    c.add_argument("--pca-dims", default="auto",
                   help="PCA dimensions before k-means: 'auto' (90%% of variance, at most one per 10 tiles) or N")
    c.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=False,
                   help="whiten PCA components (the published recipe; off by default: it amplifies noise "
                        "when tiles are few)")
    c.add_argument("--cache-dir", default=None,
                   help="feature cache folder (default $URBANFORM_CACHE or ~/.cache/urbanform/features)")
    c.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="compute features afresh and keep none")
    c.add_argument("--no-quicklook", dest="quicklook", action="store_false", help="skip the PNG quicklook")
    c.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    c.add_argument("--progress", choices=("auto", "bar", "log", "json", "none"), default="auto",
                   help="progress: a bar on a terminal, plain lines otherwise, or JSON lines on stdout")

    pr = sub.add_parser("probe", help="tile count of a raster and tiling (JSON); with --speed, model tiles/s",
                        description="Check a raster and tiling without running them and print what a run would "
                                    "do as JSON (exit 2 with the message on bad input).")
    pr.add_argument("raster")
    for name in ("--tile-size", "--overlap", "--edge", "--bands", "--backbone", "--weights", "--device",
                 "--precision"):
        pr.add_argument(name, default={"--tile-size": "64px", "--overlap": "0px", "--edge": "drop",
                                       "--backbone": "resnet18", "--weights": "imagenet", "--device": "auto",
                                       "--precision": "auto"}.get(name), help="as for cluster")
    pr.add_argument("--batch-size", type=_positive_int, default=None, help="as for cluster")
    pr.add_argument("--extent", default=None, help="as for cluster: count only tiles inside")
    pr.add_argument("--area", default=None, help="as for cluster: count only tiles inside")
    pr.add_argument("--speed", action="store_true", help="also time the model on random tiles (imports torch)")

    k = sub.add_parser("check", help="report the Python, torch and available devices as JSON")
    k.add_argument("--backbone", default=None, help="also check that this backbone's ImageNet weights are here")
    return parser


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Cancelled("terminated")


def cmd_cluster(args) -> int:
    from .progress import Progress
    from .runs import ClusterParams, run_cluster

    params = ClusterParams(
        raster=args.raster, out=args.out, k=args.k, tile_size=args.tile_size, overlap=args.overlap,
        edge=args.edge, min_valid=args.min_valid, bands=args.bands, backbone=args.backbone,
        weights=args.weights, device=args.device, precision=args.precision, batch_size=args.batch_size,
        seed=args.seed, pca_dims=args.pca_dims, whiten=args.whiten, overwrite=args.overwrite,
        cache_dir=args.cache_dir, use_cache=args.use_cache, quicklook=args.quicklook, extent=args.extent,
        area=args.area)
    progress = Progress(args.progress)
    try:
        manifest = run_cluster(params, progress)
    finally:
        progress.close()
    if args.progress != "json":
        sizes = manifest["clustering"]["cluster_sizes"]
        print(f"{manifest['tiling']['tiles_valid']} tiles in {len(sizes)} clusters (sizes {sizes}); "
              f"{manifest['timings_s']['total']:.1f} s", file=sys.stderr)
        for name, path in manifest["outputs"].items():
            print(f"  {name:10s} {path}", file=sys.stderr)
    return 0


def cmd_probe(args) -> int:
    from .runs import probe

    print(json.dumps(probe(args.raster, args.tile_size, args.overlap, args.edge, args.bands, args.speed,
                           args.backbone, args.weights, args.device, args.precision, args.batch_size,
                           args.extent, args.area)))
    return 0


def cmd_check(args) -> int:
    import platform

    info = {"python": sys.executable, "python_version": platform.python_version()}
    try:
        import torch

        from .features import available_devices, backbone_spec, resolve_weights

        info.update(torch=torch.__version__, devices=available_devices(), ok=True)
        if args.backbone:
            try:
                info["weights"] = str(resolve_weights(backbone_spec(args.backbone), "imagenet"))
            except BadInput as exc:
                info["weights_error"] = str(exc)
    except ImportError as exc:
        info.update(ok=False, error=f"{exc}; install the engine requirements (make setup).")
    print(json.dumps(info))
    return 0 if info["ok"] else 1


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tool is None:
        parser.print_help(sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return {"cluster": cmd_cluster, "probe": cmd_probe, "check": cmd_check}[args.tool](args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("cancelled: no output was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            raise
        print(f"failed: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
