"""Train the station's cylinder detector on YOLO-labelled frames; write a station pack.

Data: edge_agent.station.detector_eval's layout (`<view>/<image>.jpg` with
`<view>/labels/<image>.txt`, class 0 = cylinder), one folder or a folder of such folders.
Held out for the per-epoch evaluation: the last `--val-fraction` of each view's frames in
time order (natural name order: the frame number), never a random pick, because neighbouring
frames of a view look alike.

The net (training/nets/cylinder.py) starts from random weights: nothing is downloaded. The
pack is `--out` (a bare name is a folder in `--model-dir`) with `station.yaml` and
`cylinder_detector.onnx`, written only after the ONNX outputs match torch on the same frames.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import generalized_box_iou_loss
from tqdm import tqdm

from edge_agent.station.detector_eval import (
    LabelError,
    LabelledImage,
    average_precision,
    load_labelled_set,
    read_frame,
)
from models.manifest import FileEntry, sha256_file
from models.runtime.cylinder_detector import (
    CylinderParams,
    decode,
    letterbox,
)
from models.station_pack import StationPackManifest, verify_station_pack, write_station_manifest
from models.store import default_model_dir
from models.types import Task
from training import common
from training.common import TrainingError
from training.nets.cylinder import STRIDE, CylinderNet, build_onnx, cell_centres, decode_torch
from training.packs import staged_pack

logger = logging.getLogger(__name__)

DETECTOR_FILE = "cylinder_detector.onnx"
DETECTOR_WRAPPER = "centernet_cylinder"
EXPORT_MAX_HEAT_DIFF = 1e-4
EXPORT_MAX_BOX_DIFF = 1e-2
"""ONNX and torch must agree this closely: peak probabilities, and box edges in input pixels."""
EXPORT_CHECK_FILE = "export_check.json"
GAUSSIAN_ALPHA = 0.54
"""Centre-heat spread: sigma = alpha x box side / 6 (TTFNet's elliptical Gaussian)."""
MIN_VISIBLE = 0.4
"""An augmented box cut by the frame edge is kept when this share of it is still visible."""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Every option of a cylinder detector training run."""
    p = argparse.ArgumentParser(description="Train the cylinder detector", add_help=add_help)
    p.add_argument("--data", type=Path, required=True, help="YOLO-labelled view folders")
    p.add_argument(
        "--out", type=Path, required=True, help="station pack: a name in --model-dir, or a folder"
    )
    p.add_argument("--model-dir", type=Path, default=None, help="default $JIFANG_MODEL_DIR")
    p.add_argument("--run-dir", type=Path, default=None, help="default: <out>.run beside it")
    p.add_argument("--input-width", type=int, default=320, help="network input, multiple of 32")
    p.add_argument("--input-height", type=int, default=192, help="network input, multiple of 32")
    p.add_argument("--val-fraction", type=float, default=0.15, help="last frames of each view")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-steps", type=int, default=0, help="cap steps per epoch (0: no cap)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--scale-jitter", type=float, default=0.35, help="random zoom 1 +- this")
    p.add_argument("--shift", type=float, default=0.2, help="random shift, share of the input")
    p.add_argument("--score-threshold", type=float, default=0.3, help="written to the pack")
    common.add_output_args(p)
    return p


def resolve_out(args: argparse.Namespace) -> None:
    """A bare --out name becomes a folder in the model directory."""
    if len(args.out.parts) == 1:
        args.out = (args.model_dir or default_model_dir()) / args.out


def validate_args(args: argparse.Namespace) -> None:
    """Reject values that would silently train nothing; TrainingError names the option."""
    checks = [
        (
            "--input-width",
            64 <= args.input_width <= 1024 and args.input_width % 32 == 0,
            "a multiple of 32 in [64, 1024]",
        ),
        (
            "--input-height",
            64 <= args.input_height <= 1024 and args.input_height % 32 == 0,
            "a multiple of 32 in [64, 1024]",
        ),
        ("--scale-jitter", 0.0 <= args.scale_jitter < 1.0, "in [0, 1)"),
        ("--shift", 0.0 <= args.shift <= 0.5, "in [0, 0.5]"),
        ("--score-threshold", 0.01 <= args.score_threshold <= 0.99, "in [0.01, 0.99]"),
    ]
    common.check_options(args, checks)


def time_split(
    images: tuple[LabelledImage, ...], fraction: float
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(train, held out): the last `fraction` of each folder's frames (already in time order)."""
    train: list[LabelledImage] = []
    held: list[LabelledImage] = []
    folders: dict[str, list[LabelledImage]] = {}
    for item in images:
        folders.setdefault(item.folder, []).append(item)
    for items in folders.values():
        n_held = int(round(len(items) * fraction)) if len(items) > 1 else 0
        cut = len(items) - n_held
        train.extend(items[:cut])
        held.extend(items[cut:])
    return train, held


def heat_targets(
    boxes: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre heat [1,h,w], box targets [4,h,w] (input pixels) and regression weights [h,w]."""
    h, w = height // STRIDE, width // STRIDE
    heat = np.zeros((h, w), np.float32)
    target = np.zeros((4, h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # Larger boxes first, so a small box's cells win where two overlap.
    for x0, y0, x1, y1 in sorted(boxes.tolist(), key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
        sx = max(GAUSSIAN_ALPHA * (x1 - x0) / 6 / STRIDE, 0.5)
        sy = max(GAUSSIAN_ALPHA * (y1 - y0) / 6 / STRIDE, 0.5)
        g = np.exp(-((xs - ix) ** 2) / (2 * sx**2) - ((ys - iy) ** 2) / (2 * sy**2))
        g[iy, ix] = 1.0
        heat = np.maximum(heat, g)
        region = g > 0.05
        target[:, region] = np.asarray([x0, y0, x1, y1], np.float32)[:, None]
        weight[region] = g[region]
    return heat[None], target, weight


class CylinderFrames(Dataset[tuple[torch.Tensor, ...]]):
    """Augmented letterboxed frames with CenterNet targets (images cached at 2x the input)."""

    def __init__(
        self, images: list[LabelledImage], args: argparse.Namespace, augment: bool
    ) -> None:
        self.width, self.height = args.input_width, args.input_height
        self.augment = augment
        self.scale_jitter, self.shift = args.scale_jitter, args.shift
        self.cached: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        for item in images:
            frame = read_frame(item.path)
            fh, fw = frame.shape[:2]
            f = min(2 * self.width / fw, 2 * self.height / fh, 1.0)
            small = cv2.resize(frame, (round(fw * f), round(fh * f)), interpolation=cv2.INTER_AREA)
            sh, sw = small.shape[:2]
            self.cached.append(small)
            self.boxes.append(item.pixel_boxes(sw, sh))

    def __len__(self) -> int:
        return len(self.cached)

    def sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """An RGB uint8 input and its boxes in input pixels (augmented when training)."""
        image, boxes = self.cached[index], self.boxes[index]
        ih, iw = image.shape[:2]
        fit = min(self.width / iw, self.height / ih)
        zoom, dx, dy, flip = 1.0, 0.0, 0.0, False
        if self.augment:
            zoom = float(rng.uniform(1 - self.scale_jitter, 1 + self.scale_jitter))
            dx = float(rng.uniform(-self.shift, self.shift)) * self.width
            dy = float(rng.uniform(-self.shift, self.shift)) * self.height
            flip = bool(rng.random() < 0.5)
        s = fit * zoom
        sx = -s if flip else s
        tx = (self.width - sx * iw) / 2 + dx if not flip else (self.width + s * iw) / 2 + dx
        ty = (self.height - s * ih) / 2 + dy
        matrix = np.asarray([[sx, 0, tx], [0, s, ty]], np.float32)
        warped = cv2.warpAffine(
            image,
            matrix,
            (self.width, self.height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(114, 114, 114),
        )
        xa, xb = boxes[:, 0] * sx + tx, boxes[:, 2] * sx + tx
        out = np.stack(
            [np.minimum(xa, xb), boxes[:, 1] * s + ty, np.maximum(xa, xb), boxes[:, 3] * s + ty],
            axis=1,
        )
        clipped = out.copy()
        clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, self.width)
        clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, self.height)
        area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
        visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = (
            (visible >= MIN_VISIBLE * np.maximum(area, 1e-6))
            & ((clipped[:, 2] - clipped[:, 0]) >= 4)
            & ((clipped[:, 3] - clipped[:, 1]) >= 4)
        )
        rgb = cv2.cvtColor(warped, cv2.COLOR_BGR2RGB)
        if self.augment:
            rgb = _photometric(rgb, rng)
        return rgb, clipped[keep].astype(np.float32)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        rgb, boxes = self.sample(index, rng)
        heat, target, weight = heat_targets(boxes, self.width, self.height)
        return (
            torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float(),
            torch.from_numpy(heat),
            torch.from_numpy(target),
            torch.from_numpy(weight),
        )


def _photometric(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation, occasional grey and blur (plant light varies)."""
    x = rgb.astype(np.float32)
    x = (x - 128.0) * rng.uniform(0.7, 1.3) + 128.0 + rng.uniform(-30, 30)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * (0.0 if rng.random() < 0.1 else rng.uniform(0.6, 1.4))
    out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    return np.asarray(out)


def focal_loss(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, per centre."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1.0).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - heat) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def box_loss(
    reg: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, centres: torch.Tensor
) -> torch.Tensor:
    """GIoU loss of the boxes predicted around each centre, weighted by the centre heat."""
    mask = weight > 0
    if not mask.any():
        return reg.sum() * 0.0
    d = torch.exp(torch.clamp(reg, max=5.0)) * STRIDE
    xy = centres.to(reg.device).expand(reg.shape[0], -1, -1, -1)
    pred = torch.cat([xy - d[:, 0:2], xy + d[:, 2:4]], dim=1).permute(0, 2, 3, 1)[mask]
    truth = target.permute(0, 2, 3, 1)[mask]
    w = weight[mask]
    loss = generalized_box_iou_loss(pred, truth, reduction="none")
    total: torch.Tensor = (loss * w).sum() / w.sum()
    return total


def train_one_epoch(
    net: CylinderNet,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    device: torch.device,
    epoch: int,
    args: argparse.Namespace,
    centres: torch.Tensor,
) -> dict[str, float]:
    """One pass over the augmented frames; NonFiniteLossError stops the run."""
    net.train()
    heat_avg, box_avg = common.Average(), common.Average()
    steps = len(loader) if not args.max_steps else min(len(loader), args.max_steps)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", disable=not args.progress)
    started = time.monotonic()
    for step, (images, heat, target, weight) in enumerate(loader):
        if step >= steps:
            break
        images, heat = images.to(device), heat.to(device)
        target, weight = target.to(device), weight.to(device)
        logits, reg = net(images)
        heat_loss = focal_loss(logits.float(), heat)
        reg_loss = box_loss(reg.float(), target, weight, centres)
        loss = heat_loss + reg_loss
        common.check_loss(loss, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        heat_avg.update(float(heat_loss.detach()), len(images))
        box_avg.update(float(reg_loss.detach()), len(images))
        bar.update(1)
        bar.set_postfix(heat=f"{heat_avg.mean:.3f}", giou=f"{box_avg.mean:.3f}")
    bar.close()
    return {
        "loss": heat_avg.mean + box_avg.mean,
        "heat_loss": heat_avg.mean,
        "box_loss": box_avg.mean,
        "steps": steps,
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": time.monotonic() - started,
    }


def letterboxed(
    images: list[LabelledImage], args: argparse.Namespace
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Inputs [N,3,H,W] float32 as the runtime feeds them, and the boxes in input pixels."""
    tensors, truths = [], []
    for item in images:
        frame = read_frame(item.path)
        rgb, fit = letterbox(frame, args.input_width, args.input_height)
        fh, fw = frame.shape[:2]
        boxes = item.pixel_boxes(fw, fh) * fit.scale + np.asarray(
            [fit.offset_x, fit.offset_y, fit.offset_x, fit.offset_y], np.float32
        )
        tensors.append(rgb.transpose(2, 0, 1).astype(np.float32))
        truths.append(boxes)
    shape = (0, 3, args.input_height, args.input_width)
    return (np.stack(tensors) if tensors else np.zeros(shape, np.float32)), truths


def predict(
    net: CylinderNet, inputs: np.ndarray, device: torch.device, centres: torch.Tensor, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Torch outputs as the ONNX graph gives them: peaks [N,1,h,w], boxes [N,4,h,w]."""
    net.eval()
    heats, boxes = [], []
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            x = torch.from_numpy(inputs[start : start + batch]).to(device)
            logits, reg = net(x)
            peaks, b = decode_torch(logits.float(), reg.float(), centres)
            heats.append(peaks.cpu().numpy())
            boxes.append(b.cpu().numpy())
    return np.concatenate(heats), np.concatenate(boxes)


def evaluate(
    net: CylinderNet,
    inputs: np.ndarray,
    truths: list[np.ndarray],
    device: torch.device,
    centres: torch.Tensor,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Box AP@0.5 on held-out frames (in input pixels, decoded as the runtime does)."""
    if len(inputs) == 0:
        return {"images": 0, "box_ap50": None}
    heat, boxes = predict(net, inputs, device, centres, args.batch_size)
    params = _params(args)
    dets = [decode(heat[i], boxes[i], params, 0.05) for i in range(len(inputs))]
    ap = average_precision(dets, truths)
    return {"images": len(inputs), "box_ap50": round(ap, 4) if math.isfinite(ap) else None}


def _params(args: argparse.Namespace) -> CylinderParams:
    return CylinderParams(
        input_width=args.input_width,
        input_height=args.input_height,
        score_threshold=args.score_threshold,
    )


def export_pack(
    args: argparse.Namespace,
    net: CylinderNet,
    check: np.ndarray,
    run_dir: Path,
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """Write the station pack after checking the ONNX graph against torch on `check` inputs."""
    import onnxruntime as ort

    net = net.cpu().eval()
    centres = torch.from_numpy(cell_centres(args.input_height, args.input_width))
    model = build_onnx(net, args.input_width, args.input_height)
    with staged_pack(args.out, args.force) as work:
        path = work / DETECTOR_FILE
        path.write_bytes(model.SerializeToString())
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_heat, onnx_boxes = session.run(["heat", "boxes"], {"image": check})
        torch_heat, torch_boxes = predict(net, check, torch.device("cpu"), centres, args.batch_size)
        heat_diff = float(np.max(np.abs(onnx_heat - torch_heat))) if len(check) else 0.0
        box_diff = float(np.max(np.abs(onnx_boxes - torch_boxes))) if len(check) else 0.0
        record = {
            "frames": len(check),
            "max_heat_diff": heat_diff,
            "max_box_diff_px": box_diff,
            "allowed": {"heat": EXPORT_MAX_HEAT_DIFF, "box_px": EXPORT_MAX_BOX_DIFF},
        }
        (run_dir / EXPORT_CHECK_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if not (heat_diff <= EXPORT_MAX_HEAT_DIFF and box_diff <= EXPORT_MAX_BOX_DIFF):
            raise TrainingError(
                f"export check failed: ONNX and torch differ by {heat_diff:.2e} (heat), "
                f"{box_diff:.2e} px (boxes) on {len(check)} frames; pack not written"
            )
        entry = FileEntry(
            path=DETECTOR_FILE,
            task=Task.CYLINDER_DETECTOR,
            wrapper=DETECTOR_WRAPPER,
            sha256=sha256_file(path),
            license=args.license,
            commercial_use=bool(args.commercial_use),
            source=f"trained from random weights by jifang train station-detector on {args.data.name}",
            params=_params(args).model_dump(),
        )
        manifest = StationPackManifest(
            name=args.name or args.out.name,
            version=args.version,
            built=date.today(),
            files=(entry,),
            description="cylinder detector (CenterNet-style, single class) for zone presence",
            evaluation={**evaluation, "export_check": record},
        )
        write_station_manifest(work, manifest)
        verify_station_pack(work)
    return record


def load_data(
    args: argparse.Namespace,
) -> tuple[list[LabelledImage], list[LabelledImage], dict[str, Any]]:
    """Training and held-out frames (time split per view) and a record of the split."""
    try:
        labelled = load_labelled_set(args.data)
    except LabelError as err:
        raise TrainingError(f"--data: {err}") from err
    train, held = time_split(labelled.images, args.val_fraction)
    if not train:
        raise TrainingError(f"--data {args.data}: no frame left to train on")
    record = {
        "train_images": len(train),
        "train_boxes": int(sum(len(i.boxes) for i in train)),
        "val_images": [str(i.path) for i in held],
        "unlabelled_skipped": [str(p) for p in labelled.unlabelled],
        "split": f"time: last {args.val_fraction:.0%} of each view's frames held out",
    }
    return train, held, record


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate every epoch, export the station pack; returns the run summary."""
    resolve_out(args)
    validate_args(args)
    common.seed_everything(args.seed)
    device = common.pick_device(args.device)
    run_dir: Path = args.run_dir or args.out.parent / f"{args.out.name}.run"
    args.run_dir = run_dir
    common.write_args(run_dir, args)
    started = time.monotonic()
    with common.torch_threads(args.threads):
        train_items, held_items, split = load_data(args)
        (run_dir / "split.json").write_text(json.dumps(split, indent=2))
        try:
            dataset = CylinderFrames(train_items, args, augment=True)
            val_inputs, val_truths = letterboxed(held_items, args)
        except LabelError as err:
            raise TrainingError(f"--data: {err}") from err
        loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            drop_last=len(dataset) > args.batch_size,
        )
        centres = torch.from_numpy(cell_centres(args.input_height, args.input_width)).to(device)
        net = CylinderNet().to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        steps = len(loader) if not args.max_steps else min(len(loader), args.max_steps)
        lr_scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=args.lr, total_steps=max(args.epochs * steps, 1), pct_start=0.15
        )
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
        val: dict[str, Any] = {}
        for epoch in range(start_epoch, args.epochs):
            summary: dict[str, Any] = {"epoch": epoch}
            summary.update(
                train_one_epoch(net, optimizer, lr_scheduler, loader, device, epoch, args, centres)
            )
            val = evaluate(net, val_inputs, val_truths, device, centres, args)
            summary["val"] = val
            common.append_epoch(run_dir, summary)
            common.save_checkpoint(
                run_dir / common.CHECKPOINT_FILE, net, optimizer, lr_scheduler, epoch, args
            )
            logger.info("epoch %d: loss %.4f, val %s", epoch, summary["loss"], val)
        train_seconds = time.monotonic() - started
        if len(val_inputs):
            check = val_inputs[:16]
        else:
            check, _ = letterboxed(train_items[:16], args)
        evaluation = {"val": val, "split": split["split"], "train_seconds": round(train_seconds, 1)}
        record = export_pack(args, net, check, run_dir, evaluation)
    return {
        "pack": str(args.out),
        "run_dir": str(run_dir),
        "export_check": record,
        "train_seconds": train_seconds,
        "epochs": common.read_epochs(run_dir),
    }


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse command-line style arguments (tests and the typer command use this)."""
    return get_args_parser().parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
