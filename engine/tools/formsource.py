"""What ``--form`` takes: building footprints, or a building model whose mapped buildings serve as footprints.

``cluster --form`` and ``predict --form`` join the morphometrics of each tile's
buildings (``engine.stats.form``) to its CNN features. The buildings come from
a vector file (surveyed or OSM footprints, a ``segment`` output), or, where
there are none, from a building segmentation model (the MODEL.pt ``train-seg``
writes): the raster's buildings are then mapped with it by the ``segment``
tool itself (``engine.tools.segment.run``: the same streamed inference,
polygons and atomic outputs), and that buildings layer is the footprints.

The mapped layer is kept in the feature cache folder, under
``buildings/<key>.gpkg`` (with the mask and the manifest ``segment`` writes
beside it), the key made of the raster's SHA-256, the model file's SHA-256
and the segmentation settings: a second run on the same raster with the same
model (another K, another weight, ``predict`` on it) reuses it without
segmenting again. ``--no-cache`` maps into the run's temporary folder instead.
The layers count against the feature cache's size budget (``engine.io.cache``):
a new one may remove the least recently used features and layers; a reused one
is marked used.

:func:`check_form` comes before any work: a ``.pt`` that is not a building
model (a cluster model, a state dict, a damaged file) or a model made for
another band count or ground resolution than the raster's is refused there,
naming ``--form`` and the fix. :func:`form_footprints` then gives the
footprints file and the record that the manifest and the model file keep.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..contract import problems as P
from ..errors import BadInput
from ..io.cache import BUILDINGS as CACHE_FOLDER     # under the feature cache folder

FLAG = "--form"
PARAM = "form"
FIX = (f"{FLAG} takes building footprints (a vector file, any CRS) or a building model written by `train-seg` "
       "(MODEL.pt)")
# how the buildings of a --form model are mapped: the segment tool's defaults (threshold None: the one the model
# chose on its validation blocks), in the cache key so that a change here maps them again
SEGMENT_SETTINGS = {"threshold": None, "min_area": 4.0, "simplify": 0.5, "regularize": False}
VERSION = 2


def is_building_model(value) -> bool:
    """Whether a ``--form`` value names a model file (else: a vector file of footprints)."""
    from ..segmentation.modelfile import is_model_file

    return isinstance(value, (str, os.PathLike)) and bool(os.fspath(value)) and is_model_file(value)


def _refuse(message: str, path) -> BadInput:
    code = P.BAD_FORMAT if os.path.exists(path) else P.NOT_FOUND
    return BadInput(message, param=PARAM, code=code)


def check_form(value, raster: str) -> "dict | None":
    """Before any work: for a building model given as ``--form``, its meta (encoder, bands, resolution) once it
    has loaded whole and suits ``raster``'s bands and ground resolution; None for footprints (a vector file,
    checked by ``engine.tools.check_vector_inputs``). BadInput naming --form and the fix otherwise."""
    if not is_building_model(value):
        return None
    from ..segmentation.infer import Reader
    from ..segmentation.modelfile import load_seg_model

    path = os.fspath(value)
    try:
        _, meta = load_seg_model(path)
    except BadInput as exc:
        text = str(exc)
        text = text[len("model "):] if text.startswith("model ") else text
        # "... not an Urban Form Mapper segmentation model. Give the MODEL.pt written by `train-seg`."
        text = text.split(" Give the MODEL.pt")[0].rstrip()
        raise _refuse(f"{FLAG} {text} {FIX}; give one of those.", path) from None
    try:
        reader = Reader(str(raster), meta, resample=False)
    except BadInput as exc:          # another band count or resolution: the reason, without segment's fix
        reason = str(exc).split(";")[0]
        fix = ("map the buildings with `segment --resample` and give its buildings layer as --form, or train a "
               "model at this resolution with `train-seg`") if "m pixels" in reason else \
            "give a building model trained on imagery with the same bands, or this raster's footprints"
        raise _refuse(f"{FLAG} {path!r} is a building model that does not suit this raster: {reason}; {fix}.",
                      path) from None
    reader.close()
    return meta


def buildings_key(raster_sha256: str, model_sha256: str) -> str:
    """The cache key of a raster's buildings mapped by one model file."""
    ident = {"raster": raster_sha256, "model": model_sha256, "segment": SEGMENT_SETTINGS, "v": VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def form_footprints(value, raster: str, *, raster_sha256: str, cache_dir: "str | Path", device: str = "auto",
                    precision: str = "auto", progress=None) -> tuple[str, dict]:
    """(the footprints file the form features are computed from, its record for the manifest and the model).

    Footprints are used as given. A building model maps the raster's buildings (``segment``, whole raster)
    into ``cache_dir/buildings/KEY.gpkg`` unless an earlier run left them there (``cache_hit``); the
    segmentation's progress goes to ``progress``'s ``scan`` stage, the tiles' form being part of the scan.
    """
    if not is_building_model(value):
        return os.fspath(value), {"kind": "footprints", "path": os.path.abspath(value)}
    from ..io import cache, sha256_file
    from .segment import SegmentParams, output_paths
    from .segment import run as run_segment

    budget = cache.budget_bytes()           # a bad URBANFORM_CACHE_MAX_GB stops here, before the mapping
    model = os.fspath(value)
    model_sha = sha256_file(model)
    key = buildings_key(raster_sha256, model_sha)
    folder = Path(cache_dir) / CACHE_FOLDER
    out = folder / f"{key}.gpkg"
    paths = output_paths(out, probability=False)
    record = {"kind": "building_model", "path": os.path.abspath(model), "sha256": model_sha,
              "buildings": str(out), "cache_key": key, "segment": dict(SEGMENT_SETTINGS)}
    say = progress or (lambda *a, **k: None)
    done = None
    if all(p.is_file() for p in paths.values()):       # segment commits the layer, mask and manifest together
        try:
            done = json.loads(paths["manifest"].read_text())
        except (OSError, ValueError):
            done = None
    if done is not None:
        cache.touch(*paths.values())
        say("scan", 1, 1, f"buildings mapped by {Path(model).name} reused from the cache")
        return str(out), _mapped({**record, "cache_hit": True}, done, model, raster)
    folder.mkdir(parents=True, exist_ok=True)

    def relay(stage, done=0, total=0, message="", **fields):
        if stage in ("segment", "write"):
            say("scan", done, total, f"mapping buildings with {Path(model).name}: {message}".rstrip(": "))
        else:
            say(stage, done, total, message, **fields)

    # overwrite: only what no finished run left whole (a layer without its manifest) is replaced
    manifest = run_segment(SegmentParams(str(raster), model, str(out), device=device, precision=precision,
                                         overwrite=True, **SEGMENT_SETTINGS), relay)
    removed = cache.trim(cache_dir, budget)  # the new layer counts against the feature cache's budget
    if removed:
        say("scan", 1, 1, cache.trimmed_message(removed, budget))
    return str(out), _mapped({**record, "cache_hit": False}, manifest, model, raster)


def _mapped(record: dict, manifest: dict, model: str, raster: str) -> dict:
    """The record of a mapped buildings layer; BadInput when the model found no building on the raster."""
    record.update(n_buildings=manifest.get("n_buildings"), model_meta=manifest.get("model_meta"))
    if not record["n_buildings"]:
        raise BadInput(f"{FLAG} {model!r} mapped no building on {raster!r}, so there is no form to join; give "
                       "this raster's footprints, or a building model trained on imagery like it.", param=PARAM,
                       code=P.BAD_FORMAT)
    return record
