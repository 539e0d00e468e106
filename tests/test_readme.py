"""The README's two commands stay true, and CI runs the README's test command."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci_command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in readme and "pytest" in ci_command


def test_readme_main_job_uses_real_options() -> None:
    from cls_decoupling.cli import evaluate

    readme = (REPO / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "evaluate.py --backbone" in line and "venv" in line)
    argv = line.split("evaluate.py", 1)[1].split()
    args = evaluate.parse_args(argv)
    assert args.data == "demo" and args.backbone == ["dinov2_vits14_reg"]
