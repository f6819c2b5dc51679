"""Classification metrics for DelpNet: accuracy, macro P/R/F1, confusion matrix, top-k curve.

All functions take NumPy/JAX arrays and return plain Python/NumPy values so that the report can be
written as JSON. Plots are optional (matplotlib).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from lbdvd_jax.errors import InputError

CLASS_NAMES_12 = tuple(str(i) for i in range(11)) + ("bg",)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confusion_matrix(y_true, y_pred, *, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of patches with true class ``i`` predicted as ``j``.

    Args:
        y_true: (n,) int labels in [0, num_classes).
        y_pred: (n,) int labels in [0, num_classes).
        num_classes: static number of classes (12 with bg, 11 without).

    Returns:
        (num_classes, num_classes) int64 matrix; rows are true classes.
    """
    y_true = np.asarray(y_true, np.int64).ravel()
    y_pred = np.asarray(y_pred, np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise InputError(f"y_true and y_pred must have the same length, got {y_true.shape} and {y_pred.shape}.")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise InputError(f"{name} must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}].")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def precision_recall_f1(cm: np.ndarray) -> dict:
    """Per-class and macro precision, recall and F1 from a confusion matrix.

    Macro averages run over the classes present in the ground truth (support > 0); a class never
    predicted has precision 0 (scikit-learn's ``zero_division=0``).

    Args:
        cm: (C, C) confusion matrix, rows = true class.

    Returns:
        dict with ``precision``, ``recall``, ``f1`` (macro floats) and ``per_class`` lists.
    """
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
    recall = np.where(support > 0, tp / np.where(support > 0, support, 1), 0.0)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    present = support > 0
    return {
        "precision": float(precision[present].mean()) if present.any() else 0.0,
        "recall": float(recall[present].mean()) if present.any() else 0.0,
        "f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.astype(int).tolist(),
        },
    }


def top_k_curve(y_true, probs) -> list[float]:
    """Cumulative match curve: fraction of patches whose true class is among the k most probable.

    Args:
        y_true: (n,) int labels.
        probs: (n, C) scores (probabilities or logits; only the ranking matters).

    Returns:
        list of C floats, entry ``k-1`` is the top-k accuracy (the last is 1.0).
    """
    y_true = np.asarray(y_true, np.int64).ravel()
    probs = np.asarray(probs)
    true_score = probs[np.arange(len(y_true)), y_true]
    # rank = number of classes scoring strictly higher than the true one (ties favour the truth)
    rank = (probs > true_score[:, None]).sum(axis=1)
    return [float((rank < k).mean()) for k in range(1, probs.shape[1] + 1)]


def classification_report(y_true, logits, *, class_names=None) -> dict:
    """All evaluation numbers of Section 3.1-3.2 for one labelled set.

    Args:
        y_true: (n,) int labels.
        logits: (n, C) logits of the model.
        class_names: optional names of the C classes (default 0..10, bg).

    Returns:
        JSON-serialisable dict: ``n``, ``accuracy``, ``loss`` (mean softmax cross-entropy),
        ``precision``/``recall``/``f1`` (macro), ``within_1`` (|pred - true| <= 1 among defocus
        levels), ``confusion`` (C x C list), ``top_k`` (cumulative match curve), ``per_class``.
    """
    logits = np.asarray(logits, np.float64)
    y_true = np.asarray(y_true, np.int64).ravel()
    num_classes = logits.shape[1]
    probs = _softmax(logits)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, num_classes=num_classes)
    prf = precision_recall_f1(cm)
    loss = float(-np.log(np.maximum(probs[np.arange(len(y_true)), y_true], 1e-30)).mean())
    levels = (y_true < 11) & (y_pred < 11)
    within_1 = float(((np.abs(y_pred - y_true) <= 1) & levels | (y_pred == y_true)).mean())
    names = list(class_names or CLASS_NAMES_12[:num_classes])
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "loss": loss,
        "precision": prf["precision"],
        "recall": prf["recall"],
        "f1": prf["f1"],
        "within_1": within_1,
        "top_k": top_k_curve(y_true, probs),
        "confusion": cm.tolist(),
        "class_names": names,
        "per_class": prf["per_class"],
    }


def format_confusion(cm, class_names=None) -> str:
    """The confusion matrix as a fixed-width text table (rows true, columns predicted)."""
    cm = np.asarray(cm)
    names = list(class_names or CLASS_NAMES_12[: cm.shape[0]])
    w = max(4, len(str(cm.max())) + 1)
    lines = ["true\\pred" + "".join(f"{n:>{w}}" for n in names)]
    for name, row in zip(names, cm):
        lines.append(f"{name:>9}" + "".join(f"{v:>{w}}" for v in row))
    return "\n".join(lines)


def _save_figure(fig, path, suffix):
    """Write fig next to `path` as <stem>_<suffix>.png and return the file path."""
    fig.tight_layout()
    out = path.with_name(f"{path.stem}_{suffix}.png")
    fig.savefig(out, dpi=120)
    return out


def write_report(report: dict, path, *, history: list | None = None) -> list[pathlib.Path]:
    """Write ``report`` as JSON and, when matplotlib is installed, PNG plots next to it.

    Args:
        report: output of :func:`classification_report`.
        path: JSON file path; plots go to ``<stem>_confusion.png``, ``<stem>_topk.png`` and, when
            ``history`` is given, ``<stem>_curves.png``.
        history: optional list of evaluation records (dicts with ``step``, ``minutes``,
            ``val_loss``, ``val_accuracy``) drawn as the validation loss / accuracy curves.

    Returns:
        the files written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(report)
    if history is not None:
        payload["history"] = history
    path.write_text(json.dumps(payload, indent=1))
    written = [path]
    try:  # the object API: no pyplot, so a notebook user's backend is left alone
        from matplotlib.figure import Figure
    except ImportError:
        return written

    def subplots(*grid, figsize):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*grid)
    cm = np.asarray(report["confusion"])
    names = report["class_names"]
    fig, ax = subplots(figsize=(6, 5))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {report['accuracy']:.3f}")
    fig.colorbar(im)
    written.append(_save_figure(fig, path, "confusion"))
    fig, ax = subplots(figsize=(5, 4))
    k = np.arange(1, len(report["top_k"]) + 1)
    ax.plot(k, report["top_k"], "o-")
    ax.set_xlabel("k")
    ax.set_ylabel("top-k accuracy")
    ax.set_title("cumulative match curve")
    ax.grid(True)
    written.append(_save_figure(fig, path, "topk"))
    if history:
        fig, (a1, a2) = subplots(1, 2, figsize=(9, 3.5))
        minutes = [h["minutes"] for h in history]
        a1.plot(minutes, [h["val_loss"] for h in history], "o-", label="val")
        if all("train_loss" in h for h in history):
            a1.plot(minutes, [h["train_loss"] for h in history], ".-", label="train")
        a1.set_xlabel("training minutes")
        a1.set_ylabel("loss")
        a1.legend()
        a2.plot(minutes, [h["val_accuracy"] for h in history], "o-")
        a2.set_xlabel("training minutes")
        a2.set_ylabel("val accuracy")
        for a in (a1, a2):
            a.grid(True)
        written.append(_save_figure(fig, path, "curves"))
    return written
