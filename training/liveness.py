"""Train the live/spoof classifier on folders of face crops; package it in a model pack.

Data: `live/` and one or more `spoof*/` folders (spoof_print, spoof_replay, ...) of face
crops, or a folder of such sets. Crops are resized to `--input-size` squares.

ONNX contract (training/README.md): input `crop` float32 [N,3,S,S], RGB, raw pixel
values 0..255 (the graph normalises); output `live` float32 [N], the probability that the
face is live. The crop is the detector's face box made square on its longer side and
scaled by `crop_scale` (manifest params), like the training crops were.

The pack is the base pack with `liveness.onnx` added (task `liveness`, optional); the
recognizer is untouched, so the contract id and the base calibration carry over.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from calibration.metrics import equal_error_rate
from models.manifest import (
    CALIBRATION_NAME,
    FileEntry,
    PackManifest,
    compute_contract_id,
    sha256_file,
    verify_pack,
    write_manifest,
)
from models.store import default_model_dir, resolve_pack, verified_manifest
from models.types import Task
from training import common
from training.common import TrainingError
from training.data import Augment, ImageDataset, load_liveness_images, stratified_split
from training.nets.liveness import INPUT_NAME, OUTPUT_NAME, LivenessNet, build_onnx
from training.packs import copy_files, staged_pack

logger = logging.getLogger(__name__)

LIVENESS_FILE = "liveness.onnx"
LIVENESS_WRAPPER = "pad_onnx"
"""The edge's PAD wrapper (models/liveness/onnx_pad.py); its params below describe our graph."""
EXPORT_MAX_DIFF = 1e-4
"""ONNX and torch live probabilities of the same crop must agree this closely."""
EXPORT_CHECK_FILE = "export_check.json"


LIVENESS_AUGMENT = Augment(
    rotate_deg=8.0, shift=0.05, scale=0.1, brightness=0.3, contrast=0.3, gray_p=0.0
)
"""The liveness trainer's augmentation defaults (face crops, not aligned chips)."""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Every option of a liveness training run."""
    p = argparse.ArgumentParser(description="Train the liveness classifier", add_help=add_help)
    common.add_run_args(p, "live/ + spoof*/ folders, or sets", "pack whose files are copied")
    p.add_argument("--input-size", type=int, default=80, help="crop side in pixels")
    p.add_argument(
        "--crop-scale", type=float, default=1.0, help="crop side / face box side (metadata)"
    )
    p.add_argument("--val-fraction", type=float, default=0.2, help="images held out per class")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=0, help="cap steps per epoch (0: no cap)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=0.2)
    Augment.add_args(p, LIVENESS_AUGMENT)
    common.add_output_args(p)
    return p


def validate_args(args: argparse.Namespace) -> None:
    """Reject values that would silently train nothing; TrainingError names the option."""
    checks = [
        ("--input-size", 16 <= args.input_size <= 512, "in [16, 512]"),
        ("--crop-scale", 0.5 <= args.crop_scale <= 4.0, "in [0.5, 4]"),
    ]
    common.check_options(args, checks)


def load_data(
    args: argparse.Namespace,
) -> tuple[ImageDataset, np.ndarray, list[int], dict[str, Any]]:
    """Training dataset, held-out crops and labels, and a record of the split."""
    try:
        images = load_liveness_images(args.data, args.input_size)
    except ValueError as err:
        raise TrainingError(f"--data {args.data}: {err}") from err
    train_idx, val_idx = stratified_split(images.labels, args.val_fraction, args.seed)
    augment = Augment.from_args(args)
    train = ImageDataset(images.crops[train_idx], [images.labels[i] for i in train_idx], augment)
    val_labels = [images.labels[i] for i in val_idx]
    record = {
        "train_live": sum(train.labels),
        "train_spoof": len(train.labels) - sum(train.labels),
        "val_live": sum(val_labels),
        "val_spoof": len(val_labels) - sum(val_labels),
        "val_images": [str(images.paths[i]) for i in val_idx],
    }
    return train, images.crops[val_idx], val_labels, record


def predict(net: LivenessNet, crops: np.ndarray, device: torch.device, batch: int) -> np.ndarray:
    """Live probabilities [N] of uint8 RGB crops [N,S,S,3], in eval mode."""
    net.eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            x = torch.from_numpy(crops[start : start + batch].transpose(0, 3, 1, 2)).float()
            out.append(torch.sigmoid(net(x.to(device))).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def evaluate(
    net: LivenessNet, crops: np.ndarray, labels: list[int], device: torch.device, batch: int
) -> dict[str, Any]:
    """APCER (spoof passed as live) and BPCER (live rejected) at 0.5, accuracy and EER."""
    probs = predict(net, crops, device, batch)
    y = np.asarray(labels)
    live, spoof = probs[y == 1].astype(np.float64), probs[y == 0].astype(np.float64)
    return {
        "images": int(len(y)),
        "accuracy": float(np.mean((probs >= 0.5) == (y == 1))) if len(y) else None,
        "apcer_at_0.5": float(np.mean(spoof >= 0.5)) if spoof.size else None,
        "bpcer_at_0.5": float(np.mean(live < 0.5)) if live.size else None,
        "eer": equal_error_rate(live, spoof),
    }


def train_one_epoch(
    net: LivenessNet,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[tuple[torch.Tensor, int]],
    device: torch.device,
    epoch: int,
    args: argparse.Namespace,
    pos_weight: torch.Tensor,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, float]:
    """One pass over the training crops; NonFiniteLossError stops the run."""
    net.train()
    loss_avg, acc_avg = common.Average(), common.Average()
    steps = len(loader) if not args.max_steps else min(len(loader), args.max_steps)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", disable=not args.progress)
    started = time.monotonic()
    for step, (crops, labels) in enumerate(loader):
        if step >= steps:
            break
        crops, target = crops.to(device), labels.to(device).float()
        with common.autocast(scaler is not None, device):
            logits = net(crops)
        loss = F.binary_cross_entropy_with_logits(
            logits.float(), target, pos_weight=pos_weight.to(device)
        )
        value = common.check_loss(loss, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        loss_avg.update(value, len(labels))
        acc_avg.update(float(((logits >= 0) == (target >= 0.5)).float().mean()), len(labels))
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg.mean:.3f}", acc=f"{acc_avg.mean:.2f}")
    bar.close()
    return {
        "loss": loss_avg.mean,
        "train_acc": acc_avg.mean,
        "steps": steps,
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": time.monotonic() - started,
    }


def export_pack(
    args: argparse.Namespace, net: LivenessNet, base_dir: Path, check: np.ndarray, run_dir: Path
) -> dict[str, Any]:
    """Write the base pack plus liveness.onnx, after checking ONNX against torch."""
    base = verified_manifest(base_dir)
    net = net.cpu().eval()
    model = build_onnx(net, args.input_size)
    with staged_pack(args.out, args.force) as work:
        path = work / LIVENESS_FILE
        path.write_bytes(model.SerializeToString())
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_out = session.run(
            [OUTPUT_NAME], {INPUT_NAME: check.transpose(0, 3, 1, 2).astype(np.float32)}
        )[0]
        torch_out = predict(net, check, torch.device("cpu"), args.batch_size)
        diff = float(np.max(np.abs(onnx_out - torch_out))) if len(check) else 0.0
        record = {"crops": len(check), "max_abs_diff": diff, "allowed": EXPORT_MAX_DIFF}
        (run_dir / EXPORT_CHECK_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if not diff <= EXPORT_MAX_DIFF:
            raise TrainingError(
                f"export check failed: ONNX and torch live probabilities differ by {diff:.2e} "
                f"> {EXPORT_MAX_DIFF} on {len(check)} crops; pack not written"
            )
        copied = copy_files(base_dir, base, work, skip={Task.LIVENESS})
        entry = FileEntry(
            path=LIVENESS_FILE,
            task=Task.LIVENESS,
            wrapper=LIVENESS_WRAPPER,
            sha256=sha256_file(path),
            license=args.license,
            commercial_use=bool(args.commercial_use),
            source=f"trained by jifang train liveness on {args.data.name}",
            # pad_onnx feeds (rgb/255 - mean) / std: std 1/255 hands the graph raw 0..255
            # values, which it normalises itself; the output is already a live probability.
            params={
                "input_size": args.input_size,
                "crop_scale": args.crop_scale,
                "mean": [0.0, 0.0, 0.0],
                "std": [1.0 / 255.0] * 3,
                "output": "probability",
            },
            optional=True,
        )
        files = (*copied, entry)
        manifest = PackManifest(
            name=args.name or args.out.name,
            version=args.version,
            built=date.today(),
            files=files,
            embedding=base.embedding,
            contract_id=compute_contract_id(files, base.embedding),
            description=f"{base.name} {base.version} with a trained liveness classifier",
        )
        write_manifest(work, manifest)
        if (base_dir / CALIBRATION_NAME).is_file():
            # Same recognizer, same contract: the base thresholds still hold.
            shutil.copy2(base_dir / CALIBRATION_NAME, work / CALIBRATION_NAME)
        verify_pack(work)
    return record


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate every epoch, export the pack; returns the run summary."""
    validate_args(args)
    common.seed_everything(args.seed)
    device = common.pick_device(args.device)
    run_dir: Path = args.run_dir or args.out.parent / f"{args.out.name}.run"
    args.run_dir = run_dir
    common.write_args(run_dir, args)
    try:
        base_dir = resolve_pack(str(args.base_pack), args.model_dir or default_model_dir())
    except Exception as err:  # ModelError or OSError from the store
        raise TrainingError(f"--base-pack {args.base_pack}: {err}") from err
    with common.torch_threads(args.threads):
        train, val_crops, val_labels, split = load_data(args)
        (run_dir / "split.json").write_text(json.dumps(split, indent=2))
        net = LivenessNet(dropout=args.dropout).to(device)
        loader = DataLoader(
            train,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            drop_last=len(train) > args.batch_size,
        )
        live = max(1, sum(train.labels))
        # Weigh live examples by the class ratio so a spoof-heavy set does not bias to spoof.
        pos_weight = torch.tensor((len(train.labels) - live) / live, dtype=torch.float32)
        optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
        scaler = torch.amp.GradScaler("cuda") if common.amp_enabled(args, device) else None
        start_epoch = 0
        if args.resume is not None:
            state = common.load_checkpoint(args.resume)
            try:
                net.load_state_dict(state["model"])
            except RuntimeError as err:
                raise TrainingError(
                    f"--resume {args.resume}: does not fit this model ({err})"
                ) from err
            optimizer.load_state_dict(state["optimizer"])
            lr_scheduler.load_state_dict(state["lr_scheduler"])
            start_epoch = int(state["epoch"]) + 1
            logger.info("resumed from %s at epoch %d", args.resume, start_epoch)
        for epoch in range(start_epoch, args.epochs):
            summary: dict[str, Any] = {"epoch": epoch}
            summary.update(
                train_one_epoch(net, optimizer, loader, device, epoch, args, pos_weight, scaler)
            )
            lr_scheduler.step()
            summary["val"] = evaluate(net, val_crops, val_labels, device, args.batch_size)
            common.append_epoch(run_dir, summary)
            common.save_checkpoint(
                run_dir / common.CHECKPOINT_FILE, net, optimizer, lr_scheduler, epoch, args
            )
            logger.info("epoch %d: loss %.4f, val %s", epoch, summary["loss"], summary["val"])
        check = val_crops if len(val_crops) else train.images[:32]
        record = export_pack(args, net, base_dir, check, run_dir)
    return {
        "pack": str(args.out),
        "run_dir": str(run_dir),
        "export_check": record,
        "epochs": common.read_epochs(run_dir),
    }


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse command-line style arguments (tests and the typer command use this)."""
    return get_args_parser().parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
