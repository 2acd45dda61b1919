"""Every engine tool declared once: parameters, rules, outputs, progress stages, examples (stdlib only).

``TOOLS`` maps the CLI name (``cluster``, ``train-seg``) to its :class:`~.params.Tool`.
The CLI builds its argparse from it, the engine checks its inputs with
:func:`~.params.check`, and the plugin builds its requests' command lines and
its Processing parameters from it. To add a tool: declare it here, write
``engine/tools/<name>.py`` with a params value whose fields are these names and
``run(params, progress) -> manifest``, and add it to ``engine.cli.commands``;
the CLI, the checks and (with a request) the plugin follow.

Shared groups of parameters (tiling, model, DeepCluster training, statistics)
are tuples declared once and put into each tool that takes them.
"""
from __future__ import annotations

from dataclasses import replace

from . import defaults
from .limits import CLUSTER_NODATA, MAX_CLASSES, MAX_K, MAX_SEED, MIN_K, MIN_LABELS, MIN_TILE_PX, PLACE_GAP_M
from .outputs import CHECKPOINT
from .params import (BANDS, BOOL, CHOICE, EXTENT, FILE, FLOAT, FOLDER, INT, K_LIST, OUT_FILE, OUT_FOLDER, RASTER,
                     SIZE, SIZES, TEXT, VECTOR, Output, Param, Rule, Tool)
from .progress import CHANGE_STAGES, CLASSIFY_STAGES, CLUSTER_STAGES, REPORT_STAGES, SIMILAR_STAGES

METHODS = ("kmeans", "deepcluster")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
WEIGHT_WORDS = ("imagenet", "none")          # or a state-dict file
EDGES = ("drop", "pad")
PROGRESS_MODES = ("auto", "bar", "log", "json", "none")
EXPORT_FORMATS = ("shp", "gpkg", "csv")
CLASSIFIERS = ("logreg", "forest")          # classify: logistic regression, random forest
# --dask: 'local:N' (N worker processes on this machine) or a running scheduler's 'tcp://host:port'
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
DASK_PATTERN = rf"local:([1-9][0-9]*)|tcp://({_HOST}):({_PORT})"          # groups: workers, host, port
PLAN_WORKERS = (1, 4, 16)                   # probe --plan: the worker counts it estimates a run's time for
MAX_EPOCHS = 200                            # DeepCluster and U-Net training: more is always a typing mistake
SEG_CHIP_MULTIPLE = 32                      # the U-Net halves the chip five times

DEEP = ("method", "deepcluster")            # applies_when: DeepCluster training options
TRAINING = "DeepCluster training (--method deepcluster)"
STATS = "urban-form statistics (the stats tool; also after cluster and sweep)"

# -- shared parameters --------------------------------------------------------------------------------------
STUDY_HELP = ("; several rasters or a folder of them are one study: mosaicked (the first listed wins where scenes "
              "overlap), scenes in different CRSs warped to the UTM zone of the study")
RASTER_IN = Param("raster", RASTER, required=True, positional=True, label="Raster layer", many=True,
                  help="input raster (GeoTIFF, a VRT mosaic or any GDAL raster with a CRS)" + STUDY_HELP)
OUT_GPKG = Param("out", OUT_FILE, required=True, suffixes=(".gpkg",), label="Output GeoPackage",
                 help="output GeoPackage (.gpkg); other outputs are named after it")
OVERWRITE = Param("overwrite", BOOL, False, help="replace existing outputs")
PROGRESS = Param("progress", CHOICE, "auto", choices=PROGRESS_MODES, api=False,
                 help="progress: a bar on a terminal, plain lines otherwise, or JSON lines on stdout")
TILE_SIZE = Param("tile_size", SIZE, "64px", minimum=MIN_TILE_PX, label="Tile size",
                  help="tile side in pixels ('64px') or ground metres ('20m'; geographic and Web Mercator rasters "
                       f"are warped on the fly to the local UTM zone), at least {MIN_TILE_PX} px")
OVERLAP = Param("overlap", SIZE, "0px", minimum=0, label="Overlap between tiles",
                help="overlap between neighbouring tiles, px or m, smaller than the tile size")
EDGE = Param("edge", CHOICE, "drop", choices=EDGES, advanced=True,
             help="tiles that hang over the right/bottom edge: drop them or pad with invalid pixels")
MIN_VALID = Param("min_valid", FLOAT, 0.5, minimum=0, maximum=1, advanced=True, label="Minimum valid share",
                  help="skip tiles with a smaller share of valid pixels (nodata/alpha/outside)")
BANDS_P = Param("bands", BANDS, advanced=True, help="1-based bands to use, '1,2,3' or a single band "
                                                   "(default: RGB, or band 1)")
TILING = (TILE_SIZE, OVERLAP, EDGE, MIN_VALID, BANDS_P)
AREA = (Param("extent", EXTENT, label="Extent",
              help="only tiles whose centre lies in xmin,ymin,xmax,ymax (in the raster's CRS)"),
        Param("area", VECTOR, label="Area",
              help="only tiles whose centre lies in the polygons of this vector file (any CRS)"))
DEVICE = (Param("device", CHOICE, "auto", choices=DEVICES, label="Device", help="where the model runs"),
          Param("precision", CHOICE, "auto", choices=PRECISIONS, advanced=True,
                help="inference precision (auto: bf16 where the CPU supports it, fp16/bf16 on CUDA)"),
          Param("batch_size", INT, None, minimum=1, advanced=True, label="Tiles per batch",
                help="tiles per batch for features (default: about 1 Mpx per batch on CPU, 16 Mpx on GPU)"))
DASK = Param("dask", TEXT, None, advanced=True, label="Dask cluster", service=False, pattern=DASK_PATTERN,
             form="'local:N' (N worker processes on this machine, N at least 1) or a scheduler address "
                  "'tcp://host:port'",
             help="run the work in partitions on Dask: 'local:N' starts N worker processes here, "
                  "'tcp://host:8786' uses a running scheduler whose workers see the input files and the cache "
                  "folder; same results as one process; the dashboard link is printed on stderr")
_OFFLINE = ", ".join(defaults.OFFLINE_BACKBONES)
WEIGHTS = Param("weights", FILE, defaults.DEFAULT_WEIGHTS, words=WEIGHT_WORDS, label="Weights",
                help=f"'imagenet' (ImageNet weights: packaged for {_OFFLINE}, from the local torch cache for the "
                     "others; nothing is downloaded), 'none' (random), or a state-dict file")
SEED = Param("seed", INT, 0, minimum=0, maximum=MAX_SEED, label="Random seed",
             help="random seed; same seed, same clusters")
MODEL = (Param("backbone", CHOICE, defaults.DEFAULT_BACKBONE, choices=defaults.BACKBONES, label="CNN backbone",
               help="the CNN that describes each tile"),
         WEIGHTS, *DEVICE, SEED,
         Param("pca_dims", INT, "auto", words=("auto",), minimum=1, advanced=True,
               help="PCA dimensions before k-means: 'auto' (90%% of variance, at most one per 10 tiles) or N"),
         Param("whiten", BOOL, False, advanced=True,
               help="whiten PCA components (the published recipe; off by default: it amplifies noise when "
                    "tiles are few)"))
KMEANS = ("method", "kmeans")
FORM_LABEL = "Footprints or building model for form features"      # --form of cluster and predict
# the recipe of k-means tile features and the optional morphometrics of --form (issue 16: form-aware clusters)
FEATURE_RECIPE = (Param("pool", CHOICE, defaults.DEFAULT_POOL, choices=defaults.POOLS, applies_when=KMEANS, advanced=True,
                  label="Feature depths",
                  help="multi: mean-pooled features of two intermediate blocks (texture) and the last one "
                       "(objects), each L2-normalised and weighted (EfficientNet-Lite0: the first at half weight), "
                       "side by side; last: the last block only"),
            Param("cnn_px", INT, defaults.DEFAULT_CNN_PX, words=("native",), minimum=16, applies_when=KMEANS,
                  advanced=True, label="CNN input size", unit="px",
                  help="tiles are resized to this many pixels before the CNN (128: 64 px tiles of 0.3 m imagery "
                       "seen at 0.15 m), or 'native'"),
            Param("form", FILE, applies_when=KMEANS, label=FORM_LABEL,
                  help="building footprints (any vector file and CRS), or a building model written by "
                       "train-seg (MODEL.pt), which maps the raster's buildings first (kept in the feature "
                       "cache): their coverage, count, mean size, orientation, compactness and spacing per "
                       "tile join the CNN features"),
            Param("form_weight", FLOAT, 2.0, minimum=0, applies_when=KMEANS, advanced=True, label="Form weight",
                  help="weight of the --form morphometrics against the CNN features (1: equal variance; 2, the "
                       "default, measured best with the CNN still separating building-free land covers)"))
METHOD = Param("method", CHOICE, "kmeans", choices=METHODS, label="Method",
               help="kmeans: k-means on fixed CNN features (fast); deepcluster: k-means pseudo-labels "
                    "fine-tune the CNN, repeated for --epochs")
DEEPCLUSTER = (
    Param("epochs", INT, 5, minimum=1, maximum=MAX_EPOCHS, group=TRAINING, applies_when=DEEP,
          label="Training epochs", help="training epochs"),
    Param("lr", FLOAT, "auto", words=("auto",), minimum=0, open_min=True, maximum=10, group=TRAINING,
          applies_when=DEEP, label="Learning rate",
          help="SGD learning rate; auto: low for pretrained weights, higher from scratch"),
    Param("momentum", FLOAT, 0.9, minimum=0, maximum=1, open_max=True, group=TRAINING, applies_when=DEEP,
          advanced=True, help="SGD momentum"),
    Param("weight_decay", FLOAT, 1e-5, minimum=0, group=TRAINING, applies_when=DEEP, advanced=True,
          help="SGD weight decay"),
    Param("train_batch_size", INT, 64, minimum=2, group=TRAINING, applies_when=DEEP, advanced=True,
          help="training crops per batch (at least 2: batch norm needs it)"),
    Param("freeze", INT, "auto", words=("auto", "none"), minimum=0, group=TRAINING, applies_when=DEEP,
          advanced=True, help="early blocks kept fixed: auto (about half for pretrained weights, none from "
                              "scratch), none, or a number"),
    Param("crops_per_tile", INT, 8, minimum=1, group=TRAINING, applies_when=DEEP, advanced=True,
          help="training crops per tile per epoch, shifted up to half a tile"),
    Param("patience", INT, 2, minimum=1, group=TRAINING, applies_when=DEEP, advanced=True,
          help="with --buildings: stop after this many epochs without a better eta-squared and keep the best "
               "epoch"),
    Param("sobel", BOOL, False, group=TRAINING, applies_when=DEEP, advanced=True,
          help="feed the CNN grey level and Sobel gradients instead of colour"),
    Param("augment", CHOICE, defaults.DEFAULT_AUGMENT, choices=defaults.AUGMENTS, group=TRAINING,
          applies_when=DEEP, advanced=True, label="Training augmentation",
          help="colour changes of the training crops (besides shifts, flips and 90-degree rotations): light "
               "(small brightness, contrast and saturation changes) or colour (random hue rotation, greyscale, "
               "strong saturation, contrast and brightness changes, to push the clusters to follow form "
               "rather than colour; measured: no gain over light on Kampala and Zanzibar)"))
CACHE = (Param("cache_dir", FOLDER, None, advanced=True,
               help="feature cache folder (default $URBANFORM_CACHE or ~/.cache/urbanform/features)"),
         Param("use_cache", BOOL, True, negative_flag="--no-cache", advanced=True,
               help="compute features afresh and keep none"))


def stats_inputs(buildings_help: str) -> tuple:
    """The statistics inputs (the stats tool's, also taken by cluster and sweep)."""
    return (
        Param("buildings", VECTOR, group=STATS, label="Building footprints", help=buildings_help),
        Param("roads", VECTOR, group=STATS, label="Road lines",
              help="road lines (any vector file and CRS): road_len, road_dist and major_dist per tile"),
        Param("road_field", TEXT, "highway", group=STATS, advanced=True,
              help="road attribute that says which roads are major (as in OSM)"),
        Param("major_values", TEXT, None, group=STATS, advanced=True,
              help="comma-separated values of --road-field that are major roads (default: motorway, trunk, "
                   "primary, secondary and their _link)"),
        Param("population", RASTER, group=STATS, label="Population raster",
              help="population raster of counts per cell (WorldPop style, any CRS): pop_dens in people/km2"),
        Param("nir_band", INT, None, minimum=1, group=STATS, label="Near-infrared band",
              help="1-based near-infrared band of the raster (or of --ndvi-raster): mean NDVI per tile"),
        Param("red_band", INT, None, minimum=1, group=STATS, label="Red band",
              help="1-based red band for NDVI (default 1)"),
        Param("ndvi_raster", RASTER, group=STATS, advanced=True, help="a separate multispectral raster for NDVI"),
    )


STATS_RULES = (Rule("requires", ("red_band", "nir_band"), "A red band without a near-infrared band gives no NDVI: "
                                                          "give the near-infrared band too."),
               Rule("requires", ("ndvi_raster", "nir_band"), "An NDVI raster needs its near-infrared band: give "
                                                             "the near-infrared band too."))

SMALLER_OVERLAP = Rule("smaller", ("overlap", "tile_size"), "The overlap must be smaller than the tile size.")
RESUME_ON_DASK = Rule("requires", ("resume", "dask"), "--resume continues an interrupted --dask run from the "
                                                      "partitions it finished: give the same --dask.")

PLACES_HELP = (f"; scenes more than {PLACE_GAP_M / 1000:g} km apart are several places (cities): each its own "
               "study, one k-means model fitted on all of them, one tiles layer with a 'place' column (in EPSG:4326 "
               "when the places' CRSs differ); `predict` each place with the model")
ONE_GRID = " (not written by a run over several places: `predict` each place)"

STATS_OUTPUTS = (Output("stats_csv", "{stem}_stats.csv", "eta-squared of every statistic", when="stats"),
                 Output("profile", "{stem}_profile.png", "per-cluster profile plot", when="stats"),
                 Output("boxes", "{stem}_boxes.png", "box plots of the statistics per cluster", when="stats"))

# -- the tools --------------------------------------------------------------------------------------------------
CLUSTER = Tool(
    "cluster", "cluster raster tiles by CNN features (k-means or DeepCluster)",
    "Cut RASTER into tiles, compute CNN features and cluster them with k-means, or with DeepCluster (k-means "
    "pseudo-labels that fine-tune the CNN).",
    params=(replace(RASTER_IN, help=RASTER_IN.help + PLACES_HELP), OUT_GPKG,
            Param("k", INT, 8, minimum=MIN_K, maximum=MAX_K, label="Number of clusters (K)",
                  help=f"number of clusters K, {MIN_K} to {MAX_K} and at most the number of valid tiles"),
            *TILING, *AREA, *MODEL, METHOD, *FEATURE_RECIPE, *DEEPCLUSTER,
            *stats_inputs("building footprints (any vector file and CRS): the building statistics per tile and "
                          "cluster as `stats` computes them, and the eta-squared of building coverage in the "
                          "manifest (per epoch for DeepCluster, where it also picks the epoch kept)"),
            Param("save_model", OUT_FILE, None, suffixes=(".pt",), advanced=True,
                  help="where to write the model (default OUT_model.pt)"),
            Param("resume", BOOL, False, help="continue an interrupted run (same parameters): DeepCluster from "
                                              "OUT_checkpoint.pt, a --dask run from the partitions it finished"),
            Param("quicklook", BOOL, True, negative_flag="--no-quicklook", help="skip the PNG quicklook"),
            DASK, *CACHE, OVERWRITE, PROGRESS),
    rules=(*STATS_RULES, SMALLER_OVERLAP),
    outputs=(Output("gpkg", "{out}", "layer 'tiles': tile_id, row, col, cluster, clust_dist, pc1, pc2, valid_frac "
                                     "(+ the statistics and a 'clusters' layer with --buildings/--roads/...)"),
             Output("tif", "{stem}_clusters.tif", f"cluster map, one pixel per tile ({CLUSTER_NODATA} = skipped "
                                                  "tile), with a colour table" + ONE_GRID),
             Output("manifest", "{stem}_manifest.json", "parameters, versions, seed, device, timings, input "
                                                        "checksum; for DeepCluster the loss, NMI and eta-squared "
                                                        "per epoch"),
             Output("quicklook", "{stem}_quicklook.png", "the image with the clusters over it" + ONE_GRID,
                    when="quicklook"),
             Output("model", "{stem}_model.pt", "the fitted model: CNN weights, PCA, centroids, tiling (for "
                                                "`predict`)", when="!save_model"),
             *STATS_OUTPUTS),
    stages=CLUSTER_STAGES,
    examples=("python -m engine cluster image.tif --out run.gpkg --k 8 --tile-size 64px",
              "python -m engine cluster image.tif --out run.gpkg --k 6 --tile-size 20m --overlap 5m "
              "--backbone efficientnet_lite0 --weights imagenet --seed 1",
              "python -m engine cluster image.tif --out deep.gpkg --k 6 --method deepcluster --epochs 5 "
              "--buildings footprints.gpkg"),
    notes="OUT_checkpoint.pt is written by DeepCluster while training and kept when a run is interrupted "
          "(--resume).")

PREDICT = Tool(
    "predict", "assign another raster's tiles to a saved model's clusters",
    "Cut RASTER into tiles as MODEL's run did and put every tile into MODEL's clusters (another city, another "
    "date).",
    params=(Param("model", FILE, required=True, positional=True, suffixes=(".pt",), label="Cluster model",
                  help="a model file written by cluster (OUT_model.pt)"),
            replace(RASTER_IN, help="the raster to assign" + STUDY_HELP), OUT_GPKG,
            Param("resample", BOOL, False, help="accept another resolution: tiles of the model's ground size "
                                                "resized to its pixels"),
            Param("res_tolerance", FLOAT, 0.1, minimum=0, maximum=1, open_max=True, advanced=True,
                  help="accepted difference in ground pixel size without --resample (0.1 = 10%%)"),
            Param("form", FILE, label=FORM_LABEL,
                  help="building footprints of this raster, or a building model written by train-seg (MODEL.pt) "
                       "that maps them: needed when the model was made with --form"),
            *AREA, *DEVICE,
            Param("quicklook", BOOL, True, negative_flag="--no-quicklook", help="skip the PNG quicklook"),
            DASK, Param("resume", BOOL, False, help="with --dask: continue an interrupted run from the partitions "
                                                    "it finished (same parameters)"),
            OVERWRITE, PROGRESS),
    rules=(RESUME_ON_DASK,),
    outputs=tuple(replace(o, help=o.help.replace(ONE_GRID, "")) for o in CLUSTER.outputs[:4]),
    stages=CLUSTER_STAGES,
    examples=("python -m engine predict run_model.pt other_city.tif --out other.gpkg",),
    notes="The raster must have the model's band count and about its ground resolution (within "
          "--res-tolerance); --resample cuts tiles of the model's ground size and resizes them instead.")

SWEEP = Tool(
    "sweep", "cluster over a range of K and tile sizes, with agreement metrics and plots",
    "Sensitivity analysis: cluster RASTER for every K and tile size, make cluster ids consistent across K, and "
    "measure how clusters change.",
    params=(RASTER_IN, OUT_GPKG,
            Param("k", K_LIST, "2..12", label="K values",
                  help=f"K values: '2..12', '2,4,6' or '2..6,8,12', each {MIN_K} to {MAX_K}"),
            Param("tile_size", SIZES, "32px,64px,128px", minimum=MIN_TILE_PX, label="Tile sizes",
                  help="comma-separated tile sizes in px or m"),
            *TILING[1:], *MODEL, METHOD, *FEATURE_RECIPE[:2], *DEEPCLUSTER,
            Param("resume", BOOL, False, help="finish an interrupted sweep (same parameters); with --dask also "
                                              "from the partitions of the tile size it was on"),
            DASK,
            *stats_inputs("building footprints: the building statistics on every tile-size layer, and the "
                          "eta-squared of each statistic for every tile size and K (SWEEP_stats_eta.csv/.png)"),
            *CACHE, OVERWRITE, PROGRESS,
            Param("n_init", INT, 10, minimum=1, cli=False, help="k-means restarts")),
    rules=(*STATS_RULES, SMALLER_OVERLAP),
    outputs=(Output("gpkg", "{out}", "one layer per tile size (tiles_32px, tiles_64px, ...) with a column per K "
                                     "(k2 ... k12); cluster ids are matched across K"),
             Output("metrics_csv", "{stem}_metrics.csv", "per tile size and K: silhouette, Calinski-Harabasz, "
                                                         "Davies-Bouldin, NMI/ARI with the previous K, agreement "
                                                         "across tile sizes"),
             Output("metrics_png", "{stem}_metrics.png", "the metrics plotted"),
             Output("manifest", "{stem}_manifest.json", "parameters, versions, what is complete and what is "
                                                        "missing"),
             Output("lineage", "{stem}_lineage_{tag}.png", "how clusters split as K grows", per_size=True),
             Output("pca", "{stem}_pca_{tag}.png", "the tiles on their first two principal components",
                    per_size=True),
             Output("stats_eta_csv", "{stem}_stats_eta.csv", "eta-squared per statistic, tile size and K",
                    when="stats"),
             Output("stats_eta_png", "{stem}_stats_eta.png", "the eta-squared plotted", when="stats")),
    examples=("python -m engine sweep image.tif --out sweep.gpkg --k 2..12 --tile-size 32px,64px,128px",))

STATS_TOOL = Tool(
    "stats", "statistics per tile and per cluster of a run (buildings, roads, NDVI, people)",
    "Add urban-form statistics to the tiles of RUN.gpkg, write its 'clusters' layer (per-cluster profile), the "
    "eta-squared table (RUN_stats.csv) and profile plots.",
    params=(Param("run", FILE, required=True, positional=True, suffixes=(".gpkg",), label="Run GeoPackage",
                  help="a run's GeoPackage (from cluster or predict)"),
            *stats_inputs("building footprints (any vector file and CRS): bldg_count, bldg_area, bldg_cov, "
                          "bldg_mean, bldg_orien per tile"),
            Param("layer", TEXT, "tiles", cli=False, help="the run's tile layer"),
            Param("label", TEXT, "cluster", cli=False, help="the column of cluster ids"),
            replace(OVERWRITE, help="recompute statistics the run already has"),
            replace(DASK, help="compute the building statistics in partitions of tiles on Dask: 'local:N' starts "
                               "N worker processes here, 'tcp://host:8786' uses a running scheduler whose workers "
                               "see the input files; same results as one process; the dashboard link is printed "
                               "on stderr"),
            Param("resume", BOOL, False, help="with --dask: continue an interrupted run from the partitions of "
                                              "footprints it finished (same inputs)"),
            PROGRESS),
    rules=(*STATS_RULES, RESUME_ON_DASK,
           Rule("any_of", ("buildings", "roads", "population", "nir_band"),
                "Give at least one input: building footprints, road lines, a population raster or a "
                "near-infrared band.")),
    outputs=(Output("gpkg", "{out}", "the run, with the statistics on its tiles and a 'clusters' layer"),
             Output("manifest", "{stem}_manifest.json", "the run's manifest, with the statistics"),
             *(replace(o, when=None) for o in STATS_OUTPUTS)),
    output_param="run")

EXPORT = Tool(
    "export", "a run's layers as Shapefile, GeoPackage or CSV",
    "Write every layer of RUN.gpkg to DIR as one file per layer.",
    params=(Param("run", FILE, required=True, positional=True, suffixes=(".gpkg",), label="Run GeoPackage",
                  help="a run's GeoPackage"),
            Param("format", CHOICE, "shp", choices=EXPORT_FORMATS, label="Format",
                  help="shp (with .prj and UTF-8 .cpg), gpkg, or csv (no geometry)"),
            Param("out", OUT_FOLDER, required=True, label="Output folder", help="output folder"),
            replace(OVERWRITE, help="replace existing files")),
    output_param=None)

TRAIN_SEG = Tool(
    "train-seg", "train a building segmentation model (U-Net) from footprints",
    "Rasterise FOOTPRINTS onto RASTER and train a U-Net on chips of the labelled area, with validation on "
    "spatially separate blocks.",
    params=(RASTER_IN,
            Param("buildings", VECTOR, required=True, label="Building footprints",
                  help="building footprints (any vector file and CRS)"),
            Param("out", OUT_FILE, required=True, suffixes=(".pt", ".pth"), label="Model file",
                  help="the model file to write (.pt)"),
            Param("encoder", CHOICE, defaults.DEFAULT_SEG_ENCODER, choices=defaults.SEG_ENCODERS,
                  label="U-Net encoder", help="U-Net encoder"),
            replace(WEIGHTS, help=f"'imagenet' (the encoder's ImageNet weights: packaged for {_OFFLINE}, from "
                                  "the local torch cache for the others; nothing is downloaded), 'none' (random), "
                                  "or a state-dict file"),
            Param("chip", INT, None, minimum=SEG_CHIP_MULTIPLE, multiple_of=SEG_CHIP_MULTIPLE, label="Chip size",
                  unit="px", help=f"chip side in px, a multiple of {SEG_CHIP_MULTIPLE} (default: the largest of "
                                  f"{', '.join(map(str, defaults.SEG_AUTO_CHIPS))} px that leaves the labelled area "
                                  f"at least {defaults.SEG_AUTO_CHIP_CELLS} chips)"),
            Param("epochs", INT, None, minimum=1, maximum=MAX_EPOCHS, label="Epochs",
                  help="training epochs (default 10 without --minutes)"),
            Param("minutes", FLOAT, None, minimum=0, open_min=True, label="Time budget", unit="min",
                  help="training time budget instead of --epochs"),
            Param("val_fraction", FLOAT, 0.2, minimum=0, maximum=1, open_min=True, open_max=True,
                  label="Validation share", help="share of blocks held out"),
            Param("lr", FLOAT, 1e-3, minimum=0, open_min=True, maximum=10, advanced=True,
                  help="AdamW learning rate, cosine decay"),
            Param("encoder_lr", FLOAT, None, minimum=0, maximum=1, advanced=True,
                  help="the encoder's learning rate as a share of --lr (default 0.1 with pretrained weights, "
                       "1 from scratch)"),
            Param("chips_per_epoch", INT, None, minimum=1, advanced=True,
                  help="chips per epoch (default one per labelled training cell, at least 256)"),
            Param("label_area", VECTOR, label="Labelled area",
                  help="polygons of the mapped area (default: the footprints' extent)"),
            BANDS_P, replace(SEED, help="random seed"), *DEVICE[:2],
            Param("batch_size", INT, 8, minimum=2, advanced=True, help="chips per training batch"),
            Param("resume", BOOL, False, help="continue from the checkpoint next to --out"),
            replace(OVERWRITE, help="replace an existing model file"), PROGRESS,
            Param("threads", INT, None, minimum=1, cli=False, help="torch threads (default: torch's)")),
    outputs=(Output("model", "{out}", "the U-Net, its encoder, chip size, bands and normalisation"),
             Output("checkpoint", CHECKPOINT, "the last epoch, while training (for --resume)"),
             Output("manifest", "{stem}_manifest.json", "parameters, split, loss and validation IoU per epoch")),
    examples=("python -m engine train-seg image.tif --buildings footprints.gpkg --out buildings.pt --epochs 10",))

SEGMENT = Tool(
    "segment", "map every building of a raster with a trained model",
    "Sliding-window inference with blended overlaps, streamed block by block; writes OUT_mask.tif (and "
    "OUT_prob.tif) and the buildings layer of OUT.gpkg.",
    params=(RASTER_IN,
            Param("model", FILE, required=True, suffixes=(".pt", ".pth"), label="Segmentation model",
                  help="a model file from train-seg"),
            replace(OUT_GPKG, help="output GeoPackage (.gpkg): the buildings layer; the masks go next to it"),
            Param("overlap", INT, None, minimum=0, unit="px", label="Window overlap",
                  help="overlap between windows in px (default a quarter of the model's chip: 64 for 256)"),
            Param("threshold", FLOAT, None, minimum=0, maximum=1, open_min=True, open_max=True,
                  label="Probability threshold", help="probability threshold (default: the one the training "
                  "chose on its validation blocks, 0.5 for older models)"),
            Param("probability", BOOL, False, help="also write OUT_prob.tif"),
            Param("tta", BOOL, False, label="Test-time flips",
                  help="average the probabilities of every window and its three flips (4x the model's time)"),
            Param("min_area", FLOAT, 4.0, minimum=0, unit="m2", label="Smallest building",
                  help="drop buildings and holes below this area in m2"),
            Param("simplify", FLOAT, 0.5, minimum=0, unit="m", label="Simplify", help="simplification tolerance "
                                                                                       "in m"),
            Param("regularize", BOOL, False, help="square building outlines to right angles"),
            Param("resample", BOOL, False, help="accept another resolution than the model's"),
            *DEVICE[:2], Param("batch_size", INT, None, minimum=1, advanced=True,
                               help="windows per batch (default: from the chip size and the device)"),
            replace(DASK, help="run the inference in bands of rows on Dask: 'local:N' starts N worker processes "
                               "here, 'tcp://host:8786' uses a running scheduler whose workers see the raster, the "
                               "model and the cache folder; same results as one process; the dashboard link is "
                               "printed on stderr"),
            Param("resume", BOOL, False, help="with --dask: continue an interrupted run from the bands it "
                                              "finished (same parameters)"),
            OVERWRITE, PROGRESS,
            Param("chip", INT, None, minimum=SEG_CHIP_MULTIPLE, multiple_of=SEG_CHIP_MULTIPLE, cli=False,
                  help="window side (default: the model's training chip)"),
            Param("block", INT, 512, minimum=1, cli=False, help="polygonisation block (px)")),
    rules=(RESUME_ON_DASK,),
    outputs=(Output("gpkg", "{out}", "layer 'buildings': one polygon per building with its area"),
             Output("mask", "{stem}_mask.tif", "building mask (1 = building)"),
             Output("prob", "{stem}_prob.tif", "building probability", when="probability"),
             Output("manifest", "{stem}_manifest.json", "parameters, model, timings")),
    examples=("python -m engine segment image.tif --model buildings.pt --out buildings.gpkg",))

EVALUATE_SEG = Tool(
    "evaluate-seg", "pixel and object scores of predicted buildings against footprints",
    "Pixel IoU, accuracy, precision, recall, F1 and object-level F1 (matched at IoU >= 0.5) of a mask GeoTIFF or "
    "a buildings layer; prints JSON.",
    params=(Param("pred", FILE, required=True, label="Predicted buildings",
                  help="OUT_mask.tif or OUT.gpkg from segment"),
            Param("truth", VECTOR, required=True, label="True footprints",
                  help="true footprints (any vector file and CRS)"),
            Param("area", VECTOR, label="Area", help="only inside these polygons")),
    output_param=None, quick=True)

PROBE = Tool(
    "probe", "tile count of a raster and tiling (JSON); with --speed, model tiles/s",
    "Check a raster and tiling without running them and print what a run would do as JSON (exit 2 with the "
    "message on bad input).",
    params=(RASTER_IN, TILE_SIZE, OVERLAP, EDGE, BANDS_P, MODEL[0], WEIGHTS, *DEVICE, *AREA,
            Param("speed", BOOL, False, help="also time the model on random tiles (imports torch)"),
            Param("plan", BOOL, False, help="estimate a --dask run of cluster: tile count, feature store size, "
                                            "memory per worker and time for "
                                            f"{', '.join(map(str, PLAN_WORKERS))} workers, from one partition "
                                            "of the raster timed here (or on a worker of --dask)"),
            replace(DASK, help="with --plan: time the partition on a worker of this Dask cluster ('local:N' or "
                               "'tcp://host:port')")),
    rules=(SMALLER_OVERLAP,),
    output_param=None, quick=True)

CHECK = Tool(
    "check", "report the Python, torch and available devices as JSON",
    "Whether this Python can run the engine: its packages, torch's devices and, with --backbone, where that "
    "backbone's ImageNet weights are.",
    params=(Param("backbone", CHOICE, None, choices=defaults.BACKBONES,
                  help="also check that this backbone's ImageNet weights are here"),),
    output_param=None, quick=True)

# -- the analyses (issue 15) ---------------------------------------------------------------------------------------
MAX_EXAMPLES = 64                            # example tiles per gallery: more makes a report no one scrolls through

REPORT = Tool(
    "report", "a self-contained HTML report of a run: example tiles, sizes, profiles and plots per cluster",
    "Write one HTML file (images embedded, opens offline) that explains RUN.gpkg: per cluster its size, a gallery "
    "of example tiles (closest to the centre and random ones, cut from the run's raster), its statistics profile "
    "and eta-squared when the run has statistics, and a map thumbnail; for a sweep its lineage and metrics plots; "
    "for a change run its transitions and the most changed tiles; for a similar run the query and the most similar "
    "tiles; for a classify run its cross-validation scores, confusion matrix and a gallery per class.",
    params=(Param("run", FILE, required=True, positional=True, suffixes=(".gpkg",), label="Run GeoPackage",
                  help="a run's GeoPackage (from cluster, predict, sweep, change, similar or classify), with its "
                       "manifest next to it"),
            Param("out", OUT_FILE, required=True, suffixes=(".html",), label="Report",
                  help="the HTML file to write (.html)"),
            Param("examples", INT, 8, minimum=1, maximum=MAX_EXAMPLES, label="Example tiles",
                  help="tiles in each gallery: this many closest to the cluster centre and as many at random"),
            replace(SEED, help="random seed of the random examples"),
            OVERWRITE, PROGRESS),
    outputs=(Output("html", "{out}", "one self-contained HTML file: galleries, sizes, profiles, plots"),),
    output_param="out",
    stages=REPORT_STAGES,
    examples=("python -m engine report run.gpkg --out run_report.html",),
    notes="The galleries are cut from the raster the run's manifest names; a raster that has moved leaves them "
          "out with a warning.")

MODEL_IN = PREDICT.param("model")
CHANGE = Tool(
    "change", "change between two dates: both assigned to one saved model's clusters on one tile grid",
    "Cut RASTER_BEFORE as MODEL's run did, put RASTER_AFTER on the same tile grid (warped when its CRS, resolution "
    "or extent differ), assign the tiles of both dates to MODEL's clusters and measure how far each tile moved in "
    "the model's feature space.",
    params=(MODEL_IN,
            Param("raster_before", RASTER, required=True, positional=True, label="Raster at the first date",
                  study=True, help="the earlier image (a raster, a VRT mosaic or a folder of rasters); its tile "
                                   "grid is the one both dates are cut on"),
            Param("raster_after", RASTER, required=True, positional=True, label="Raster at the second date",
                  study=True, help="the later image of the same place (a raster, a VRT mosaic or a folder of "
                                   "rasters; any CRS and resolution: warped onto the first date's grid)"),
            OUT_GPKG, *PREDICT.params[3:5], *AREA, *DEVICE, OVERWRITE, PROGRESS),
    outputs=(Output("gpkg", "{out}", "layer 'tiles': tile_id, row, col, clust_a, clust_b, changed (0/1), chg_score "
                                     "(feature distance, 0 to 2), dist_a, dist_b"),
             Output("transitions_csv", "{stem}_transitions.csv", "tiles from each cluster to each cluster (rows: "
                                                                 "first date)"),
             Output("heatmap", "{stem}_transitions.png", "the transition matrix as a heatmap"),
             Output("alluvial", "{stem}_alluvial.png", "alluvial plot of the transitions"),
             Output("style", "{stem}_change.qml", "QGIS style of the tiles: graduated by chg_score, changed tiles "
                                                  "outlined"),
             Output("manifest", "{stem}_manifest.json", "parameters, model, both inputs, grid, changed share, "
                                                        "transitions, timings")),
    stages=CHANGE_STAGES,
    examples=("python -m engine change run_model.pt city_2019.tif city_2023.tif --out change.gpkg",),
    notes="Both rasters need the model's band count; the first must have about the model's resolution (or "
          "--resample). Tiles valid on one date only are left out.")

# the model and cache options of a tool that describes tiles with a fixed CNN (no clustering: no PCA options)
FEATURES = (MODEL[0], WEIGHTS, *DEVICE, SEED, *CACHE)
LIVE_DIMS = 128                              # similar: principal axes kept for the dock's live similarity

SIMILAR = Tool(
    "similar", "find the tiles that look like a few query tiles or places",
    "Cosine similarity of every tile's CNN features (centred on the raster's mean tile) to the mean of the query "
    "tiles': tile ids of the raster's grid, or points and polygons of a vector file in any CRS.",
    params=(RASTER_IN, OUT_GPKG,
            Param("query", VECTOR, label="Query places",
                  help="points or polygons (any vector file and CRS) on the tiles to look for: the tile holding "
                       "each point, the tiles whose centre each polygon holds"),
            Param("query_tiles", TEXT, label="Query tile ids",
                  help="tile ids of the raster's grid (tile_id of a run's tiles layer), comma-separated: '12,40'"),
            Param("top", INT, 20, minimum=1, label="Top tiles", help="how many of the most similar tiles to list "
                                                                    "(OUT_top.csv)"),
            *TILING, *AREA, *FEATURES, OVERWRITE, PROGRESS),
    rules=(Rule("one_of", ("query", "query_tiles"), "Give the query: places (--query) or tile ids "
                                                    "(--query-tiles), one of the two."), SMALLER_OVERLAP),
    outputs=(Output("gpkg", "{out}", "layer 'tiles': tile_id, row, col, similarity (-1 to 1), rank (1 = most "
                                     "similar; 0 = a query tile), query (0/1)"),
             Output("tif", "{stem}_similarity.tif", "similarity map, one pixel per tile (NaN = no tile)"),
             Output("top_csv", "{stem}_top.csv", "the most similar tiles: rank, tile_id, row, col, similarity, "
                                                 "centre x and y"),
             Output("live", "{stem}_live.npz", "the tiles' features for live updates in the dock: tile_id and the "
                                               f"centred features on their {LIVE_DIMS} principal axes (float32)"),
             Output("manifest", "{stem}_manifest.json", "parameters, query tiles, features, timings")),
    stages=SIMILAR_STAGES,
    examples=("python -m engine similar image.tif --query-tiles 12,40 --out similar.gpkg",
              "python -m engine similar image.tif --query markets.gpkg --top 50 --out markets_like.gpkg"),
    notes="Features come from the same cache as cluster's: a raster clustered with the same tiling and backbone "
          "is not described twice.")

CLASSIFY = Tool(
    "classify", "classify tiles from a few labelled places (CNN features, spatial cross-validation)",
    "Learn classes from a few labelled points or polygons (the tiles they lie on) with a small classifier on the "
    "CNN features, measure it by spatial cross-validation (held-out blocks of tiles, no training tile next to a "
    "held-out one), and give every tile a class and a probability per class. With --model, apply a classifier "
    "saved by an earlier run to this raster instead (its tiling and CNN).",
    params=(RASTER_IN, OUT_GPKG,
            Param("labels", VECTOR, label="Labelled places",
                  help=f"points or polygons (any vector file and CRS) with a class each, at least {MIN_LABELS} per "
                       "class"),
            Param("field", TEXT, label="Class field",
                  help=f"the labels' attribute that names the class (text, or codes: at most {MAX_CLASSES} "
                       "distinct values)"),
            Param("model", FILE, suffixes=(".pt",), label="Saved classifier",
                  help="a classifier written by classify (OUT_classifier.pt): apply it instead of training"),
            Param("classifier", CHOICE, CLASSIFIERS[0], choices=CLASSIFIERS, label="Classifier",
                  help="logreg: logistic regression on standardised features; forest: a random forest"),
            Param("folds", INT, 5, minimum=2, maximum=20, label="Cross-validation folds",
                  help="spatial cross-validation folds (blocks of tiles dealt to folds)"),
            Param("block", INT, None, minimum=1, advanced=True, label="Block side", unit="tiles",
                  help="side of the cross-validation blocks in tiles (default: about four blocks per fold)"),
            Param("finetune", BOOL, False, advanced=True, label="Fine-tune the last CNN block",
                  help="also train the CNN's last block (with a linear head, on flipped, rotated, shifted and "
                       "colour-jittered crops of the labelled tiles, a few epochs) before the classifier; each "
                       "cross-validation fold tunes on its training blocks only. 2.5-4.5 times slower; at 20 "
                       "labels it did not beat the ImageNet features on average (README, Analyses)"),
            *TILING, *AREA, *FEATURES, OVERWRITE, PROGRESS),
    rules=(Rule("one_of", ("labels", "model"), "Give labelled places (--labels, to train) or a saved classifier "
                                               "(--model, to apply), one of the two."),
           Rule("requires", ("labels", "field"), "Labelled places need their class field: give --field."),
           SMALLER_OVERLAP),
    outputs=(Output("gpkg", "{out}", "layer 'tiles': tile_id, row, col, class_id, class, prob (of that class), "
                                     "p_0, p_1, ... (one per class); layer 'classes': class_id, class, labels, "
                                     "precision, recall"),
             Output("tif", "{stem}_classes.tif", f"class map, one pixel per tile ({CLUSTER_NODATA} = no tile)"),
             Output("cv_csv", "{stem}_cv.csv", "spatial cross-validation: per class labels, precision, recall, F1; "
                                               "accuracy", when="labels"),
             Output("confusion_csv", "{stem}_confusion.csv", "confusion matrix of the cross-validation",
                    when="labels"),
             Output("confusion_png", "{stem}_confusion.png", "the confusion matrix plotted", when="labels"),
             Output("classifier", "{stem}_classifier.pt", "the classifier: training features and classes, CNN "
                                                          "(tuned with --finetune), tiling (for --model)",
                    when="labels"),
             Output("manifest", "{stem}_manifest.json", "parameters, labels, folds, scores, timings")),
    stages=CLASSIFY_STAGES,
    examples=("python -m engine classify image.tif --labels labels.gpkg --field class --out classes.gpkg",
              "python -m engine classify other.tif --model classes_classifier.pt --out other_classes.gpkg"),
    notes="With --model, the tiling, bands and CNN are the saved classifier's (the tiling options are ignored).")

TOOLS: dict[str, Tool] = {t.name: t for t in (CLUSTER, PREDICT, SWEEP, STATS_TOOL, EXPORT, TRAIN_SEG, SEGMENT,
                                             EVALUATE_SEG, PROBE, CHECK, REPORT, CHANGE, SIMILAR, CLASSIFY)}
