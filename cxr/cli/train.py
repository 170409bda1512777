"""The `train` command: its flags, made from `TrainConfig` itself (one per field, ranges from `BOUNDS`, each
preset's default in the help), the config they build on top of the machine's preset, and the progress it prints
from `fit`'s events (a progress bar and a line per evaluation, or JSON lines with --json).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cxr.cli.common import existing_folder, print_json
from cxr.data.index import DEFAULT_CLASSES, display_name, parse_classes
from cxr.errors import UserError
from cxr.train.evaluate import format_report
from cxr.bench.measure import format_duration

if TYPE_CHECKING:
    from cxr.train.config import TrainConfig

# TrainConfig fields the train command handles itself (not one plain flag each).
_SPECIAL_FIELDS = ("data", "classes", "augment", "preset", "hide_box")


# TrainConfig fields whose help says what they do rather than a default value.
_FLAG_HELP = {"out": "where to save (default: checkpoints/resnet18-<date>-<time>.pt, and -last.pt beside it)",
              "resume": "a checkpoint (usually a -last.pt) to go on from: its weights, optimiser, step, time and split"}


_ZERO_IS_NONE = ("max_steps", "time_budget_s")  # settings where 0 means no limit, not zero steps or seconds


def preset_defaults(name: str) -> str:
    """A setting's default as `train` picks it: one value when every preset agrees, else each preset's ("adamw
    (fast-cpu), adam (gpu, recipe)"), since without --preset the machine's preset sets it."""
    from cxr.train.presets import DECODERS, PRESETS, apply_preset

    by_value: dict[str, list[str]] = {}
    for preset in PRESETS:
        v = getattr(apply_preset(preset), name)
        if name in _ZERO_IS_NONE and not v:
            shown = "0 (no limit)"
        elif name == "workers" and "workers" in PRESETS[preset] and v == DECODERS:
            shown = "one per core but one"  # in words: the help, and docs/cli.md made from it, read the same anywhere
        else:
            shown = "none" if v in (None, "") else f"{v:g}" if isinstance(v, float) else str(v)
        by_value.setdefault(shown, []).append(preset)
    if len(by_value) == 1:
        return f"default: {next(iter(by_value))}"
    return "default: " + ", ".join(f"{v} ({', '.join(presets)})" for v, presets in by_value.items())


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field: numbers typed and ranged from BOUNDS, choices from CHOICES, switches for
    booleans, each with its default per preset. Defaults stay None here, so only the flags given override the
    preset."""
    from cxr.train.config import BOUNDS, CHOICES, TrainConfig

    for f in fields(TrainConfig):
        if f.name in _SPECIAL_FIELDS:
            continue
        flag, default = "--" + f.name.replace("_", "-"), f.default if f.default is not MISSING else None
        said = _FLAG_HELP.get(f.name) or preset_defaults(f.name)
        if f.name in BOUNDS:
            lo, hi, kind = BOUNDS[f.name]
            bounds = f"{lo:d} to {hi:d}" if kind is int else f"{lo:g} to {hi:g}"
            parser.add_argument(flag, type=kind, metavar="N" if kind is int else "X", help=f"{bounds}; {said}")
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=said)
        elif f.name in CHOICES:
            parser.add_argument(flag, choices=CHOICES[f.name], help=said)
        else:
            parser.add_argument(flag, help=said)


def train_config(args: argparse.Namespace) -> "TrainConfig":
    import torch

    from cxr.train.config import TrainConfig
    from cxr.train.presets import apply_preset, default_preset
    from cxr.data.lungs import box_text
    from cxr.data.transforms import AugmentConfig

    # No --preset: the preset for this machine, as the app does (Fast on a CPU, GPU on CUDA).
    cuda = args.device in (None, "auto", "cuda") and torch.cuda.is_available()
    cfg = apply_preset(args.preset or default_preset(cuda))
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if "classes" in overrides:
        overrides["classes"] = parse_classes(overrides["classes"])
    if "image_size" in overrides and "auto_size" not in overrides:
        overrides["auto_size"] = False  # a size given by hand is the size trained at, on any machine
    if args.hide_box:
        try:
            overrides["hide_box"] = tuple(float(v) for v in args.hide_box.split(","))
        except ValueError:
            raise UserError(f"--hide-box takes four fractions such as {box_text()}, got {args.hide_box!r}") from None
    if args.augment is not None:
        names = [] if args.augment == "none" else list(AugmentConfig.names()) if args.augment == "all" else args.augment.split(",")
        overrides["augment"] = cfg.augment.only([n.strip() for n in names if n.strip()])  # the preset's strengths
    return replace(cfg, **overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from cxr.train.events import REASONS, Attention, Done, Evaluated, Note, Started, Step
    from cxr.train.model import is_random_fallback
    from cxr.train.loop import fit

    cfg = train_config(args)
    existing_folder(cfg.data, "--data")
    if cfg.resume and Path(cfg.resume).is_dir():
        raise UserError(f"--resume {cfg.resume} is a folder; name the checkpoint file (.pt) inside it")
    bar = None
    try:
        for ev in fit(cfg):
            if args.json:
                print_json(ev.to_dict(maps=args.json_attention) if isinstance(ev, Attention) else ev.to_dict())
                continue
            if isinstance(ev, Started):
                from tqdm import tqdm

                sizes = ", ".join(f"{k} {v}" for k, v in ev.split.items())
                counts = ", ".join(f"{display_name(k)} {v}" for k, v in ev.counts.items())
                print(f"data: {cfg.data} ({ev.layout}{', SYNTHETIC' if ev.synthetic else ''}): {counts}")
                # A fallback to random weights is explained once, by the warning that follows.
                weights = "random (no ImageNet weights: see the warning)" if is_random_fallback(ev.weights) else ev.weights
                print(f"split: {sizes}  |  device: {ev.device}  |  preset: {cfg.preset or 'none'}  |  weights: {weights}")
                if ev.plan:  # a budgeted run chose its image size for this machine: say what and why
                    print(f"image size: {ev.plan}")
                if cfg.hide_lungs != "none":  # the shortcut experiment: said before its numbers, not only after
                    from cxr.data.lungs import HIDE_MODES, box_text

                    box = f" {box_text(cfg.hide_box)}" if cfg.hide_lungs == "box" else ""
                    print(f"lungs hidden ({cfg.hide_lungs}{box}): {HIDE_MODES[cfg.hide_lungs]}")
                # With a time budget the run ends by the clock: a step total would only mislead.
                bar = tqdm(total=None if cfg.time_budget_s else ev.total_steps, initial=ev.start_step, unit="step",
                           dynamic_ncols=True)
                if cfg.time_budget_s:
                    print(f"time budget: {format_duration(cfg.time_budget_s)} (the run stops by itself)")
            elif isinstance(ev, Step) and bar is not None:
                bar.update(ev.step - bar.n)
                bar.set_postfix(loss=f"{ev.train_loss:.3f}", img_s=f"{ev.train_images_per_sec:.1f}")
            elif isinstance(ev, Evaluated):
                line = (
                    f"step {ev.step}{'' if cfg.time_budget_s else f'/{ev.total_steps}'}  train loss {ev.train_loss:.3f}  "
                    f"val loss {ev.val_loss:.3f}  val accuracy {ev.val_accuracy:.1%}  "
                    f"{ev.train_images_per_sec:.1f} img/s  ETA {format_duration(ev.eta_s)}"
                    # keep=last saves every evaluation's weights: "[best]" would be claimed for a worse one
                    + ("" if not ev.is_best else "  [saved]" if cfg.keep == "last" else "  [best]")
                )
                (bar.write if bar is not None else print)(line)
            elif isinstance(ev, Note):
                (bar.write if bar is not None else print)(f"warning: {ev.message}")
            elif isinstance(ev, Done):
                if bar is not None:
                    bar.close()
                print(f"\nstopped after {ev.steps} steps ({REASONS.get(ev.reason, ev.reason)}); "
                      f"{ev.train_images_per_sec:.1f} training images/s, {format_duration(ev.seconds)}")
                if not ev.checkpoint:
                    print("it ended before its first evaluation: nothing was saved")
                    continue
                kept = "last" if cfg.keep == "last" else "best"
                print(f"{kept} validation accuracy {ev.best_val_accuracy:.1%} (step {ev.best_step}, the weights kept); "
                      "on the held-out test set:")
                print(format_report(ev.test_report))
                if ev.calibration:
                    from cxr.train.calibration import calibration_words

                    print(calibration_words(ev.calibration))
                if cfg.hide_lungs != "none":
                    from cxr.explain.focus import shortcut_sentence

                    print(shortcut_sentence(ev.test_accuracy, len(ev.test_report["classes"]), cfg.hide_lungs))
                print(f"checkpoint: {ev.checkpoint}" + (f"  (last: {ev.last_checkpoint})" if ev.last_checkpoint else ""))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print("\ninterrupted: the best checkpoint so far and a -last checkpoint are kept; continue with --resume",
              file=sys.stderr)
        return 130
    return 0


def add_train_parser(sub: "argparse._SubParsersAction") -> None:
    """The `train` sub-command and its flags."""
    from cxr.data.lungs import box_text
    from cxr.train.presets import PRESETS

    t = sub.add_parser("train", help="fine-tune ResNet18 on a dataset folder")
    t.add_argument("--data", required=True, help="dataset folder (Kaggle layouts or <class>/*.png)")
    t.add_argument("--preset", choices=sorted(PRESETS), help="start from named settings (default: the preset for "
                   "this machine, fast-cpu on a CPU, gpu on CUDA; flags still override)")
    t.add_argument("--classes", help=f"comma-separated class keys (default {','.join(DEFAULT_CLASSES)})")
    t.add_argument("--augment", help="'all', 'none', or a comma list of: hflip,rotate,scale,translate,brightness,contrast")
    t.add_argument("--hide-box", help=f"with --hide-lungs box: x0,x1,y0,y1 fractions (default {box_text()})")
    add_config_flags(t)
    t.add_argument("--json", action="store_true", help="print one JSON object per event")
    t.add_argument("--json-attention", action="store_true", help="with --json, include the attention maps")
    t.set_defaults(func=cmd_train)
