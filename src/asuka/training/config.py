"""Training configuration: dataclasses, YAML files and ``key=value`` overrides.

A stage's configuration is a dataclass derived from :class:`TrainConfig`; nested sections
(``data``, ``optim``, ``ema``, ``masks`` and the stage's own) are dataclasses too. The same
tree is written as YAML::

    output_dir: runs/align
    max_steps: 20000
    optim: {lr: 1.0e-4, schedule: constant}
    substitution: {p_start: 1.0, p_end: 0.1, decay_steps: 2000}

and overridden on the command line with dotted keys (``optim.lr=3e-4``); values are parsed as
YAML scalars (``true``, ``null``, ``[0.9, 0.99]``) and checked against the field's type, so a
typo in a key or a wrong type is an :class:`~asuka.errors.InputError` that names the key, the
expected type and the given value.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from asuka.errors import InputError

# ----------------------------------------------------------------------------------- sections


@dataclasses.dataclass
class DataConfig:
    """Where training images come from and how a sample is cut from one.

    Exactly one of ``root`` (a folder searched recursively; any image size) or ``shards``
    (webdataset tar shards, brace patterns allowed: ``/data/places-{000000..000999}.tar``)
    must be set. Each sample is a random ``resolution`` x ``resolution`` crop, drawn from a
    generator seeded by (run seed, epoch, index), so data order and crops are reproducible.
    """

    root: str | None = None
    shards: str | None = None
    resolution: int = 256
    #: "shorter": resize the shorter side to ``resolution`` first (whole-scene crops);
    #: "none": crop at the native size (images smaller than the crop are scaled up).
    resize: str = "shorter"
    random_flip: bool = True
    num_workers: int = 2


@dataclasses.dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule (any ``diffusers.optimization`` schedule name)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    schedule: str = "constant"  # constant | constant_with_warmup | cosine | linear | ...
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0


@dataclasses.dataclass
class EMAConfig:
    """Exponential moving average of the trained weights (``diffusers.training_utils.EMAModel``).

    When enabled, the exported weights are the EMA weights.
    """

    enabled: bool = False
    decay: float = 0.9999
    warmup: bool = False  # diffusers' inverse-gamma warm-up of the decay
    update_after_step: int = 0


@dataclasses.dataclass
class MaskConfig:
    """Training masks (1 = hole).

    ``kind``: ``paper_train`` -- the paper's training mixture from :mod:`asuka.masks`
    (50% object shapes, 40% irregular, 10% rectangles); ``rect`` -- one random rectangle
    covering ``[min_ratio, max_ratio]`` of the image (a cheap source for tests and ablations).
    ``shapes``: optional object-shape source passed to :func:`asuka.masks.paper_train_mixture`
    (e.g. a COCO instances json); synthetic shapes when unset.
    """

    kind: str = "paper_train"
    shapes: str | None = None
    min_ratio: float = 0.1
    max_ratio: float = 0.5

    def validate(self) -> None:
        _check_choice("masks.kind", self.kind, ("paper_train", "rect"))
        if not 0.0 <= self.min_ratio <= self.max_ratio <= 1.0:
            raise InputError("config masks.min_ratio/max_ratio: expected 0 <= min <= max <= 1, got "
                             f"{self.min_ratio}, {self.max_ratio}")


@dataclasses.dataclass
class TrainConfig:
    """Options shared by every stage.

    ``batch_size`` is per process and per micro-batch; one optimizer step sees
    ``batch_size * grad_accum * num_processes`` samples. Steps are optimizer steps.
    """

    stage: str = ""
    output_dir: str = "runs/asuka"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    #: "auto": continue from the newest checkpoint in output_dir if there is one;
    #: "never": refuse to start if output_dir has checkpoints; or a checkpoint folder path.
    resume: str = "auto"
    #: where the trained component is exported (default ``<output_dir>/export``); point
    #: several stages at one folder to assemble a pipeline folder
    export_dir: str | None = None
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    ema: EMAConfig = dataclasses.field(default_factory=EMAConfig)
    masks: MaskConfig = dataclasses.field(default_factory=MaskConfig)

    def validate(self) -> None:
        """Check values that a type alone does not pin down; raises :class:`InputError`."""
        _check_choice("mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))
        _check_choice("data.resize", self.data.resize, ("shorter", "none"))
        self.masks.validate()
        for key in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "log_every",
                    "data.resolution"):
            value = get_key(self, key)
            if value < 1:
                raise InputError(f"config {key}: expected an integer >= 1, got {value}")
        if self.data.num_workers < 0:
            raise InputError(f"config data.num_workers: expected >= 0, got {self.data.num_workers}")
        if self.keep_checkpoints < 1:
            raise InputError(f"config keep_checkpoints: expected >= 1, got {self.keep_checkpoints}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"config {key}: expected one of {', '.join(choices)}, got {value!r}")


# ------------------------------------------------------------------------- dict <-> dataclass


def to_dict(config) -> dict:
    """The config as plain YAML-able data (tuples become lists)."""

    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str):
    """Return ``value`` as type ``tp`` or raise :class:`InputError` naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except InputError as exc:
                errors.append(exc)
        raise InputError(f"config {key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"config {key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise InputError(f"config {key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise InputError(f"config {key}: expected a list ({_type_name(tp)}), got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InputError(f"config {key}: expected {len(args)} values, got {list(value)!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"config {key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise InputError(f"config {key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise InputError(f"config {key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise InputError(f"config {key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config field type {tp!r} for {key}")  # a bug in a config class


def _field_types(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls, data: dict, *, prefix: str = ""):
    """Build dataclass ``cls`` from a (possibly partial) nested mapping, checking keys and types."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise InputError(
            f"config: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(sorted(types_))}")
    kwargs = {name: _coerce(value, types_[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def get_key(config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class _Loader(yaml.SafeLoader):
    """YAML with the 1.2 booleans: only true/false are booleans, so ``mixed_precision: no`` and
    ``perceptual: off`` stay the strings they look like."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def parse_override(text: str) -> dict:
    """``"optim.lr=3e-4"`` -> ``{"optim": {"lr": 3e-4}}`` (the value parsed as a YAML scalar)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise InputError(f"config override: expected key=value (e.g. optim.lr=1e-4), got {text!r}")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise InputError(f"config override {key}: cannot parse value {raw!r}: {exc}") from None
    nested: dict = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        data = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"config file {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(cls, files: list[str | Path] = (), overrides: list[str] = (), *, stage: str | None = None):
    """Defaults of ``cls`` <- each YAML file in turn <- each ``key=value`` override; validated.

    The ``stage`` key of a file must agree with ``stage`` when given (a decoder config passed
    to ``asuka train align`` is a mistake worth stopping for).
    """
    # start from the class's own defaults, so a partial section (``backbone: {preset: tiny}``)
    # keeps the stage's defaults for the keys it does not name
    data: dict = to_dict(cls())
    for path in files:
        data = _merge(data, read_yaml(path))
    for text in overrides:
        data = _merge(data, parse_override(text))
    if stage is not None:
        given = data.get("stage") or stage
        if given != stage:
            raise InputError(f"config stage: this command trains {stage!r}, the config says {given!r}")
        data["stage"] = stage
    config = from_dict(cls, data)
    config.validate()
    return config


def save_config(config, path: str | Path) -> None:
    """Write the resolved config as YAML (what the run actually used, every default included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    tmp.replace(path)
