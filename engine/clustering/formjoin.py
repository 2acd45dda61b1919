"""``--form``: the morphometrics of each tile's buildings joined to its CNN features, with a weight.

:class:`FormJoin` (scikit-learn contract; learned state ends in ``_``) scales
the CNN features to unit total variance and the form columns
(``engine.stats.form.FORM_COLUMNS``) to zero mean and a total variance of
``weight**2``, and puts them side by side; k-means (``KMeansTiles``: PCA, L2,
k-means) then sees both. ``weight`` 1 gives the two equal variance; 0 leaves
the clusters to the CNN. The fitted scales go into the model file, so that
``predict`` joins a new raster's features in the same way.
"""
from __future__ import annotations

import numpy as np


class FormJoin:
    """Join CNN features (n, d) and form columns (n, f): ``[cnn * cnn_scale_, (form - form_mean_) *
    form_scale_]``."""

    def __init__(self, weight: float = 1.0, chunk: int = 8192):
        self.weight = weight
        self.chunk = chunk

    def fit(self, cnn, form) -> "FormJoin":
        n, d = cnn.shape
        s1 = np.zeros(d)
        s2 = np.zeros(d)
        for s in range(0, n, self.chunk):                     # total variance in chunks (cnn may be a memmap)
            block = np.asarray(cnn[s: s + self.chunk], dtype=np.float64)
            s1 += block.sum(0)
            s2 += (block ** 2).sum(0)
        total = float(np.maximum(s2 / n - (s1 / n) ** 2, 0).sum())
        form = np.asarray(form, dtype=np.float64)
        self.n_features_in_ = int(d)
        self.n_form_ = int(form.shape[1])
        self.cnn_scale_ = 1.0 / np.sqrt(total) if total > 0 else 1.0
        self.form_mean_ = form.mean(0)
        std = form.std(0)
        # a column constant on this raster carries nothing: scale 0 rather than dividing by 0
        self.form_scale_ = np.divide(float(self.weight) / np.sqrt(self.n_form_), std, out=np.zeros_like(std),
                                     where=std > 1e-12)
        return self

    def transform(self, cnn, form) -> np.ndarray:
        if not hasattr(self, "form_scale_"):
            raise RuntimeError("FormJoin is not fitted yet; call fit first.")
        cnn = np.asarray(cnn[:], dtype=np.float32) * np.float32(self.cnn_scale_)
        extra = (np.asarray(form, dtype=np.float64) - self.form_mean_) * self.form_scale_
        return np.concatenate([cnn, extra.astype(np.float32)], axis=1)

    def fit_transform(self, cnn, form) -> np.ndarray:
        return self.fit(cnn, form).transform(cnn, form)

    def get_state(self) -> dict:
        return {"weight": float(self.weight), "n_features_in_": self.n_features_in_, "n_form_": self.n_form_,
                "cnn_scale_": float(self.cnn_scale_), "form_mean_": self.form_mean_.tolist(),
                "form_scale_": self.form_scale_.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "FormJoin":
        self = cls(state["weight"])
        self.n_features_in_, self.n_form_ = int(state["n_features_in_"]), int(state["n_form_"])
        self.cnn_scale_ = float(state["cnn_scale_"])
        self.form_mean_ = np.asarray(state["form_mean_"], dtype=np.float64)
        self.form_scale_ = np.asarray(state["form_scale_"], dtype=np.float64)
        return self


def tile_form(tiled, rows, cols, footprints: str, name: str = "--form", warnings: "list | None" = None):
    """The form columns (n, f) of the tiles at (rows, cols) of ``tiled`` from the footprint file, computed in
    the working CRS; BadInput naming ``name`` when the file has no polygons or none overlaps the tiles."""
    import shapely

    from ..errors import BadInput
    from ..stats.form import form_features
    from ..stats.measures import read_buildings
    b = read_buildings(footprints, tiled.working_crs, name=name, warnings=warnings)
    corners = tiled.grid.corners(rows, cols)
    polys = shapely.polygons(np.concatenate([corners, corners[:, :1]], axis=1))
    if not shapely.STRtree(b.values).query(polys, predicate="intersects").size:
        raise BadInput(f"{name} {footprints!r}: no footprint overlaps the tiles of the raster; give the building "
                       "footprints of this raster's area (any CRS).", param=name.lstrip("-").replace("-", "_"))
    return form_features(polys, b.values).to_numpy()
