"""What a training run is made of: `setup` makes a `Run` once from a TrainConfig (the data and its split, the model
and optimiser, the device and precision, where to save, and what a resumed run brings), and `start_state` the
`RunState` the loop (loop.py) updates from there. The Run is fixed (frozen); what changes lives in the state.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch

from cxr.train.checkpoint import Checkpoint, checkpoint_paths, load_checkpoint
from cxr.train.plan import Plan, cache_file, plan_size
from cxr.train.config import TrainConfig
from cxr.data.index import DatasetIndex, Split, index_dataset, split_for, split_names
from cxr.data.cache import ImageCache, iterate_batches
from cxr.errors import UserError
from cxr.data.lungs import HideLungs, require_masks
from cxr.train.budget import Budget
from cxr.train.model import build_model, freeze_layers, is_random_fallback
from cxr.train.state import KEEP_POLICIES, Best, KeepBest, KeepPolicy, RunState
from cxr.train.writer import CheckpointWriter


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device cuda was asked for, but no CUDA GPU is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX or AVX512-BF16; Linux's flags). Elsewhere bf16 is
    emulated and slower than float32, so a run asking for it (`cpu_bf16`) trains in float32 there."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The dtype training and evaluation autocast to: bfloat16 on CUDA (`amp`), and on a CPU with native bfloat16
    when the settings ask (`cpu_bf16`); None: float32 throughout."""
    if device.type == "cuda":
        return torch.bfloat16 if cfg.amp else None
    return torch.bfloat16 if cfg.cpu_bf16 and cpu_has_native_bf16() else None


def check_writable(path: Path) -> None:
    """Fail before training, not at the first save, when the checkpoint cannot be written where asked."""
    if path.is_dir():
        raise UserError(f"--out {path} is a folder: give a file name such as {path / 'model.pt'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder {path.parent} for the checkpoint ({e.strerror or e})") from e
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"cannot write the checkpoint into {path.parent}: the folder is read-only")


@dataclass(frozen=True)
class Run:
    """What `setup` prepares once and every step uses: fixed for the run (what changes is a `RunState`)."""

    cfg: TrainConfig
    device: torch.device
    index: DatasetIndex
    split: Split
    cache: ImageCache
    label_table: torch.Tensor
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None
    steps_per_epoch: int
    total_steps: int
    start_step: int
    best_path: Path
    last_path: Path
    weights: str
    pretrained: bool
    notes: list[str]
    gen: torch.Generator
    attention_ids: list[int]
    hide: HideLungs
    keep: KeepPolicy  # which weights are kept and tested (`TrainConfig.keep`)
    # What a resumed run brings: its curve so far and the seconds it trained (its schedule and budget go on).
    prior_history: tuple[dict[str, float], ...] = ()
    prior_seconds: float = 0.0
    plan: Plan | None = None  # the image size a budgeted run chose for this machine, and why (`TrainConfig.auto_size`)
    writer: CheckpointWriter = field(default_factory=CheckpointWriter)  # checkpoints during the loop, written aside

    @cached_property
    def meta(self) -> dict[str, Any]:
        """What every checkpoint of this run carries besides weights and metrics: fixed for the run, so made once
        (its split names are thousands of paths on the full database, and a GPU run saves every few seconds)."""
        meta = dict(classes=self.index.classes, image_size=self.cfg.image_size, config=asdict(self.cfg),
                    synthetic=self.index.synthetic, split=split_names(self.index, self.split))
        return meta | ({"plan": self.plan.to_dict()} if self.plan is not None else {})

    @property
    def precision(self) -> str:
        """What the run computes in, as its checkpoint records it: the settings (`amp`, `cpu_bf16`) only ask for
        bfloat16, and a CPU without it (or a GPU without bf16) trains in float32."""
        return f"{str(self.amp_dtype).removeprefix('torch.')} autocast" if self.amp_dtype is not None else "float32"

    @property
    def eval_batch(self) -> int:
        return 256 if self.device.type == "cuda" else 32  # inference activations grow with the batch

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cfg.channels_last else torch.contiguous_format

    def batches(self, ids: "tuple[int, ...] | list[int]") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Evaluation batches (uint8 images, labels) of `ids`, hidden as training hid them (`iterate_batches`)."""
        return iterate_batches(self.cache, ids, self.index.labels, self.eval_batch, hide=self.hide)

    def training_batches(self) -> Iterator[list[int]]:
        """Batches of training ids, epoch after epoch, each epoch in a new random order (drawn from `gen`)."""
        ids = self.split.train
        while True:
            perm = torch.randperm(len(ids), generator=self.gen).tolist()
            for b in range(0, len(perm), self.cfg.batch_size):
                yield [ids[i] for i in perm[b : b + self.cfg.batch_size]]

    def decode_order(self) -> list[int]:
        """The order images are first needed in: validation (the first evaluation, the attention strip), the first
        epoch's training batches exactly as `training_batches` will draw them, then the test set."""
        gen = torch.Generator()
        gen.set_state(self.gen.get_state())  # a copy: the training order itself is left untouched
        first_epoch = [self.split.train[i] for i in torch.randperm(len(self.split.train), generator=gen).tolist()]
        return list(self.split.val) + first_epoch + list(self.split.test)


def setup(cfg: TrainConfig) -> Run:
    """Index and split the data, build (or resume) the model and optimiser, and decide where to save."""
    cfg.validate()
    device = resolve_device(cfg.device)
    best_path, last_path = checkpoint_paths(cfg.out)
    check_writable(best_path)
    index = index_dataset(cfg.data, cfg.classes)
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None and resume.classes != index.classes:
        raise UserError(f"cannot resume: the checkpoint's classes {resume.classes} differ from {index.classes}")
    # A resumed run holds out the images its first part held out, even if the folder has changed since.
    split = split_for(index, resume if resume is not None else cfg)
    # The new head's random initialisation comes from the seed, without touching the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model, weights = build_model(len(index.classes), "none" if resume else cfg.weights, quiet_fallback=True)
    notes = [f"no pretrained weights: {weights}"] if is_random_fallback(weights) else []
    start_step = 0
    if resume is not None:
        model.load_state_dict(resume.model.state_dict())
        start_step, weights = resume.step, f"resumed from {Path(cfg.resume).name} at step {resume.step}"
    pretrained = resume is not None or not weights.startswith("random")
    notes += list(split.notes)
    if cfg.freeze != "none":
        if pretrained:
            freeze_layers(model, cfg.freeze)
        else:
            notes.append(f"freeze={cfg.freeze} ignored: freezing random layers would keep them random")
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    optimizer = build_optimizer(model, cfg)
    if resume is not None and resume.optimizer:
        optimizer.load_state_dict(resume.optimizer)
    steps_per_epoch = math.ceil(len(split.train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    prior_seconds = float(resume.metrics.get("elapsed_s", 0.0)) if resume is not None else 0.0
    if resume is not None:
        _check_resumable(cfg, start_step, total_steps, prior_seconds)
    cfg, plan = plan_for(cfg, device, resume, len(index.classes))
    # The shortcut experiment: the same region is black in every image the model sees, in training and testing.
    hide = HideLungs(cfg.hide_lungs, tuple(cfg.hide_box))
    if hide.needs_masks:
        require_masks(index.files)
    # On a GPU the decoded images live on the GPU itself: no host-to-device copy per step.
    cache = ImageCache(index.files, cfg.image_size, device=device if device.type == "cuda" else "cpu",
                       masks=hide.needs_masks)
    attention_ids = [next(i for i in split.val if index.labels[i] == c) for c in range(len(index.classes))] if cfg.attention else []
    return Run(
        cfg=cfg, device=device, index=index, split=split, cache=cache, label_table=torch.tensor(index.labels, device=device),
        model=model, optimizer=optimizer, amp_dtype=autocast_dtype(cfg, device),
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, start_step=start_step, best_path=best_path,
        last_path=last_path, weights=weights, pretrained=pretrained, notes=notes,
        gen=torch.Generator().manual_seed(cfg.seed + start_step), attention_ids=attention_ids, hide=hide,
        keep=KEEP_POLICIES[cfg.keep],
        # A resumed run goes on where it stopped: its curves, its learning-rate schedule, what is left of its budget.
        prior_history=tuple(resume.metrics.get("history", [])) if resume is not None else (),
        prior_seconds=prior_seconds, plan=plan,
    )


def plan_for(cfg: TrainConfig, device: torch.device, resume: Checkpoint | None, classes: int
             ) -> tuple[TrainConfig, Plan | None]:
    """The settings with the image size this machine should train at (`cxr.train.plan`), and the plan; unchanged
    without `auto_size` or a time budget. A resumed run keeps the size its first part trained at."""
    if resume is not None:
        return (replace(cfg, image_size=resume.image_size), None) if cfg.auto_size else (cfg, None)
    if not (cfg.auto_size and cfg.time_budget_s):
        return cfg, None
    plan = plan_size(ceiling=cfg.image_size, budget_s=cfg.time_budget_s, batch=cfg.batch_size, classes=classes,
                     device=device, dtype=autocast_dtype(cfg, device), channels_last=cfg.channels_last,
                     cache=cache_file())
    return replace(cfg, image_size=plan.image_size), plan


def _check_resumable(cfg: TrainConfig, start_step: int, total_steps: int, prior_seconds: float) -> None:
    """A resumed run must have something left to do: its steps and its budget count from the run's start."""
    name = Path(cfg.resume).name
    if start_step >= total_steps:
        raise UserError(f"cannot resume: {name} is at step {start_step} and this run ends at step {total_steps}; "
                        "give more --epochs or --max-steps")
    if cfg.time_budget_s and prior_seconds >= cfg.time_budget_s:
        raise UserError(f"cannot resume: {name} has trained {prior_seconds:.0f} s and --time-budget-s is "
                        f"{cfg.time_budget_s:g}, which counts the time already trained; give a larger one, or 0 for none")


def start_state(run: Run, started: float) -> RunState:
    """The state a run begins in (`started`: when it began, before its set-up, which the budget counts too)."""
    budget = Budget(total_steps=run.total_steps, eval_every=run.cfg.eval_every, time_budget_s=run.cfg.time_budget_s,
                    start_step=run.start_step, prior_seconds=run.prior_seconds,
                    test_per_val=len(run.split.test) / max(len(run.split.val), 1),
                    end_reason="max_steps" if run.cfg.max_steps == run.total_steps else "epochs", started=started)
    return RunState(step=run.start_step, budget=budget, best=best_so_far(run), history=list(run.prior_history))


def best_so_far(run: Run) -> Best:
    """What a run has to beat. A resumed keep=best run starts from the best model its first part saved at --out, so
    a worse one does not replace it (and the card's best validation accuracy is the run's, not this part's)."""
    best = Best()
    if not (run.start_step and isinstance(run.keep, KeepBest) and run.best_path.is_file()):
        return best
    try:
        saved = load_checkpoint(run.best_path)
    except ValueError:
        return best  # not a checkpoint this run can build on: this part's first evaluation replaces it
    if saved.classes == run.index.classes and "val_accuracy" in saved.metrics:
        best.accuracy, best.loss = float(saved.metrics["val_accuracy"]), float(saved.metrics.get("val_loss", math.inf))
        best.step, best.state = saved.step, saved.model.state_dict()
    return best


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters (frozen layers need no optimiser state). Weight decay pulls the
    weights of convolutions and the head towards zero, not batch-norm scales or biases, which set levels."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    opt_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # On a GPU one fused kernel updates every tensor (instead of a few per tensor): fewer launches per step.
    fused = bool(params) and all(p.is_cuda for p in params)
    return opt_class(groups, lr=cfg.lr, **({"fused": True} if fused else {}))
