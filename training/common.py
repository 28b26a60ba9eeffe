"""What every training script shares: run folder, checkpoints, loss guard, device and AMP."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.store import DEFAULT_PACK

logger = logging.getLogger(__name__)

ARGS_FILE = "args.json"
EPOCHS_FILE = "epochs.jsonl"
CHECKPOINT_FILE = "checkpoint.pth"


class TrainingError(RuntimeError):
    """Training cannot go on (bad data, a non-finite loss, an unusable checkpoint)."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite: the run stops rather than train on garbage."""


def check_loss(loss: torch.Tensor, epoch: int, step: int) -> float:
    """The loss as a float; NonFiniteLossError naming the epoch and step when it is not finite."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"loss is {value} at epoch {epoch} step {step}: stopping (lower --lr, check the data)"
        )
    return value


PACK_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
"""The manifest's pack-name rule (models.manifest.PackManifest.name)."""


def check_pack_name(args: argparse.Namespace) -> str:
    """The pack name (--name, else the --out folder name), checked before any training."""
    name = str(args.name or args.out.name)
    if not PACK_NAME.match(name):
        raise TrainingError(
            f"pack name {name!r} (from --name or the --out folder) must be lowercase letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so runs on CPU repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"--device {name}: no CUDA device here")
    return torch.device(name)


def amp_enabled(args: argparse.Namespace, device: torch.device) -> bool:
    """Mixed precision only on CUDA (CPU autocast is slower than fp32 for these nets)."""
    return bool(args.amp) and device.type == "cuda"


def autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """An autocast context on CUDA when AMP is on, else a no-op."""
    if enabled:
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return value


def write_args(run_dir: Path, args: argparse.Namespace) -> Path:
    """The resolved arguments of a run, as JSON in the run folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ARGS_FILE
    resolved = {key: _jsonable(value) for key, value in sorted(vars(args).items())}
    path.write_text(json.dumps(resolved, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def append_epoch(run_dir: Path, summary: dict[str, Any]) -> None:
    """One JSON line per epoch in the run folder's epochs.jsonl."""
    with (run_dir / EPOCHS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(summary, ensure_ascii=False, sort_keys=True) + "\n")


def read_epochs(run_dir: Path) -> list[dict[str, Any]]:
    """Every epoch summary written so far."""
    path = run_dir / EPOCHS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    args: argparse.Namespace,
    extra: dict[str, Any] | None = None,
) -> None:
    """`{model, optimizer, lr_scheduler, epoch, args}` written atomically (plus `extra`)."""
    state: dict[str, Any] = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "epoch": epoch,
        "args": {key: _jsonable(value) for key, value in vars(args).items()},
    }
    state.update(extra or {})
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by save_checkpoint; TrainingError naming the file otherwise."""
    if not path.is_file():
        raise TrainingError(f"--resume {path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors alike
        raise TrainingError(f"--resume {path}: not a readable checkpoint ({err})") from err
    missing = {"model", "optimizer", "lr_scheduler", "epoch", "args"} - set(state)
    if missing:
        raise TrainingError(f"--resume {path}: checkpoint lacks {sorted(missing)}")
    return dict(state)


@dataclass
class Average:
    """A running mean for progress bars and epoch summaries."""

    total: float = 0.0
    count: int = 0

    def update(self, value: float, n: int = 1) -> None:
        self.total += value * n
        self.count += n

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Limit torch's intra-op threads for the duration (the machines are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def add_run_args(p: argparse.ArgumentParser, data_help: str, base_help: str) -> None:
    """Where a run reads, writes and starts from (shared by every trainer)."""
    p.add_argument("--data", type=Path, required=True, help=data_help)
    p.add_argument("--out", type=Path, required=True, help="pack folder to write")
    p.add_argument("--run-dir", type=Path, default=None, help="default: <out>.run beside --out")
    p.add_argument("--base-pack", default=DEFAULT_PACK, help=base_help)
    p.add_argument("--model-dir", type=Path, default=None, help="where --base-pack is looked up")


def add_output_args(p: argparse.ArgumentParser) -> None:
    """Device, seed, resume and the written pack's identity (shared by every trainer)."""
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="CUDA only")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from")
    p.add_argument("--name", default=None, help="pack name (default: the --out folder name)")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--license", default="LicenseRef-site-trained")
    p.add_argument(
        "--commercial-use",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="only when the training data's terms allow it",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def check_options(args: argparse.Namespace, checks: list[tuple[str, bool, str]]) -> None:
    """Raise TrainingError naming the first failed option (the options every trainer has,
    then the trainer's own `checks`); then check --data and the pack name."""
    shared = [
        ("--epochs", args.epochs >= 1, "at least 1"),
        ("--batch-size", args.batch_size >= 2, "at least 2"),
        ("--lr", args.lr > 0 and math.isfinite(args.lr), "positive"),
        ("--val-fraction", 0.0 <= args.val_fraction < 1.0, "in [0, 1)"),
        ("--threads", args.threads >= 1, "at least 1"),
        ("--max-steps", args.max_steps >= 0, "0 or more"),
    ]
    for option, ok, what in [*shared, *checks]:
        if not ok:
            value = getattr(args, option[2:].replace("-", "_"))
            raise TrainingError(f"{option} must be {what}, got {value}")
    if not args.data.is_dir():
        raise TrainingError(f"--data {args.data}: not a folder")
    check_pack_name(args)
