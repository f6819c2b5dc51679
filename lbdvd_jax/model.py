"""DelpNet: the defocus-level classifier of He et al. (2020), Section 2.2 and Fig. 2(b), in Flax NNX.

The paper fixes the topology (7 convolutional layers, BatchNormalization with momentum 0.6 each
followed by ReLU, Dropout used densely, global max pooling, a 12-way dense output: defocus levels
0..10 plus ``bg``) and the size (2.3 M parameters) but not the layer widths. The widths here are
chosen for a CPU budget (see ``DEFAULT_FEATURES``): a ResNet-like stem downsamples early with
strided convolutions, because a strided 5x5 convolution from 1 to 24 channels keeps every input
pixel in view and loses no information (42*42*24 values from 84*84), while the cost of every later
layer drops 4x per stride. Channels grow as the maps shrink (84 -> 42 -> 21 -> 11 -> 6 -> 3), so the
parameters (2.33 M, 57 % of them in the last 3x3 layer on a 3x3 map) sit where they cost little
compute: ~89 M multiply-adds (0.18 GFLOP) per 84x84 patch, against 159 M for a 6x6-output variant
and ~300 M for a stride-1 stem of the same parameter count. Under the shared 2-core CPU of the
shipped run this bought ~1.8x more training steps per minute, which mattered more than capacity.

References:
    He, Wang, Chen, Dai, Lu. "Restoration of Out-of-Focus Fluorescence Microscopy Images Using
    Learning-Based Depth-Variant Deconvolution." IEEE Photonics Journal 12(2), 2020.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lbdvd_jax.constants import BG_LABEL, COUNT_SCALE, NUM_LEVELS, PATCH_SIZE  # noqa: F401 (re-exported)
from lbdvd_jax.errors import InputError, InputTypeError

# (out_channels, kernel, stride) of the 7 convolutional layers; the feature maps for an 84x84
# input are 42, 21, 21, 11, 11, 6, 3 pixels wide.
DEFAULT_FEATURES = (
    (24, 5, 2),
    (48, 3, 2),
    (64, 3, 1),
    (128, 3, 2),
    (192, 3, 1),
    (384, 3, 2),
    (384, 3, 2),
)


@dataclasses.dataclass(frozen=True)
class DelpNetConfig:
    """Architecture switches of DelpNet (the paper's ablations are fields here).

    Attributes:
        num_classes: 12 (levels 0..10 and ``bg``) or 11 (the "without bg" ablation).
        features: per conv layer ``(out_channels, kernel_size, stride)``; the paper uses 7.
        use_batchnorm: False for the "without BatchNormalization" ablation.
        bn_momentum: BatchNorm running-average momentum with Keras/Flax semantics
            (``running = momentum * running + (1 - momentum) * batch``); paper 0.6, Keras default 0.99.
        bn_epsilon: BatchNorm epsilon (Keras default 1e-3).
        dropout_rate: rate of the Dropout after every conv block; 0 is the "without Dropout" ablation.
        head_dropout_rate: rate of the Dropout between global max pooling and the dense layer.
        patch_size: input patch side in pixels (84 in the paper).
    """

    num_classes: int = 12
    features: tuple[tuple[int, int, int], ...] = DEFAULT_FEATURES
    use_batchnorm: bool = True
    bn_momentum: float = 0.6
    bn_epsilon: float = 1e-3
    dropout_rate: float = 0.1
    head_dropout_rate: float = 0.2
    patch_size: int = PATCH_SIZE

    def __post_init__(self):
        if self.num_classes not in (11, 12):
            raise InputError(
                f"num_classes must be 12 (levels 0..10 and bg) or 11 (no bg label), got {self.num_classes!r}."
            )
        if not 0.0 <= self.bn_momentum < 1.0:
            raise InputError(f"bn_momentum must lie in [0, 1), got {self.bn_momentum!r}.")
        for name in ("dropout_rate", "head_dropout_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise InputError(f"{name} must lie in [0, 1), got {rate!r}.")
        object.__setattr__(self, "features", tuple(tuple(int(v) for v in f) for f in self.features))

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (``DelpNetConfig(**d)`` rebuilds it)."""
        d = dataclasses.asdict(self)
        d["features"] = [list(f) for f in self.features]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DelpNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        d = dict(d)
        if "features" in d:
            d["features"] = tuple(tuple(f) for f in d["features"])
        return cls(**d)


class DelpNet(nnx.Module):
    """DelpNet defocus-level classifier (He et al. 2020, Fig. 2(b)).

    7 x [Conv -> BatchNorm(momentum 0.6) -> ReLU -> Dropout] -> global max pool -> Dropout -> Dense.

    Args:
        config: architecture (:class:`DelpNetConfig`); default is the shipped model.
        rngs: ``nnx.Rngs`` for parameter initialisation (dropout keys are passed per call).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = build_module(lambda: DelpNet(rngs=nnx.Rngs(0)))  # one compile, not one per layer
        >>> infer = nnx.jit(lambda m, x: m(x))                       # inference: running BN stats
        >>> infer(model, jnp.zeros((2, 84, 84, 1))).shape
        (2, 12)

    Training calls it as ``model(x, train=True, key=dropout_key)`` (batch statistics, dropout;
    `train.train_step`).
    """

    def __init__(self, config: DelpNetConfig | None = None, *, rngs: nnx.Rngs):
        self.config = config = config or DelpNetConfig()
        convs, norms = [], []
        in_ch = 1
        for out_ch, k, s in config.features:
            convs.append(
                nnx.Conv(
                    in_ch, out_ch, kernel_size=(k, k), strides=(s, s), padding="SAME",
                    use_bias=not config.use_batchnorm, rngs=rngs,
                )
            )
            if config.use_batchnorm:
                norms.append(
                    nnx.BatchNorm(
                        out_ch, momentum=config.bn_momentum, epsilon=config.bn_epsilon, rngs=rngs
                    )
                )
            in_ch = out_ch
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.dropout = nnx.Dropout(config.dropout_rate)
        self.head_dropout = nnx.Dropout(config.head_dropout_rate)
        self.head = nnx.Linear(in_ch, config.num_classes, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        dropout: bool | None = None,
    ) -> jax.Array:
        """Logits for a batch of normalised patches.

        Args:
            x: (B, 84, 84, 1) float patches already divided by 65535 (use
                :func:`lbdvd_jax.classify_patches` for raw counts).
            train: static; True normalises with batch statistics and updates the running ones
                (the module's BatchStat variables change in place), False uses the running ones.
            key: PRNG key for the dropout masks; required when dropout is active.
            dropout: static; whether Dropout is active. Defaults to ``train``; BN re-estimation
                passes ``train=True, dropout=False``.

        Returns:
            (B, num_classes) logits, dtype of ``x``.
        """
        dropout = train if dropout is None else dropout
        dropout = dropout and (self.config.dropout_rate > 0 or self.config.head_dropout_rate > 0)
        if dropout and key is None:
            raise InputError("key must be a PRNG key when dropout is active (train=True); "
                             "pass key=jax.random.key(...) or dropout=False.")
        keys = (
            list(jax.random.split(key, len(self.convs) + 1)) if dropout else [None] * (len(self.convs) + 1)
        )
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.config.use_batchnorm:
                x = self.norms[i](x, use_running_average=not train)
            x = jax.nn.relu(x)
            x = self.dropout(x, deterministic=not dropout, rngs=keys[i])
        x = jnp.max(x, axis=(1, 2))  # global max pooling
        x = self.head_dropout(x, deterministic=not dropout, rngs=keys[-1])
        return self.head(x)


def build_module(make):
    """The module `make()` builds (an nnx module with its own `nnx.Rngs`), initialised as one
    compiled program.

    Built eagerly, every initialiser of every layer runs as its own compiled operation; here
    they are one program, which JAX's persistent compilation cache (the `lbdvd` command turns
    it on) keeps for the next process. Same structure and the same parameter values as `make()`.
    Training, which builds the same architecture again and again, uses `module_initialiser`.

    Examples:
        >>> from flax import nnx
        >>> from lbdvd_jax.model import DelpNet, build_module
        >>> model = build_module(lambda: DelpNet(rngs=nnx.Rngs(0)))
        >>> model.convs[0].kernel.shape
        (5, 5, 1, 24)
    """
    graphdef = nnx.graphdef(nnx.eval_shape(make))
    return nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()))())


@functools.lru_cache(maxsize=16)
def module_initialiser(module_type, config, stream: str, *filters):
    """`(graphdef, init)` for `module_type(config, rngs=nnx.Rngs(**{stream: key}))`: the
    structure from `nnx.eval_shape` (nothing computed) and `init(key) -> nnx.state(module,
    *filters)` jitted, so that every run and resume of one architecture in a process compiles
    its initialisation once (eagerly each initialiser compiles on its own: seconds)."""
    make = lambda key: module_type(config, rngs=nnx.Rngs(**{stream: key}))  # noqa: E731
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: make(jax.random.key(0))))
    return graphdef, jax.jit(lambda key: nnx.state(make(key), *filters))


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param`` leaves) of ``model``."""
    return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


def conv_macs(config: DelpNetConfig | None = None) -> int:
    """Multiply-accumulates per patch of the conv and dense layers (1 MAC = 2 FLOP).

    Args:
        config: architecture; default :class:`DelpNetConfig`.

    Returns:
        MACs for one ``patch_size`` x ``patch_size`` patch (BN, ReLU and pooling not counted).
    """
    config = config or DelpNetConfig()
    side, in_ch, total = config.patch_size, 1, 0
    for out_ch, k, s in config.features:
        side = -(-side // s)  # SAME padding
        total += side * side * k * k * in_ch * out_ch
        in_ch = out_ch
    return total + in_ch * config.num_classes



_PREDICT_CACHE: dict = {}


def fold_batchnorm(model: DelpNet):
    """Inference weights with every BatchNorm folded into its convolution.

    In inference BN is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * scale +
    bias``, so ``conv -> BN`` equals one convolution with kernel ``k * s`` and bias
    ``(b - mean) * s + bias`` where ``s = scale / sqrt(var + eps)``: one pass over each feature
    map fewer (float32 rounding: ~1e-6 relative on the probabilities).

    Args:
        model: a :class:`DelpNet`.

    Returns:
        ``(convs, head)``: a tuple of ``(kernel, bias)`` per conv layer and the dense layer's
        ``(kernel, bias)``; pass them to :func:`delpnet_inference` with the config's strides.
    """
    convs = []
    for i, conv in enumerate(model.convs):
        k = conv.kernel[...]
        b = conv.bias[...] if conv.bias is not None else jnp.zeros(k.shape[-1], k.dtype)
        if model.config.use_batchnorm:
            bn = model.norms[i]
            s = bn.scale[...] * jax.lax.rsqrt(bn.var[...] + bn.epsilon)
            k, b = k * s, (b - bn.mean[...]) * s + bn.bias[...]
        convs.append((k, b))
    return tuple(convs), (model.head.kernel[...], model.head.bias[...])


def delpnet_inference(weights, x, *, strides):
    """Probabilities of a DelpNet from :func:`fold_batchnorm` weights (no BN pass, no dropout).

    Args:
        weights: ``(convs, head)`` from :func:`fold_batchnorm`.
        x: (B, 84, 84, 1) normalised patches.
        strides: static tuple of the conv strides (``[s for _, _, s in config.features]``).

    Returns:
        (B, num_classes) softmax probabilities.
    """
    convs, (hk, hb) = weights
    for (k, b), s in zip(convs, strides):
        x = jax.nn.relu(jax.lax.conv_general_dilated(
            x, k, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b)
    return jax.nn.softmax(jnp.max(x, axis=(1, 2)) @ hk + hb, axis=-1)


def _predict_fn(model: DelpNet):
    """A jitted probability function for ``model``'s architecture and its folded weights.

    With several local devices (two forced host devices on a CPU) the batch is split over
    them; ``benchmarks/bench_delpnet.py`` times this path beside the unfolded module.
    """
    from lbdvd_jax.devices import sharded_map

    key = (model.config, tuple(jax.local_devices()))
    fn = _PREDICT_CACHE.get(key)
    if fn is None:
        strides = tuple(s for _, _, s in model.config.features)

        def fn(weights, x):
            return sharded_map(lambda xs: delpnet_inference(weights, xs, strides=strides))(x)

        fn = _PREDICT_CACHE.setdefault(key, jax.jit(fn))
    return fn, fold_batchnorm(model)


class Classification(NamedTuple):
    """`classify_patches`' result: per-patch class and probabilities (unpacks as a pair).

    Attributes:
        labels: (n,) int32 classes (0..10 levels, 11 bg).
        probs: (n, num_classes) float32 probabilities.
    """

    labels: np.ndarray
    probs: np.ndarray


def classify_patches(model: DelpNet, patches, *, batch_size: int = 256) -> Classification:
    """Defocus level (0..10) or ``bg`` (11) of raw-intensity patches.

    A :class:`lbdvd_jax.estimator.DefocusEstimator` (the shipped default) reads patches at any
    gain and offset (uint8, uint16, float) and calls constant patches bg. A paper DelpNet
    normalises exactly as in training (counts / 65535), runs the model in inference mode (running
    BatchNorm statistics, no dropout) in batches of ``batch_size`` (bounded memory; the last batch
    is padded so that one compiled program serves every call), and returns NumPy arrays.

    Args:
        model: the estimator of :func:`lbdvd_jax.load_delpnet` or a trained :class:`DelpNet`.
        patches: (n, 84, 84) or (84, 84) raw counts, uint8/uint16/int or float (not normalised).
        batch_size: static; patches per forward pass.

    Returns:
        `Classification(labels, probs)`: (n,) int32 classes (0..10 levels, 11 bg) and
        (n, num_classes) float32 probabilities.

    Raises:
        TypeError: non-numeric patches.
        ValueError: wrong patch shape, NaN/Inf values, or a bad batch_size.

    Examples:
        >>> from lbdvd_jax import load_delpnet, classify_patches
        >>> model = load_delpnet()
        >>> labels, probs = classify_patches(model, patches_uint16)   # doctest: +SKIP
    """
    import numpy as np

    from lbdvd_jax.estimator import DefocusEstimator, estimator_probs

    if isinstance(model, DefocusEstimator):  # scale-free: any gain and offset
        probs = estimator_probs(model, patches, batch_size=batch_size)
        return Classification(probs.argmax(axis=1).astype(np.int32), probs)
    if not isinstance(model, DelpNet):
        raise InputTypeError(f"model must be a DefocusEstimator or a DelpNet (e.g. load_delpnet()), "
                        f"got {type(model).__name__}.")
    from lbdvd_jax.validate import check_patches

    side = model.config.patch_size
    arr = check_patches(patches, side, batch_size=batch_size)
    n = arr.shape[0]
    k = model.config.num_classes
    if n == 0:
        return Classification(np.zeros((0,), np.int32), np.zeros((0, k), np.float32))
    fn, weights = _predict_fn(model)
    bs = min(batch_size, n)
    probs = np.empty((n, k), np.float32)
    for start in range(0, n, bs):
        chunk = arr[start : start + bs].astype(np.float32) / np.float32(COUNT_SCALE)
        m = len(chunk)
        if m < bs:
            chunk = np.concatenate([chunk, np.zeros((bs - m, side, side), np.float32)])
        probs[start : start + m] = np.asarray(fn(weights, jnp.asarray(chunk[..., None])))[:m]
    return Classification(probs.argmax(axis=1).astype(np.int32), probs)
