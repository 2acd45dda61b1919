"""Writing outputs safely: atomic file sets, GeoPackage and GeoTIFF writers, manifests.

Modules: ``atomic`` (the one atomic writer: partial paths, OutputSet, NpyFile; remove_folder),
``cache`` (the feature cache's folder and its size budget: the least recently used feature files and
mapped buildings go first),
``lock`` (one writer per output: OutputLock, taken before the OutputSet),
``writers`` (GeoPackage layers and cluster GeoTIFFs), ``manifest`` (checksums,
versions, the JSON manifest), ``vectors`` (the one reader of vector inputs:
check_vector before work, read_vector; BadInput naming the input). The public names stay importable from ``engine.io``.
"""
from .atomic import (
                     NpyFile,
                     OutputSet,
                     atomic_path,
                     partial_path,
                     promote,
                     remove_partial,
                     write_bytes_atomic,
                     write_json_atomic,
                     write_text_atomic,
)
from .lock import OutputLock, lock_outputs
from .manifest import sha256_file, versions, write_json
from .writers import GPKG_OPTIONS, write_cluster_tif, write_gpkg_chunks, write_value_tif

__all__ = ["GPKG_OPTIONS", "NpyFile", "OutputLock", "OutputSet", "atomic_path", "lock_outputs", "partial_path",
           "promote", "remove_partial", "sha256_file", "versions", "write_bytes_atomic", "write_cluster_tif",
           "write_gpkg_chunks", "write_json", "write_json_atomic", "write_text_atomic", "write_value_tif"]
