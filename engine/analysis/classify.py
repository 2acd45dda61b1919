"""Few-shot tile classification on CNN features (the ``classify`` tool's analysis).

An analyst labels a few places; each label names the tile(s) it lies on, and a small classifier (logistic
regression or a random forest, scikit-learn) learns the classes from those tiles' features: transfer learning
with the CNN's ImageNet features as they are. How well it does is measured by spatial cross-validation: tiles
are grouped in square blocks, whole blocks are held out, and no training tile touches a held-out tile, so the
score is not flattered by a tile's neighbour (which looks like it) being in the training set.

``TileClassifier`` is a scikit-learn style estimator (learned state ends in ``_``); the rest are pure
functions returning named Series and DataFrames.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..contract.limits import MAX_CLASSES, MIN_LABELS
from ..contract.tools import CLASSIFIERS
from ..errors import BadInput

FORMAT = "urbanform-tile-classifier"
VERSION = 1


class TileClassifier:
    """Standardised features + logistic regression (``logreg``) or a random forest (``forest``).

    ``fit`` keeps the training features and labels (``X_``, ``y_``): the model file stores them with the
    settings, and loading refits (deterministic with the seed), so the file holds plain arrays only.
    """

    def __init__(self, classifier: str = CLASSIFIERS[0], seed: int = 0):
        self.classifier = classifier
        self.seed = seed

    def _estimator(self):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import Normalizer, StandardScaler

        if self.classifier == CLASSIFIERS[1]:
            return RandomForestClassifier(n_estimators=300, random_state=self.seed, n_jobs=1,
                                          class_weight="balanced")
        if self.classifier == CLASSIFIERS[0]:
            return make_pipeline(Normalizer(), StandardScaler(), LogisticRegression(C=0.01, max_iter=2000,
                                                                                    class_weight="balanced"))
        raise ValueError(f"classifier {self.classifier!r} is not one of {', '.join(CLASSIFIERS)}")

    def fit(self, X, y) -> "TileClassifier":
        self.X_ = np.asarray(X, dtype=np.float32)
        self.y_ = np.asarray(y, dtype=np.int64)
        self.classes_ = np.unique(self.y_)
        self.model_ = self._estimator().fit(self.X_, self.y_)
        return self

    def predict_proba(self, X, n_classes: int | None = None) -> np.ndarray:
        """(n, n_classes) probabilities; a class absent from the training tiles gets 0."""
        p = self.model_.predict_proba(np.asarray(X, dtype=np.float32))
        k = n_classes or int(self.classes_.max()) + 1
        out = np.zeros((len(p), k), dtype=np.float32)
        out[:, self.classes_] = p
        return out

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


# -- labels on tiles --------------------------------------------------------------------------------------------
def class_values(values, field: str, name: str = "--field", max_classes: int = MAX_CLASSES,
                 min_labels: int = MIN_LABELS) -> pd.Series:
    """The labels' classes as text, or BadInput: a numeric field with more than ``max_classes`` values (a
    measurement, not classes), a class with fewer than ``min_labels`` labels, or no labels at all."""
    values = pd.Series(values)
    values = values[values.notna()]
    if values.empty:
        raise BadInput(f"{name} {field!r} holds no value on any label; give the field that names each label's class.",
                       param="field", code="bad_format")
    distinct = values.unique()
    if pd.api.types.is_numeric_dtype(values) and len(distinct) > max_classes:
        raise BadInput(f"{name} {field!r} is numeric with {len(distinct)} distinct values: a measurement, not "
                       f"classes (at most {max_classes}); give a field of class names or codes.", param="field",
                       code="bad_format")
    if len(distinct) > max_classes:
        raise BadInput(f"{name} {field!r} has {len(distinct)} classes; at most {max_classes} can be learned from a "
                       "few labels.", param="field", code="bad_format")
    if len(distinct) < 2:
        raise BadInput(f"{name} {field!r} has one class only ({distinct[0]!r}); label at least two classes.",
                       param="field", code="bad_format")
    text = values.map(lambda v: str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer()
                      else str(v))
    counts = text.value_counts()
    few = counts[counts < min_labels]
    if len(few):
        listed = ", ".join(f"{k!r} ({v})" for k, v in few.items())
        raise BadInput(f"--labels: class(es) {listed} have fewer than {min_labels} labels; label at least "
                       f"{min_labels} places of every class (or drop the class).", param="labels", code="bad_format")
    text.name = "class"
    return text


def label_tiles(tile_polygons, geoms, classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tile positions, class per tile, labels that hit no tile): each point names the tile that holds it, each
    polygon the tiles whose centre it holds (or, smaller than a tile, the tiles it touches). A tile named with
    two classes is left out (its position is not returned)."""
    from .similar import tiles_at_places

    hits: dict[int, set] = {}
    missed = []
    for i, (geom, cls) in enumerate(zip(geoms, classes, strict=True)):
        found = tiles_at_places(tile_polygons, np.array([geom], dtype=object))
        if not len(found):
            missed.append(i)
        for t in found.tolist():
            hits.setdefault(t, set()).add(cls)
    single = sorted(t for t, c in hits.items() if len(c) == 1)
    return (np.array(single, dtype=np.int64), np.array([next(iter(hits[t])) for t in single], dtype=object),
            np.array(missed, dtype=np.int64))


# -- spatial cross-validation ---------------------------------------------------------------------------------------
def spatial_blocks(rows, cols, block: int) -> pd.Series:
    """The block of each tile: squares of ``block`` x ``block`` tiles, numbered row by row; named ``block``."""
    rows, cols = np.asarray(rows, int), np.asarray(cols, int)
    width = int(cols.max()) // block + 1 if len(cols) else 1
    return pd.Series((rows // block) * width + cols // block, name="block")


def auto_block(n_rows: int, n_cols: int, folds: int) -> int:
    """A block side (tiles) giving about four blocks per fold over the grid, at least 2."""
    return max(2, int(round(np.sqrt(n_rows * n_cols / (4.0 * folds)))))


def spatial_folds(rows, cols, block: int, folds: int, seed: int = 0, buffer: int = 1) -> list:
    """(train positions, test positions) per fold: the blocks are dealt to ``folds`` folds at random (seeded);
    a fold's test tiles are its blocks' tiles, its training tiles are all others except those within ``buffer``
    tiles (Chebyshev distance, on the grid) of a test tile. Folds without a test tile are dropped."""
    rows, cols = np.asarray(rows, int), np.asarray(cols, int)
    blocks = spatial_blocks(rows, cols, block).to_numpy()
    ids = np.unique(blocks)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(ids).tolist(), np.arange(len(ids)) % folds, strict=True))
    fold = np.array([fold_of[b] for b in blocks])
    out = []
    for f in range(folds):
        test = np.flatnonzero(fold == f)
        if not len(test):
            continue
        near = (np.abs(rows[:, None] - rows[test][None, :]) <= buffer) & \
               (np.abs(cols[:, None] - cols[test][None, :]) <= buffer)
        train = np.flatnonzero(~near.any(axis=1) & (fold != f))
        out.append((train, test))
    return out


def cross_validate(X, y, rows, cols, classifier: str, block: int, folds: int, seed: int = 0,
                   buffer: int = 1, features=None, progress=None) -> pd.Series:
    """Out-of-fold predicted class of every labelled tile (-1 where its fold had no training tile), named
    ``predicted``. ``features(train)``, when given, returns the features of every labelled tile learned from the
    fold's training tiles only (``--finetune``: each fold tunes its own CNN); else ``X`` serves every fold.
    ``progress(fold, folds)`` after each fold."""
    y = np.asarray(y)
    X = None if X is None else np.asarray(X)
    pred = np.full(len(y), -1, dtype=np.int64)
    splits = spatial_folds(rows, cols, block, folds, seed, buffer)
    for i, (train, test) in enumerate(splits):
        if len(np.unique(y[train])) < 2:
            continue
        if features is not None:
            X = np.asarray(features(train))
        model = TileClassifier(classifier, seed).fit(X[train], y[train])
        pred[test] = model.predict_proba(X[test], int(y.max()) + 1).argmax(axis=1)
        if progress is not None:
            progress(i + 1, len(splits))
    return pd.Series(pred, name="predicted")


def class_report(y_true, y_pred, names) -> pd.DataFrame:
    """Per class: labels (support), precision, recall, F1; the last row 'all' holds the accuracy in every score."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rows = []
    for k, name in enumerate(names):
        tp = int(((y_pred == k) & (y_true == k)).sum())
        predicted, actual = int((y_pred == k).sum()), int((y_true == k).sum())
        p = tp / predicted if predicted else float("nan")
        r = tp / actual if actual else float("nan")
        f1 = 2 * p * r / (p + r) if predicted and actual and (p + r) else float("nan")
        rows.append({"class": name, "labels": actual, "precision": p, "recall": r, "f1": f1})
    acc = float((y_true == y_pred).mean()) if len(y_true) else float("nan")
    rows.append({"class": "all", "labels": len(y_true), "precision": acc, "recall": acc, "f1": acc})
    return pd.DataFrame(rows).set_index("class")


def confusion(y_true, y_pred, names) -> pd.DataFrame:
    """Counts: rows = true class, columns = predicted class (a column 'none' for tiles no fold could predict)."""
    k = len(names)
    m = np.zeros((k, k + 1), dtype=np.int64)
    for t, p in zip(np.asarray(y_true), np.asarray(y_pred), strict=True):
        m[t, p if p >= 0 else k] += 1
    frame = pd.DataFrame(m, index=pd.Index(list(names), name="true"), columns=list(names) + ["none"])
    return frame if m[:, k].any() else frame.drop(columns="none")


def confusion_figure(matrix: pd.DataFrame, title: str = ""):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = matrix.to_numpy()
    k, j = counts.shape
    fig = Figure(figsize=(2 + 0.6 * j, 1.5 + 0.5 * k), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Greens", vmin=0, vmax=1)
    for a in range(k):
        for b in range(j):
            ax.text(b, a, str(int(counts[a, b])), ha="center", va="center", fontsize=8,
                    color="white" if share[a, b] > 0.6 else "black")
    ax.set_xticks(range(j))
    ax.set_xticklabels([str(c) for c in matrix.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k))
    ax.set_yticklabels([str(c) for c in matrix.index], fontsize=8)
    ax.set_xlabel("predicted (held-out blocks)")
    ax.set_ylabel("labelled")
    ax.set_title(title or "Spatial cross-validation", fontsize=9)
    fig.tight_layout()
    return fig


# -- the classifier file -------------------------------------------------------------------------------------------
def save_classifier(path, model: TileClassifier, names, network: dict, meta: dict) -> None:
    """A ``torch.save`` of plain containers: settings and class names (JSON), training features and classes,
    and the CNN's weights; loads with ``weights_only=True``."""
    import torch

    info = {**meta, "classifier": model.classifier, "seed": model.seed, "classes": list(map(str, names))}
    torch.save({"format": FORMAT, "version": VERSION, "meta": json.dumps(info),
                "X": torch.from_numpy(np.ascontiguousarray(model.X_)), "y": torch.from_numpy(model.y_),
                "network": {k: v.detach().cpu().contiguous() for k, v in network.items()}}, path)


def load_classifier(path) -> tuple[TileClassifier, list, dict, dict]:
    """(fitted classifier, class names, settings, CNN weights) of a classifier file, or BadInput naming it."""
    from ..clustering.modelfile import read_container

    hint = "Give the OUT_classifier.pt written by `classify`."
    obj = read_container(path, FORMAT, VERSION, "tile classifier", hint)
    try:
        meta = json.loads(obj["meta"])
        X, y, network = obj["X"].numpy(), obj["y"].numpy(), obj["network"]
        model = TileClassifier(meta["classifier"], int(meta["seed"])).fit(X, y)
        names = list(meta["classes"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadInput(f"model {str(path)!r} is damaged (its records cannot be read). {hint}", param="model",
                       code="bad_format") from None
    return model, names, meta, network
