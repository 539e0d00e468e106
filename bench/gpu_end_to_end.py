"""End to end on a GPU: evaluate.py against the plain inference loop a user would write (issue 12).

    python bench/gpu_end_to_end.py --work /tmp/e2e [--arch dinov2_vitg14_reg] [--images 8192]
        [--small 2048] [--batch-size 128] [--workers 12] [--table table.md] [--skip compile,...]

Runs where CUDA is available (never in CI; `--device cpu` with a tiny --arch is the smoke test).
Builds what it measures: a random-weight model of --arch saved with `save_pretrained` (float32),
and --images synthetic 500x375 JPEGs in 8 class folders. Then, each step appending to one
markdown table (--table, rewritten after every step so a cut-off run keeps what it measured):

- in one process, no loader: the plain HF forward, the decomposition, and the decomposition with
  every probe's update (bf16 autocast; 224 px at --batch-size, 518 px at a quarter of it),
  paired rounds; the same with the blocks compiled (`--compile`); host-device synchronisations of
  every per-batch step found with `torch.cuda.set_sync_debug_mode("error")`; the forward's FLOPs
  (FlopCounterMode) and MFU against a measured bf16 matrix-multiply peak;
- processes: the plain loop (torchvision ImageFolder + DINOv2's transform + HF forward under bf16
  autocast) and `evaluate.py --probe oneshot` / `all` (and `all --compile`), each on --small and
  --images images: marginal rate = extra images / extra seconds of the image loop (and, noisier,
  of the whole process), fixed cost = wall seconds beyond images / marginal rate, and evaluate.py's
  own phase timings (results.json run.timings);
- the time to import evaluate.py's modules, and the project's data loader alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import median_ratio, paired_times  # noqa: E402

CLASSES = 8


def write_jpeg(arguments: tuple[Path, int]) -> None:
    """One smooth random 500x375 photo-like JPEG (low-frequency noise, so its size and decoding
    cost are those of a photo, not of white noise)."""
    path, seed = arguments
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC)
    detail = rng.normal(0, 12, (375, 500, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + detail, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def build_inputs(work: Path, arch: str, images: int, device: torch.device) -> tuple[Path, Path]:
    """The saved random model and the JPEG folder (reused when already there)."""
    from harness import load_backbone

    model_dir, data_dir = work / f"model_{arch}", work / f"jpegs_{images}"
    if not data_dir.is_dir():  # first: the writers fork before CUDA starts
        jobs = []
        for index in range(images):
            folder = data_dir.with_suffix(".partial") / f"class{index % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{index:06d}.jpg", index))
        with Pool(min(16, os.cpu_count() or 1)) as pool:
            pool.map(write_jpeg, jobs, chunksize=64)
        data_dir.with_suffix(".partial").rename(data_dir)
    if not (model_dir / "config.json").is_file():
        with torch.device(device):  # initialised on the device: minutes faster for ViT-g than on a CPU
            backbone = load_backbone(f"random:{arch}")
        backbone.model.save_pretrained(model_dir)
        del backbone
    return model_dir, data_dir


def plain_loop(
    model_dir: Path, data_dir: Path, limit: int, batch_size: int, workers: int, device: str
) -> None:
    """The loop a user would write; prints its loop seconds as JSON (the caller times the process)."""
    from torchvision import datasets, transforms
    from transformers import AutoModel

    transform = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    dataset = datasets.ImageFolder(str(data_dir), transform=transform)
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:limit]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, chosen.tolist()),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device == "cuda",
    )
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    outputs = []
    started = None
    with torch.no_grad():
        for pixels, _ in loader:
            started = started or time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16):
                outputs.append(model(pixel_values=pixels.to(device, non_blocking=True)).pooler_output.float())
    if device == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"loop": time.perf_counter() - (started or time.perf_counter()), "images": limit}))


def timed_process(command: list[str]) -> tuple[float, str]:
    """Wall seconds of a child process (its output returned; a failure stops the benchmark)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


class Table:
    """Rows of (what, value, note), rewritten to `path` after each step."""

    def __init__(self, path: Path, header: str) -> None:
        self.path, self.header, self.rows = path, header, []  # type: ignore[var-annotated]

    def add(self, what: str, value: str, note: str = "") -> None:
        self.rows.append((what, value, note))
        print(f"{what}: {value} {note}", flush=True)
        lines = [self.header, "", "| what | value | note |", "|---|---|---|"]
        lines += [f"| {w} | {v} | {n} |" for w, v, n in self.rows]
        self.path.write_text("\n".join(lines) + "\n")


def process_rates(table: Table, name: str, runs: dict[int, float], loops: dict[int, float]) -> float:
    """Marginal rates of a command run on two image counts: from the seconds of its image loop (first
    batch to last, what the images cost) and from whole-process wall seconds (which also carry
    seconds of jitter in imports and writing); the fixed cost beyond the images. Returns the first."""
    (small, small_s), (large, large_s) = sorted(runs.items())
    loop_rate = (large - small) / (loops[large] - loops[small])
    wall_rate = (large - small) / (large_s - small_s)
    fixed = large_s - large / loop_rate
    loop_note = ", ".join(f"{n} images: wall {runs[n]:.1f} s, loop {loops[n]:.1f} s" for n in sorted(runs))
    table.add(f"{name}: marginal rate (loop)", f"{loop_rate:.1f} images/s", loop_note)
    table.add(
        f"{name}: marginal rate (wall)", f"{wall_rate:.1f} images/s", "noisier: includes start-up jitter"
    )
    table.add(f"{name}: fixed cost", f"{fixed:.1f} s", "wall seconds beyond images / loop marginal rate")
    return loop_rate


def evaluate_command(args: argparse.Namespace, model_dir: Path, data_dir: Path, probe: str, limit: int,
                     output: Path, extra: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    return [
        sys.executable, str(REPO / "evaluate.py"), "--backbone", str(model_dir), "--data", "folder",
        "--data-dir", str(data_dir), "--limit", str(limit), "--probe", probe, "--batch-size",
        str(args.batch_size), "--num-workers", str(args.workers), "--output", str(output), "--overwrite",
        "--accelerator", "gpu" if args.device == "cuda" else "cpu",
        "--precision", "bf16-mixed", *extra,
    ]  # fmt: skip


def matmul_peak(device: torch.device) -> float:
    """bf16 matrix-multiply FLOP/s measured on this device (8192^3 on a GPU)."""
    size = 8192 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    synchronize(device)
    return 10 * 2 * size**3 / (time.perf_counter() - started)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def sync_offenders(device: torch.device, steps: dict[str, Callable[[], object]]) -> list[str]:
    """The steps that synchronise the host with the device (torch.cuda's sync debug mode)."""
    if device.type != "cuda":
        return ["(not checked: no CUDA device)"]
    offenders = []
    for name, step in steps.items():
        step()  # warm-up: first-call work (shifts, lazy buffers) is not the per-batch path
        synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        except RuntimeError as error:
            offenders.append(f"{name}: {str(error).splitlines()[0][:120]}")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return offenders


@dataclass
class Batch:
    """A backbone, its harness module with every probe, and one synthetic labelled batch."""

    backbone: Any
    module: Any
    pixels: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    offset: int = 0

    def plain(self) -> None:
        with torch.no_grad(), torch.autocast(self.pixels.device.type, dtype=torch.bfloat16):
            self.backbone.model(pixel_values=self.pixels)

    def decomposition(self) -> Any:
        with torch.inference_mode(), torch.autocast(self.pixels.device.type, dtype=torch.bfloat16):
            return self.backbone(self.pixels)

    def harness(self) -> None:
        self.offset += self.pixels.shape[0]  # new dataset indices each batch, as in a run
        self.module.record(self.decomposition(), self.pixels, self.labels, self.indices + self.offset)

    def synchronised(self, step: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            step()
            synchronize(self.pixels.device)

        return run


def make_batch(backbone: Any, resolution: int, batch_size: int, device: torch.device) -> Batch:
    from harness import HarnessModule
    from probes import ProbeContext, build_probes, parse_probe_names

    module = HarnessModule(backbone)
    context = ProbeContext(backbone.info, tuple(f"class{i}" for i in range(CLASSES)), resolution)
    module.consumers = torch.nn.ModuleDict(
        build_probes(parse_probe_names("all", layers=False, bank=False), context)
    )
    module.to(device)
    pixels = torch.randn(batch_size, 3, resolution, resolution, device=device)
    labels = torch.arange(batch_size, device=device) % CLASSES
    return Batch(backbone, module, pixels, labels, torch.arange(batch_size, device=device))


def device_checks(table: Table, batch: Batch, rates: dict[str, float]) -> None:
    """FLOPs, MFU, host-device synchronisations per step, and the metric states' dtypes."""
    from torch.utils.flop_counter import FlopCounterMode

    device = batch.pixels.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), autocast:
        batch.backbone.model(pixel_values=batch.pixels[:1])
    flops = counter.get_total_flops()
    peak = matmul_peak(device)
    table.add("forward FLOPs per image (224 px)", f"{flops / 1e9:.1f} GFLOP", "FlopCounterMode")
    table.add("measured bf16 matmul peak", f"{peak / 1e12:.0f} TFLOP/s", "8192^3 products")
    for name in ("plain", "harness"):
        table.add(f"MFU, {name}", f"{flops * rates[name] / peak:.1%}", "of the measured peak")
    decomposed = batch.decomposition()
    inputs = {**decomposed, "pixels": batch.pixels}
    far = batch.indices + 10**6
    steps: dict[str, Callable[[], object]] = {"backbone": batch.decomposition}
    for name, probe in batch.module.consumers.items():
        steps[f"probe {name}"] = functools.partial(probe.update, inputs, batch.labels, far)
    steps["harness records"] = functools.partial(
        batch.module.record, decomposed, batch.pixels, batch.labels, far + 10**6
    )
    offenders = sync_offenders(device, steps)
    table.add("host-device syncs per batch", "none" if not offenders else "; ".join(offenders))
    state_dtypes = {
        str(state.dtype)
        for metric in batch.module.modules()
        for state_name in getattr(metric, "_defaults", {})
        if isinstance(state := getattr(metric, state_name), torch.Tensor) and state.is_floating_point()
    }
    table.add("metric state dtypes", ", ".join(sorted(state_dtypes)))


def in_process(args: argparse.Namespace, table: Table, model_dir: Path, compiled: bool) -> None:
    """Plain forward / decomposition / decomposition + every probe, same inputs, paired rounds."""
    from harness import load_backbone

    device = torch.device(args.device)
    backbone = load_backbone(str(model_dir)).to(device)
    tag = " (compiled)" if compiled else ""
    started = time.perf_counter()
    if compiled:
        backbone = backbone.compiling()
    for resolution, batch_size in ((224, args.batch_size), (518, max(1, args.batch_size // 4))):
        batch = make_batch(backbone, resolution, batch_size, device)
        if compiled and resolution == 224:
            batch.synchronised(batch.harness)()
            table.add("compile time (first batch, 224 px)", f"{time.perf_counter() - started:.1f} s")
        steps = {
            name: batch.synchronised(getattr(batch, name)) for name in ("plain", "decomposition", "harness")
        }
        times = paired_times(steps, args.repeats)  # type: ignore[arg-type]
        rates = {name: batch_size / statistics.median(seconds) for name, seconds in times.items()}
        table.add(
            f"in process, {resolution} px, batch {batch_size}{tag}: plain / decomposition / + every probe",
            " / ".join(f"{rates[n]:.1f}" for n in ("plain", "decomposition", "harness")) + " images/s",
            f"time ratios x{median_ratio(times['decomposition'], times['plain']):.3f} / "
            f"x{median_ratio(times['harness'], times['plain']):.3f}",
        )
        if resolution == 224 and not compiled:
            device_checks(table, batch, rates)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="all", choices=("all", "plain"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_end_to_end"))
    parser.add_argument("--arch", default="dinov2_vitg14_reg")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--small", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--table", type=Path, help="markdown table to write (default: WORK/table.md)")
    parser.add_argument("--skip", default="", help="comma list of steps to leave out: " + ", ".join(
        ("inprocess", "compile", "plain", "all", "oneshot", "all-compile", "loader")))  # fmt: skip
    # the plain loop's own process
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    if args.mode == "plain":
        plain_loop(args.model_dir, args.data_dir, args.limit, args.batch_size, args.workers, args.device)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark is for a lent GPU machine (--device cpu: smoke test)")
    skip = set(filter(None, args.skip.split(",")))
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    table = Table(
        args.table or args.work / "table.md",
        f"{name}, torch {torch.__version__}; random {args.arch} saved with save_pretrained, bf16 autocast, "
        f"224 px, batch {args.batch_size}, {args.workers} loader workers, {args.small} and {args.images} "
        f"synthetic 500x375 JPEGs in {CLASSES} class folders",
    )
    started = time.perf_counter()
    model_dir, data_dir = build_inputs(args.work, args.arch, args.images, device)
    table.add("set-up (model saved, JPEGs written)", f"{time.perf_counter() - started:.1f} s")
    bare, _ = timed_process([sys.executable, "-c", "import torch"])
    imports, _ = timed_process([sys.executable, "-c", "import cls_decoupling.cli.evaluate"])
    table.add(
        "import evaluate.py's modules", f"{imports:.1f} s", f"python -c 'import torch' alone: {bare:.1f} s"
    )
    if "inprocess" not in skip:
        in_process(args, table, model_dir, compiled=False)
    if "loader" not in skip:
        count, seconds = loader_pass(args, data_dir)
        table.add("the project's data loader alone", f"{count / seconds:.1f} images/s", f"{count} images")
    plain_rate = None
    if "plain" not in skip:
        runs, loops = {}, {}
        for limit in (args.small, args.images):
            command = [sys.executable, __file__, "plain", "--model-dir", str(model_dir), "--data-dir",
                       str(data_dir), "--limit", str(limit), "--batch-size", str(args.batch_size),
                       "--workers", str(args.workers), "--device", args.device]  # fmt: skip
            wall, out = timed_process(command)
            runs[limit], loops[limit] = wall, json.loads(out.strip().splitlines()[-1])["loop"]
        plain_rate = process_rates(table, "plain loop", runs, loops)
    steps = (("all", (), "all"), ("oneshot", (), "oneshot"), ("all", ("--compile",), "all-compile"))
    for probe, extra, step in steps:
        if step not in skip:
            rate = evaluate_rates(args, table, model_dir, data_dir, probe, extra, step)
            if plain_rate:
                table.add(
                    f"evaluate.py --probe {step} / plain loop", f"{rate / plain_rate:.3f}", "marginal rates"
                )
    if "all-compile" not in skip and "all" not in skip:
        differences = result_differences(
            args.work / f"run_all_{args.images}", args.work / f"run_all-compile_{args.images}"
        )
        table.add("--compile vs eager results (all)", f"max |difference| {max(differences):.2e}",
                  f"{len(differences)} numbers, bf16 backbone both times")  # fmt: skip
    if "compile" not in skip:
        in_process(args, table, model_dir, compiled=True)
    table.add("benchmark wall time", f"{time.perf_counter() - started:.0f} s")


def loader_pass(args: argparse.Namespace, data_dir: Path) -> tuple[int, float]:
    """Images the project's data loader delivers in one pass over --small images, and its seconds
    (worker start included)."""
    from datamodules import ImageDataModule

    data = ImageDataModule(source="folder", data_dir=data_dir, batch_size=args.batch_size,
                           num_workers=args.workers, limit=args.small)  # fmt: skip
    data.setup("test")
    started = time.perf_counter()
    count = sum(int(batch["index"].numel()) for batch in data.test_dataloader())
    return count, time.perf_counter() - started


def evaluate_rates(args: argparse.Namespace, table: Table, model_dir: Path, data_dir: Path, probe: str,
                   extra: tuple[str, ...], step: str) -> float:  # fmt: skip
    """evaluate.py on --small and --images images: each run's phases, then the marginal rate."""
    runs, loops = {}, {}
    for limit in (args.small, args.images):
        output = args.work / f"run_{step}_{limit}"
        runs[limit], _ = timed_process(
            evaluate_command(args, model_dir, data_dir, probe, limit, output, extra)
        )
        summary = json.loads((output / "results.json").read_text())
        timings = summary["run"]["timings"]
        loops[limit] = timings["loop"]
        rest = runs[limit] - sum(timings.values())  # imports, writing the run folder, exit
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        table.add(f"evaluate.py --probe {step}, {limit} images: phases",
                  f"{phases}, rest (imports, writing, exit) {rest:.1f} s; wall {runs[limit]:.1f} s",
                  f"max pooler error {summary['run']['max_pooler_error']:.2e}")  # fmt: skip
    return process_rates(table, f"evaluate.py --probe {step}", runs, loops)


def result_differences(first: Path, second: Path) -> list[float]:
    """|difference| of every number two runs' results.json both hold."""
    a, b = (json.loads((run / "results.json").read_text())["results"] for run in (first, second))
    return [abs(b[k] - v) for k, v in a.items() if isinstance(v, float) and isinstance(b.get(k), float)]


if __name__ == "__main__":
    main()
