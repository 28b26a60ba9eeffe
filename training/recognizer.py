"""Fine-tune the dlib ResNet recognizer with a margin-softmax head; export a model pack.

torchvision references shape: `get_args_parser`, `load_data`, `train_one_epoch`,
`evaluate`, `main(args)`. The backbone starts from a base pack's weights (jifang-open by
default), trains on identity folders (`<set>/<identity>/<image>` or one set), is verified
every epoch on identities held out of training, and is exported as a pack whose recognizer
has the base recognizer's signature (wrapper `dlib_resnet`), so the edge loads it unchanged.
The pack gets a new contract id (its weights changed); the base calibration is not copied.

Run folder: args.json, split.json, baseline.json (metrics before training), epochs.jsonl,
checkpoint.pth, export_check.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from calibration.metrics import pair_scores, score_report
from models.convert.dlib_resnet import INPUT_NAME, OUTPUT_NAME, build_onnx
from models.manifest import (
    EmbeddingSpec,
    FileEntry,
    PackManifest,
    compute_contract_id,
    sha256_file,
    write_manifest,
)
from models.store import default_model_dir, resolve_pack, verified_manifest
from models.types import Task
from models.vectors import l2_normalize
from training import common
from training.common import TrainingError
from training.data import (
    Augment,
    ChipMaker,
    IdentityChips,
    ImageDataset,
    identities_of,
    load_identity_chips,
    split_identities,
)
from training.nets.dlib_resnet import DlibResNet
from training.packs import (
    DLIB_WRAPPER,
    copy_files,
    dlib_net_from_pack,
    min_cosine,
    skimage_faces,
    staged_pack,
)

logger = logging.getLogger(__name__)

EXPORT_MIN_COSINE = 0.9999
"""ONNX and torch embeddings of the same chip must agree at least this well."""
SPLIT_FILE = "split.json"
BASELINE_FILE = "baseline.json"
EXPORT_CHECK_FILE = "export_check.json"


class MarginHead(nn.Module):
    """Normalised class centres with an additive cosine (CosFace) or angular (ArcFace) margin."""

    def __init__(self, dim: int, classes: int, kind: str, scale: float, margin: float) -> None:
        super().__init__()
        if kind not in ("cosface", "arcface"):
            raise ValueError(f"head {kind!r}: expected cosface or arcface")
        self.kind = kind
        self.scale = scale
        self.margin = margin
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine of every embedding to every class centre [N,C]."""
        return F.linear(F.normalize(embeddings), F.normalize(self.weight))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(embeddings.float())
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        if self.kind == "cosface":
            target = cos - self.margin
        else:
            # Clamp so acos has a finite gradient at +-1.
            theta = torch.acos(cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
            target = torch.cos(theta + self.margin)
        return self.scale * (onehot * target + (1.0 - onehot) * cos)


class RecognizerModel(nn.Module):
    """Backbone plus margin head: what a checkpoint's `model` holds."""

    def __init__(self, backbone: DlibResNet, head: MarginHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Every option of a recognizer fine-tuning run."""
    p = argparse.ArgumentParser(description="Fine-tune the recognizer", add_help=add_help)
    common.add_run_args(p, "identity folders, or sets of them", "pack name or folder to start from")
    p.add_argument("--aligned", action="store_true", help="images are already aligned chips")
    p.add_argument("--val-fraction", type=float, default=0.3, help="identities held out per set")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=0, help="cap steps per epoch (0: no cap)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument(
        "--clip-grad-norm", type=float, default=5.0, help="max gradient norm (0: no clipping)"
    )
    p.add_argument("--head", choices=["cosface", "arcface"], default="cosface")
    p.add_argument("--margin", type=float, default=0.2, help="cosine or angular margin")
    p.add_argument("--scale", type=float, default=30.0, help="logit scale s")
    p.add_argument(
        "--train-layers", type=int, default=0, help="train only the last N learned layers (0: all)"
    )
    Augment.add_args(p, Augment())
    common.add_output_args(p)
    return p


def validate_args(args: argparse.Namespace) -> None:
    """Reject values that would silently train nothing; TrainingError names the option."""
    checks = [
        ("--margin", 0.0 <= args.margin < 1.0, "in [0, 1)"),
        ("--scale", args.scale > 0, "positive"),
        ("--clip-grad-norm", args.clip_grad_norm >= 0, "0 or more"),
    ]
    common.check_options(args, checks)


@dataclass(frozen=True)
class RecognizerData:
    """Train and held-out chips, and the identity split that made them."""

    train: IdentityChips
    val: IdentityChips
    classes: list[str]
    split: dict[str, Any]
    maker: ChipMaker


def load_data(args: argparse.Namespace, base_dir: Path, chip_size: int) -> RecognizerData:
    """Split identities per set, then align every image into chips with the base pack."""
    try:
        split = split_identities(identities_of(args.data), args.val_fraction, args.seed)
    except ValueError as err:
        raise TrainingError(f"--data {args.data}: {err}") from err
    engine = None
    if not args.aligned:
        from models.engine import FaceEngine

        engine = FaceEngine(base_dir, threads=args.threads)
    maker = ChipMaker(engine, chip_size)
    train = load_identity_chips(args.data, split.train, maker, args.progress)
    val = load_identity_chips(args.data, split.val, maker, args.progress)
    classes = sorted(set(train.labels))
    if len(classes) < 2:
        raise TrainingError(f"--data {args.data}: {len(classes)} training identities, need 2+")
    record = {
        "train": split.train,
        "val": split.val,
        "train_images": len(train.labels),
        "val_images": len(val.labels),
        "skipped": dict(train.skipped + val.skipped),
    }
    return RecognizerData(train, val, classes, record, maker)


def embed(
    backbone: nn.Module, chips: np.ndarray, device: torch.device, batch_size: int
) -> np.ndarray:
    """Raw (unnormalised) embeddings of uint8 RGB chips [N,H,W,3], in eval mode."""
    backbone.eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(chips), batch_size):
            batch = torch.from_numpy(chips[start : start + batch_size].transpose(0, 3, 1, 2))
            out.append(backbone(batch.float().to(device)).float().cpu().numpy())
    dim = int(getattr(backbone, "dim", 0))
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def evaluate(
    backbone: nn.Module, val: IdentityChips, device: torch.device, batch_size: int
) -> dict[str, Any]:
    """Verification on held-out identities, per set: pairs, FNMR at supported FMRs, EER."""
    results: dict[str, Any] = {}
    for set_name in sorted(set(val.sets)):
        part = val.subset(set_name)
        vectors = embed(backbone, part.chips, device, batch_size)
        if not np.isfinite(vectors).all():
            raise TrainingError(f"held-out embeddings of {set_name} are not finite: stopping")
        norm = float(np.linalg.norm(vectors.astype(np.float64), axis=1).mean())
        vectors = l2_normalize(vectors, np.float32)
        genuine, impostor = pair_scores(vectors, part.labels)
        report = asdict(score_report(genuine, impostor))
        report["identities"] = len(set(part.labels))
        report["mean_raw_norm"] = norm
        report["images"] = len(part.labels)
        report["genuine_mean"] = float(genuine.mean()) if genuine.size else None
        report["impostor_mean"] = float(impostor.mean()) if impostor.size else None
        results[set_name] = report
    return results


def train_one_epoch(
    model: RecognizerModel,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[tuple[torch.Tensor, int]],
    device: torch.device,
    epoch: int,
    args: argparse.Namespace,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, float]:
    """One pass over the training chips; NonFiniteLossError stops the run."""
    model.train()
    use_amp = scaler is not None
    loss_avg, acc_avg = common.Average(), common.Average()
    steps = len(loader) if not args.max_steps else min(len(loader), args.max_steps)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", disable=not args.progress)
    started = time.monotonic()
    for step, (images, labels) in enumerate(loader):
        if step >= steps:
            break
        images, labels = images.to(device), labels.to(device)
        with common.autocast(use_amp, device):
            embeddings = model.backbone(images)
            logits = model.head(embeddings, labels)
            loss = F.cross_entropy(logits.float(), labels)
        value = common.check_loss(loss, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            _clip(model, args.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            _clip(model, args.clip_grad_norm)
            optimizer.step()
        with torch.no_grad():
            # Accuracy without the margin: the margin logits understate it by design.
            nearest = model.head.cosines(embeddings.detach().float()).argmax(1)
        acc = float((nearest == labels).float().mean())
        loss_avg.update(value, len(labels))
        acc_avg.update(acc, len(labels))
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


def _clip(model: nn.Module, max_norm: float) -> None:
    # The dlib net has no batch norm left (its affines are frozen statistics), so one large
    # step from a confused early batch can blow the descriptors up; clipping bounds it.
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_norm)


def init_head_from_means(
    head: MarginHead,
    backbone: nn.Module,
    data: IdentityChips,
    classes: list[str],
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """Start each class centre at its identity's mean embedding, so early steps refine the
    pretrained space instead of tearing it apart to fit random centres."""
    vectors = embed(backbone, data.chips, device, args.batch_size)
    vectors = l2_normalize(vectors, np.float32)
    codes, _ = data.label_codes()
    centres = np.zeros((len(classes), vectors.shape[1]), np.float32)
    for code, vector in zip(codes, vectors, strict=True):
        centres[code] += vector
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(centres))


def _resolve_base(args: argparse.Namespace) -> Path:
    try:
        return resolve_pack(str(args.base_pack), args.model_dir or default_model_dir())
    except Exception as err:  # ModelError or OSError from the store
        raise TrainingError(f"--base-pack {args.base_pack}: {err}") from err


def export_pack(
    args: argparse.Namespace,
    backbone: DlibResNet,
    base_dir: Path,
    check_chips: np.ndarray,
    run_dir: Path,
) -> dict[str, Any]:
    """Write the pack (base detector/landmarks + new recognizer) after checking the export."""
    base = verified_manifest(base_dir)
    model = build_onnx(backbone.to_dlib_net())
    with staged_pack(args.out, args.force) as work:
        recognizer_path = work / "recognizer.onnx"
        recognizer_path.write_bytes(model.SerializeToString())
        session = ort.InferenceSession(str(recognizer_path), providers=["CPUExecutionProvider"])
        onnx_out = session.run(
            [OUTPUT_NAME], {INPUT_NAME: check_chips.transpose(0, 3, 1, 2).astype(np.float32)}
        )[0]
        torch_out = embed(backbone.cpu(), check_chips, torch.device("cpu"), args.batch_size)
        cosine = min_cosine(onnx_out, torch_out)
        check = {"chips": len(check_chips), "min_cosine": cosine, "required": EXPORT_MIN_COSINE}
        (run_dir / EXPORT_CHECK_FILE).write_text(json.dumps(check, indent=2) + "\n")
        if not cosine >= EXPORT_MIN_COSINE:
            raise TrainingError(
                f"export check failed: ONNX and torch embeddings agree to cosine {cosine:.6f} "
                f"< {EXPORT_MIN_COSINE} on {len(check_chips)} chips; pack not written"
            )
        copied = copy_files(base_dir, base, work, skip={Task.RECOGNIZER, Task.ADAPTER})
        base_recognizer = base.file(Task.RECOGNIZER)
        assert base_recognizer is not None  # a valid manifest has one
        recognizer = FileEntry(
            path="recognizer.onnx",
            task=Task.RECOGNIZER,
            wrapper=DLIB_WRAPPER,
            sha256=sha256_file(recognizer_path),
            license=args.license,
            commercial_use=bool(args.commercial_use),
            source=(
                f"fine-tuned by jifang train recognizer from {base.name} {base.version} "
                f"({base_recognizer.source}) on {args.data.name}"
            ),
            params=dict(base_recognizer.params),
        )
        files = (*copied, recognizer)
        spec: EmbeddingSpec = base.embedding
        manifest = PackManifest(
            name=args.name or args.out.name,
            version=args.version,
            built=date.today(),
            files=files,
            embedding=spec,
            contract_id=compute_contract_id(files, spec),
            description=f"recognizer fine-tuned from {base.name} {base.version} "
            f"(contract {base.contract_id}); detector and landmarks copied unchanged",
        )
        write_manifest(work, manifest)
        from models.engine import FaceEngine

        # Fail closed: the pack is only published if the edge's own engine loads it.
        FaceEngine(work, threads=args.threads)
    return check


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate every epoch, export the pack; returns the run summary."""
    validate_args(args)
    common.seed_everything(args.seed)
    device = common.pick_device(args.device)
    run_dir: Path = args.run_dir or args.out.parent / f"{args.out.name}.run"
    args.run_dir = run_dir
    common.write_args(run_dir, args)
    base_dir = _resolve_base(args)
    with common.torch_threads(args.threads):
        backbone = DlibResNet(dlib_net_from_pack(base_dir))
        data = load_data(args, base_dir, backbone.chip_size)
        (run_dir / SPLIT_FILE).write_text(json.dumps(data.split, indent=2, ensure_ascii=False))
        logger.info(
            "%d training chips of %d identities, %d held-out chips",
            len(data.train.labels),
            len(data.classes),
            len(data.val.labels),
        )
        trained = backbone.freeze_all_but_last(args.train_layers)
        head = MarginHead(backbone.dim, len(data.classes), args.head, args.scale, args.margin)
        model = RecognizerModel(backbone, head).to(device)
        codes, _ = data.train.label_codes()
        augment = Augment.from_args(args)
        loader = DataLoader(
            ImageDataset(data.train.chips, codes, augment),
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            drop_last=len(codes) > args.batch_size,
        )
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
        lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
        scaler = torch.amp.GradScaler("cuda") if common.amp_enabled(args, device) else None
        start_epoch = 0
        if args.resume is not None:
            state = common.load_checkpoint(args.resume)
            if state.get("classes") != data.classes:
                raise TrainingError(
                    f"--resume {args.resume}: trained on other identities than --data "
                    f"{args.data} gives (same --data, --val-fraction and --seed are needed)"
                )
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as err:
                raise TrainingError(
                    f"--resume {args.resume}: does not fit this model ({err})"
                ) from err
            optimizer.load_state_dict(state["optimizer"])
            lr_scheduler.load_state_dict(state["lr_scheduler"])
            start_epoch = int(state["epoch"]) + 1
            logger.info("resumed from %s at epoch %d", args.resume, start_epoch)
        else:
            init_head_from_means(head, backbone, data.train, data.classes, args, device)
            baseline = evaluate(backbone, data.val, device, args.batch_size)
            (run_dir / BASELINE_FILE).write_text(json.dumps(baseline, indent=2))
        logger.info("training %d learned layers on %s", trained, device)
        for epoch in range(start_epoch, args.epochs):
            summary: dict[str, Any] = {"epoch": epoch}
            summary.update(train_one_epoch(model, optimizer, loader, device, epoch, args, scaler))
            lr_scheduler.step()
            summary["val"] = evaluate(backbone, data.val, device, args.batch_size)
            common.append_epoch(run_dir, summary)
            common.save_checkpoint(
                run_dir / common.CHECKPOINT_FILE,
                model,
                optimizer,
                lr_scheduler,
                epoch,
                args,
                {"classes": data.classes},
            )
            logger.info("epoch %d: loss %.4f, val %s", epoch, summary["loss"], summary["val"])
        check_chips = np.concatenate([data.val.chips[:32], data.train.chips[:8]])
        # Real photos too: generated or tiny data alone would not exercise the export.
        faces = skimage_faces(lambda bgr: data.maker(bgr)[0])
        if faces:
            check_chips = np.concatenate([check_chips, np.stack(faces)])
        check = export_pack(args, backbone.cpu(), base_dir, check_chips, run_dir)
    return {
        "pack": str(args.out),
        "run_dir": str(run_dir),
        "export_check": check,
        "epochs": common.read_epochs(run_dir),
        "baseline": json.loads((run_dir / BASELINE_FILE).read_text())
        if (run_dir / BASELINE_FILE).is_file()
        else None,
    }


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse command-line style arguments (tests and the typer command use this)."""
    return get_args_parser().parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
