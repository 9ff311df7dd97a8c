"""The one training loop every stage runs through (single CPU to multi-node, via accelerate).

Per optimizer step::

    seed every RNG from (seed, step, rank)         # exact resume needs no RNG snapshot
    for each of grad_accum micro-batches:           # DDP gradient sync only on the last
        loss = stage.loss(batch, step, generator)   # under autocast
        backward(loss / grad_accum)
    unscale (fp16), clip, step every optimizer, step LR schedules, update EMA
    log (CSV, TensorBoard, progress bar); checkpoint every N steps (atomic)

Exact resume: the randomness of a step is a function of (seed, step, rank) and the data of a
step a function of (seed, batches consumed), both stored in the checkpoint with the weights,
optimizer moments, LR schedules, EMA and loss-scaler state; a run killed with ``kill -9`` and
resumed therefore logs the same losses as the uninterrupted run (bit for bit on CPU;
GPU kernels may add their own non-determinism).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from asuka.errors import AsukaError, InputError
from asuka.training.checkpoint import latest_checkpoint, read_checkpoint, write_checkpoint
from asuka.training.config import TrainConfig, save_config, to_dict
from asuka.training.data import build_dataset, check_data_source, make_loader
from asuka.training.export import write_model_index
from asuka.training.logs import MetricsLog
from asuka.training.stage import Stage

_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# keys whose change between an interrupted run and its resume is expected
_RESUMABLE_CHANGES = {"max_steps", "resume", "log_every", "checkpoint_every", "keep_checkpoints", "export_dir",
                      "data.num_workers"}


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    step: int
    exported: list[Path]


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for the draws of optimizer step ``step`` on process ``rank``."""
    return int(np.random.SeedSequence((seed, step, rank)).generate_state(2, np.uint32).view(np.uint64)[0]
               & (2**63 - 1))


def _seed_everything(seed: int) -> None:
    # Library code outside our control (dropout, torchvision) draws from the global RNGs.
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def _config_changes(saved: dict, current: dict) -> list[str]:
    a, b = _flatten(saved), _flatten(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in _RESUMABLE_CHANGES]


def _make_accelerator(config: TrainConfig, stage_cls: type[Stage]):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    handlers = [DistributedDataParallelKwargs(find_unused_parameters=stage_cls.find_unused_parameters)]
    if config.mixed_precision != "no" and not torch.cuda.is_available():
        raise InputError(f"config mixed_precision: {config.mixed_precision!r} needs a CUDA GPU; "
                         "use mixed_precision=no on the CPU")
    return Accelerator(mixed_precision=config.mixed_precision, kwargs_handlers=handlers)


def _resolve_resume(config: TrainConfig, run_dir: Path) -> Path | None:
    if config.resume == "auto":
        return latest_checkpoint(run_dir)
    if config.resume == "never":
        found = latest_checkpoint(run_dir)
        if found is not None:
            raise InputError(f"resume=never but {run_dir} already has checkpoints ({found.name}); "
                             "use another output_dir or resume=auto")
        return None
    path = Path(config.resume)
    if not path.exists():
        raise InputError(f"config resume: checkpoint not found: {path} (expected 'auto', 'never' or a "
                         "checkpoint folder)")
    return path


_NO_DECAY_MODULES = (torch.nn.modules.normalization.LayerNorm, torch.nn.modules.normalization.GroupNorm,
                     torch.nn.modules.batchnorm._NormBase, torch.nn.Embedding)


def _exempt_from_decay(module_name: str, module: torch.nn.Module, param_name: str, param: torch.Tensor) -> bool:
    # Weight decay shrinks a weight towards 0; for offsets and scales (biases, norms, the MAE's
    # alpha), learned tokens and embeddings that pulls towards a meaningless value, so MAE's recipe
    # (and timm's, which it uses) leaves every 1-D tensor, bias, norm, token and embedding out.
    leaf = param_name.lower()
    return (param.ndim <= 1 or leaf == "bias" or isinstance(module, _NO_DECAY_MODULES)
            or type(module).__name__.lower().endswith("norm") or "token" in leaf or "embed" in leaf
            or "norm" in module_name.rsplit(".", 1)[-1].lower())


def weight_decay_groups(models, weight_decay: float) -> list[dict]:
    """AdamW parameter groups for ``models``: ``weight_decay`` for the weights of linear and conv
    layers, 0 for 1-D parameters (biases, norm scales, scalars such as ``alpha``), norm layers,
    ``*token*`` and ``*embed*`` parameters (``mask_token``, position embeddings) and ``nn.Embedding``.
    Frozen parameters are left out. With ``weight_decay == 0`` there is one group."""
    decay, exempt, ordered, seen = [], [], [], set()
    for model in models:
        for module_name, module in model.named_modules():
            for param_name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:  # (shared parameters: once)
                    continue
                seen.add(id(param))
                group = exempt if _exempt_from_decay(module_name, module, param_name, param) else decay
                group.append(param)
                ordered.append(param)
    if weight_decay == 0:  # in parameters() order, as one group (checkpoints of such runs stay loadable)
        return [{"params": ordered, "weight_decay": 0.0}]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class _Trainer:
    def __init__(self, stage_cls: type[Stage], config: TrainConfig):
        self.config = config
        check_data_source(config.data)
        self.accelerator = acc = _make_accelerator(config, stage_cls)
        self.run_dir = Path(config.output_dir)
        self.stage = stage_cls(config, device=acc.device, weight_dtype=_DTYPES[config.mixed_precision])
        self.stage.build()
        if not self.stage.models:
            raise RuntimeError(f"stage {stage_cls.name} built no trainable model")  # a bug in the stage
        self.raw = dict(self.stage.models)  # unwrapped trainable modules (fp32)
        for module in self.raw.values():
            module.to(acc.device).train()
        self.optimizers, self.schedulers, self.groups = {}, {}, {}
        from diffusers.optimization import get_scheduler

        for name, (model_names, opt) in self.stage.optimizer_groups().items():
            params = [p for m in model_names for p in self.raw[m].parameters() if p.requires_grad]
            self.groups[name] = (params, opt)
            self.optimizers[name] = torch.optim.AdamW(
                weight_decay_groups([self.raw[m] for m in model_names], opt.weight_decay),
                lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps)
            self.schedulers[name] = get_scheduler(opt.schedule, self.optimizers[name],
                                                  num_warmup_steps=opt.warmup_steps,
                                                  num_training_steps=config.max_steps)
        self.ema = None
        ema_name = self.stage.ema_model() if config.ema.enabled else None
        if ema_name is not None:
            from diffusers.training_utils import EMAModel

            self.ema_name = ema_name
            self.ema = EMAModel(self.raw[ema_name].parameters(), decay=config.ema.decay,
                                use_ema_warmup=config.ema.warmup,
                                update_after_step=config.ema.update_after_step)
            self.ema.to(acc.device)
        # DDP wrapping (and autocast of the trained models' forward) happens here.
        names = list(self.raw)
        wrapped = acc.prepare(*[self.raw[n] for n in names])
        wrapped = wrapped if isinstance(wrapped, (list, tuple)) else [wrapped]
        self.stage.models = dict(zip(names, wrapped))
        self.step, self.batches = 0, 0

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "stage": self.stage.name,
            "step": self.step,
            "batches": self.batches,  # micro-batches consumed by each process: the data position
            "seed": self.config.seed,  # with step, this fixes every later random draw
            "world_size": self.accelerator.num_processes,
            "config": to_dict(self.config),
            "models": {n: m.state_dict() for n, m in self.raw.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None,
        }

    def load_state_dict(self, state: dict, source: Path) -> None:
        if state.get("stage") != self.stage.name:
            raise InputError(f"checkpoint {source} is from stage {state.get('stage')!r}, "
                             f"this run trains {self.stage.name!r}")
        if state.get("world_size") != self.accelerator.num_processes:
            warnings.warn(f"checkpoint {source} was written by {state.get('world_size')} processes, "
                          f"resuming with {self.accelerator.num_processes}: training continues, but the data "
                          "order is no longer the uninterrupted run's", stacklevel=2)
        changes = _config_changes(state.get("config", {}), to_dict(self.config))
        if changes:
            warnings.warn(f"resuming {source} with a changed config: {'; '.join(changes)}", stacklevel=2)
        missing = [f"{kind} {name!r}" for kind, ours in (("model", self.raw), ("optimizer", self.optimizers))
                   for name in ours if name not in state.get(kind + "s", {})]
        if missing:  # e.g. the GAN discriminator exists only when loss.gan_start < max_steps
            raise InputError(f"checkpoint {source} has no {', '.join(missing)}: it was written with a config "
                             "that built other networks; resume with that config or start a new output_dir")
        for name, module in self.raw.items():
            module.load_state_dict(state["models"][name])
        for name, opt in self.optimizers.items():
            try:
                opt.load_state_dict(state["optimizers"][name])
            except ValueError as exc:  # e.g. written before weight decay was split into two groups
                raise InputError(f"checkpoint {source}: optimizer {name!r} does not fit this run's parameter "
                                 f"groups ({exc}); it was written by another version or config: start a new "
                                 "output_dir, or export it and continue from the exported weights") from None
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        if self.ema is not None:
            if state.get("ema") is None:
                raise InputError(f"checkpoint {source} has no EMA state but ema.enabled=true")
            self.ema.load_state_dict(state["ema"])
            self.ema.to(self.accelerator.device)
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.step, self.batches = int(state["step"]), int(state["batches"])

    def save(self) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            write_checkpoint(self.run_dir, self.step, self.state_dict(), keep=self.config.keep_checkpoints)
        acc.wait_for_everyone()

    # -- the loop ------------------------------------------------------------------------
    def _micro_batches(self):
        acc, cfg = self.accelerator, self.config
        dataset = build_dataset(cfg, transform=self.stage.dataset_transform(),
                                crop_override=self.stage.crop_override(),
                                rank=acc.process_index, world_size=acc.num_processes)
        loader = make_loader(dataset, batch_size=cfg.batch_size, num_workers=cfg.data.num_workers,
                             seed=cfg.seed, rank=acc.process_index, world_size=acc.num_processes,
                             start_batches=self.batches)
        for batch in loader:
            self.batches += 1
            yield {k: v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _optimizer_step(self) -> None:
        scaler = self.accelerator.scaler  # only under fp16
        for name, opt in self.optimizers.items():
            params, settings = self.groups[name]
            if scaler is not None:
                scaler.unscale_(opt)
            if settings.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        for name, opt in self.optimizers.items():
            if scaler is not None:
                scaler.step(opt)
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            self.schedulers[name].step()
        if scaler is not None:
            scaler.update()
        if self.ema is not None:
            self.ema.step(self.raw[self.ema_name].parameters())

    def run(self, *, stop_after: int | None = None) -> TrainResult:
        from tqdm.auto import tqdm

        acc, cfg = self.accelerator, self.config
        resume = _resolve_resume(cfg, self.run_dir)
        if resume is not None:
            self.load_state_dict(read_checkpoint(resume), resume)
            acc.print(f"resuming from {resume} at step {self.step}")
        if acc.is_main_process:
            save_config(cfg, self.run_dir / "config.yaml")
        log = MetricsLog(self.run_dir, resume_step=self.step, enabled=acc.is_main_process)
        samples_per_step = cfg.batch_size * cfg.grad_accum * acc.num_processes
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not acc.is_main_process,
                   desc=f"train {self.stage.name}", dynamic_ncols=True)
        batches = self._micro_batches()
        sums: dict[str, torch.Tensor] = {}  # per-key sums over the current log window
        window_start, window_steps = time.perf_counter(), 0
        try:
            while self.step < cfg.max_steps:
                seed = step_seed(cfg.seed, self.step, acc.process_index)
                _seed_everything(seed)
                generator = torch.Generator(device=acc.device).manual_seed(seed)
                for micro in range(cfg.grad_accum):
                    batch = next(batches)
                    sync = micro == cfg.grad_accum - 1
                    with contextlib.ExitStack() as stack:
                        if not sync:
                            for model in self.stage.models.values():
                                stack.enter_context(acc.no_sync(model))
                        with acc.autocast():
                            out = self.stage.loss(batch, self.step, generator=generator)
                        acc.backward(out.loss / cfg.grad_accum)
                    # summed on the device: reading a value would wait for the GPU every step
                    for key, value in {"loss": out.loss, **out.logs}.items():
                        value = torch.as_tensor(value).detach().float().to(acc.device) / cfg.grad_accum
                        sums[key] = sums[key] + value if key in sums else value
                lr = self.schedulers[next(iter(self.schedulers))].get_last_lr()[0]  # used by this step
                self._optimizer_step()
                self.step += 1
                window_steps += 1
                checkpoint = self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps
                if checkpoint or self.step % cfg.log_every == 0:
                    elapsed = time.perf_counter() - window_start
                    means = self._reduce({k: float(v) / window_steps for k, v in sums.items()})
                    if not all(math.isfinite(v) for v in means.values()):  # never checkpoint a diverged run
                        raise AsukaError(f"training diverged: non-finite loss in steps {self.step - window_steps + 1}"
                                         f"-{self.step} ({means}); resume from the last checkpoint with a lower "
                                         "optim.lr")
                    means["lr"] = lr
                    means["samples_per_s"] = samples_per_step * window_steps / max(elapsed, 1e-9)
                    log.log(self.step, means)
                    bar.set_postfix(loss=f"{means['loss']:.4g}", sps=f"{means['samples_per_s']:.3g}")
                    sums, window_start, window_steps = {}, time.perf_counter(), 0
                bar.update(1)
                if checkpoint:
                    self.save()
                if stop_after is not None and self.step >= stop_after:
                    break
        finally:
            bar.close()
            log.close()
        exported = self.export() if self.step >= cfg.max_steps else []
        acc.end_training()
        return TrainResult(self.run_dir, self.step, exported)

    def _reduce(self, values: dict[str, float]) -> dict[str, float]:
        acc = self.accelerator
        if acc.num_processes == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], device=acc.device, dtype=torch.float64)
        t = acc.reduce(t, reduction="mean")
        return dict(zip(keys, t.tolist()))

    def export(self) -> list[Path]:
        acc = self.accelerator
        acc.wait_for_everyone()
        paths: list[Path] = []
        if acc.is_main_process:
            target = self.raw[self.ema_name] if self.ema is not None else None
            if target is not None:  # export the EMA weights, keep the raw ones for a later resume
                self.ema.store(target.parameters())
                self.ema.copy_to(target.parameters())
            export_dir = Path(self.config.export_dir) if self.config.export_dir else self.run_dir / "export"
            try:
                paths = self.stage.export(self.raw, export_dir)
            finally:
                if target is not None:
                    self.ema.restore(target.parameters())
            for path in paths:
                acc.print(f"exported {path}")
            if write_model_index(export_dir):
                acc.print(f"{export_dir} holds a complete pipeline (model_index.json written)")
        acc.wait_for_everyone()
        return paths


def train(stage_cls: type[Stage], config: TrainConfig, *, stop_after: int | None = None) -> TrainResult:
    """Train ``stage_cls`` with ``config``; resume from ``config.output_dir`` per ``config.resume``.

    ``stop_after`` ends the loop after that step as if the process had been killed there
    (for tests of the resume). Exports to ``export_dir`` (default ``<output_dir>/export``) when
    ``max_steps`` is reached.
    """
    if not isinstance(config, stage_cls.config_class):
        raise InputError(f"stage {stage_cls.name}: expected a {stage_cls.config_class.__name__}, "
                         f"got {type(config).__name__}")
    return _Trainer(stage_cls, config).run(stop_after=stop_after)


def export_run(stage_cls: type[Stage], config: TrainConfig, checkpoint: str | Path | None = None) -> list[Path]:
    """Export the newest checkpoint of ``config.output_dir`` (or ``checkpoint``) without training."""
    trainer = _Trainer(stage_cls, config)
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(trainer.run_dir)
    if path is None:
        raise InputError(f"no checkpoint to export in {trainer.run_dir}")
    trainer.load_state_dict(read_checkpoint(path), path)
    return trainer.export()
