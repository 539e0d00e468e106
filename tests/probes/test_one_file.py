"""A new probe is one file: dropped next to the others, it runs from the command line with its
results, figure and report line, and nothing else in the package changes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[2]

PROBE_FILE = '''
"""Patch share: how large the patch-only output is against the full one, per image."""

from collections.abc import Mapping

from torch import Tensor

from probes.base import ColumnStatsProbe, Headline, ProbeContext
from probes.plotting import named, run_title, subplots


class PatchShareProbe(ColumnStatsProbe):
    name = "patch_share"

    @staticmethod
    def result_name(stat: str) -> str:
        return f"patch_share/{stat}"

    @classmethod
    def from_context(cls, context: ProbeContext) -> "PatchShareProbe":
        return cls([(cls.result_name("mean"), cls.result_name("std"))])

    def columns(self, decomposition: Mapping[str, Tensor]) -> Tensor:
        patch, full = (decomposition[f"output/{v}"].double().norm(dim=-1) for v in ("patch", "full"))
        return (patch / full)[:, None]

    @classmethod
    def headlines(cls) -> tuple[Headline, ...]:
        return ((cls.result_name("mean"), "||output/patch|| / ||output/full||, mean over images"),)

    @classmethod
    def figures(cls, run):
        if cls.result_name("mean") not in run.results:
            return {}
        figure, axis = subplots(figsize=(4, 3))
        axis.bar(["patch share"], [run.results[cls.result_name("mean")]])
        axis.set_title(run_title(run))
        return named("patch_share.png", figure)
'''


def test_a_probe_in_one_new_file_runs_end_to_end(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "patch_share.py").write_text(PROBE_FILE)
    output = tmp_path / "run"
    script = textwrap.dedent(f"""
        import probes
        probes.__path__.append({str(extra)!r})  # as if the file sat in probes/
        from cls_decoupling.cli import evaluate
        raise SystemExit(evaluate.main([
            "--backbone", "random:tiny", "--data", "demo", "--limit", "5", "--batch-size", "5",
            "--num-workers", "0", "--probe", "patch_share,norms", "--save-features",
            "--output", {str(output)!r},
        ]))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((output / "results.json").read_text())
    assert summary["run"]["probes"] == ["patch_share", "norms"]
    features = load_file(str(output / "features.safetensors"))
    ratio = np.linalg.norm(features["output/patch"].astype(np.float64), axis=1) / np.linalg.norm(
        features["output/full"].astype(np.float64), axis=1
    )
    assert np.isclose(summary["results"]["patch_share/mean"], ratio.mean(), rtol=1e-5)
    assert np.isclose(summary["results"]["patch_share/std"], ratio.std(), rtol=1e-4, atol=1e-7)
    assert (output / "figures" / "patch_share.png").is_file()
    assert "| patch_share/mean | ||output/patch|| / ||output/full||" in (
        output / "report.md"
    ).read_text().replace("\\|", "|")
