"""Multirun aggregation and the paper-table report, on job directories written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clrun.reporting.aggregate import collect, group, sweep_table, swept_keys
from clrun.reporting.cli import main, report
from clrun.reporting.paper_table import compare, load_targets, render_latex, render_markdown
from clrun.run import run
from tests.conftest import compose_cfg
from tests.test_scenarios import write_mnist_like


def write_job(root: Path, num: int, overrides: list[str], acc: float | None = None,
              error: str | None = None, row: str | None = None, setting: str = "task") -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if acc is not None:
        config = {"setting": setting, "choices": {"row": row} if row else {},
                  "paper": "intercontinet_table2" if row else None}
        (job / "metrics.json").write_text(json.dumps({"acc": acc, "config": config}))
    if error is not None:
        (job / "error.txt").write_text(error)


def test_sweep_table_groups_by_swept_keys_and_reports_failures(tmp_path):
    write_job(tmp_path, 0, ["strategy=ewc", "seed=1"], acc=80.0)
    write_job(tmp_path, 1, ["strategy=ewc", "seed=2"], acc=90.0)
    write_job(tmp_path, 2, ["strategy=si", "seed=1"], acc=70.0)
    write_job(tmp_path, 3, ["strategy=si", "seed=2"], error="scenario.n_tasks=3 is invalid")
    write_job(tmp_path, 4, ["strategy=ewc", "seed=3", "resume=auto"], acc=85.0)  # a resumed job
    records = collect(tmp_path)
    assert swept_keys(records) == ["strategy"]
    cells = group(records, ["strategy"])
    assert cells[("ewc",)].mean == 85.0 and round(cells[("ewc",)].std, 4) == 5.0
    assert [r.status for r in cells[("si",)].failed] == ["failed"]
    table = sweep_table(records)
    assert "| ewc | 85.00 ± 5.00 | 3 |" in table and "| si | 70.00 | 1 |" in table
    assert "3: scenario.n_tasks=3 is invalid" in table
    inference = sweep_table(records, "task_inference_acc")  # finished, but never recorded it
    assert "| ewc | — | 0 | 0: no task_inference_acc; 1: no task_inference_acc;" in inference


def test_paper_table_names_failed_jobs_beside_the_cells_that_have_results(tmp_path):
    write_job(tmp_path, 0, ["row=intercontinet_sgd", "seed=1"], acc=92.0, row="intercontinet_sgd")
    write_job(tmp_path, 1, ["row=intercontinet_sgd", "seed=2"],
              error="RuntimeError: boom\n\nTraceback (most recent call last): ...")
    write_job(tmp_path, 2, ["row=intercontinet_sgd", "scenario.setting=task", "seed=3"],
              error="scenario.n_tasks=3 is invalid")
    markdown = report(tmp_path, None, "markdown", "acc")
    assert "| sgd | 92.00 (n=1, 1 without result) |" in markdown  # job 2: its cell is known
    assert f"- {tmp_path / '1'}: RuntimeError: boom" in markdown  # job 1: listed all the same
    assert f"- {tmp_path / '2'}: scenario.n_tasks=3 is invalid" in markdown
    assert "Traceback" not in markdown


def test_paper_table_compares_and_flags(tmp_path):
    write_job(tmp_path, 0, ["row=intercontinet_sgd", "seed=1"], acc=92.0, row="intercontinet_sgd")
    write_job(tmp_path, 1, ["row=intercontinet_ewc", "seed=1"], acc=90.0, row="intercontinet_ewc")
    comparisons = {(c.row, c.setting): c for c in compare(collect(tmp_path),
                                                         "intercontinet_table2")}
    assert len(comparisons) == 30 and len(load_targets("intercontinet_table2")) == 30
    sgd, ewc = comparisons[("sgd", "task")], comparisons[("ewc", "task")]
    assert round(sgd.diff, 2) == -0.22 and not sgd.flagged  # tolerance max(3, 2 x 3.06)
    assert round(ewc.diff, 2) == -7.53 and ewc.flagged
    markdown = render_markdown(list(comparisons.values()))
    assert "| ewc | 90.00 (n=1) | 97.53 ± 0.15 | -7.53 ⚠ |" in markdown
    assert "not run" in markdown
    assert r"\begin{tabular}" in render_latex(list(comparisons.values()))


def test_paper_table_names_a_finished_job_without_the_metric(tmp_path):
    write_job(tmp_path, 0, ["row=intercontinet_sgd", "seed=1"], row="intercontinet_sgd",
              acc=92.0)
    metrics = tmp_path / "0" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"acc": 92.0', '"acc": null'))
    sgd = {(c.row, c.setting): c for c in compare(collect(tmp_path), "intercontinet_table2")}
    assert "| sgd | no acc |" in render_markdown([sgd[("sgd", "task")]])


def test_report_command_detects_the_paper(tmp_path, capsys):
    write_job(tmp_path, 0, ["row=intercontinet_sgd"], acc=92.0, row="intercontinet_sgd")
    assert main([str(tmp_path)]) == 0
    assert "task-IL ours" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_paper_with_only_some_settings_renders(tmp_path):
    write_job(tmp_path, 0, ["row=vandeven_er"], acc=71.0, row="vandeven_er", setting="class")
    comparisons = compare(collect(tmp_path), "binplay_fmnist")
    markdown = render_markdown(comparisons)
    assert "class-IL ours" in markdown and "task-IL" not in markdown
    assert "| er | 71.00 (n=1) | 70.20 ± 0.00 | +0.80 |" in markdown
    assert r"\begin{tabular}{lrrr}" in render_latex(comparisons)


@pytest.mark.slow
def test_reproduce_runs_the_sweep_and_prints_the_table(tmp_path, monkeypatch, capsys):
    """Slow (~8 s): clrun-reproduce runs a sweep in a subprocess."""
    from clrun.reporting.reproduce import main as reproduce

    monkeypatch.chdir(tmp_path)
    code = reproduce(["intercontinet_fmnist", "scenario=split_digits", "row=intercontinet_sgd",
                      "scenario.setting=class", "seed=1", "trainer.max_epochs=1",
                      "train.drop_last=false", "logger=none"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| sgd |" in out and "19.91 ± 0.01" in out  # ours beside the paper's class-IL cell


def test_sweep_table_in_latex_and_a_misspelled_metric(tmp_path, capsys):
    write_job(tmp_path, 0, ["strategy=ewc", "seed=1"], acc=80.0)
    write_job(tmp_path, 1, ["strategy=si", "seed=1"], acc=70.0)
    assert main([str(tmp_path), "--format", "latex"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(r"\begin{tabular}") and r"ewc & 80.00 & 1 &  \\" in out
    assert main([str(tmp_path), "--metric", "acc_"]) == 2
    assert "no job recorded the metric 'acc_'; did you mean acc?" in capsys.readouterr().err


def test_reproduce_help_lists_the_experiments(capsys):
    from clrun.reporting.reproduce import main as reproduce

    assert reproduce(["--help"]) == 0
    listed = capsys.readouterr().out
    assert ("experiments: architectural_fmnist, binplay_fmnist, binplay_mnist, diffusion_fmnist, "
            "generative") in listed
    assert reproduce(["intercontinet"]) == 2
    assert "unknown experiment 'intercontinet'" in capsys.readouterr().err


def test_plots_draw_the_sweep_and_the_paper_table(tmp_path, capsys):
    sweep, paper = tmp_path / "sweep", tmp_path / "paper"
    matrix = [[90.0, 0.0], [40.0, 95.0]]
    for seed in (1, 2):
        for num, strategy in enumerate(("naive", "ewc")):
            write_job(sweep, 2 * seed + num, [f"strategy={strategy}", f"seed={seed}"], acc=67.5)
            write_job(paper, 2 * seed + num, [f"row=intercontinet_{strategy}", f"seed={seed}"],
                      acc=67.5, row=f"intercontinet_{'sgd' if num == 0 else 'ewc'}")
    for job in [*sweep.iterdir(), *paper.iterdir()]:
        metrics = json.loads((job / "metrics.json").read_text())
        (job / "metrics.json").write_text(json.dumps({**metrics, "accuracy_matrix": matrix}))
    assert main([str(sweep), "--plots"]) == 0
    report_md = (sweep / "report.md").read_text()
    assert "| naive | 67.50 ± 0.00 | 2 |" in report_md
    for name in ("acc_over_tasks", "final_per_task", "accuracy_matrices"):
        assert f"![{name}]({name}.png)" in report_md
        assert (sweep / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    out = tmp_path / "elsewhere"
    assert main([str(paper), "--plots", "--out", str(out)]) == 0
    assert "![paper_comparison](paper_comparison.png)" in (out / "report.md").read_text()
    assert (out / "accuracy_matrices.png").is_file()
    assert "report: " in capsys.readouterr().err


def test_seen_average_of_a_matrix_and_of_joint_training():
    from clrun.reporting.figures import seen_average

    assert seen_average([[90.0, 0.0], [40.0, 95.0]]) == [90.0, 67.5]
    assert seen_average([[80.0, 90.0]]) == [85.0]


def test_a_cell_with_a_stated_reason_is_marked_apart_from_the_flags():
    from clrun.reporting.aggregate import Cell
    from clrun.reporting.paper_table import Comparison, Target

    unexplained = Comparison("ewc", "task", Cell([80.0]), Target(97.5, 0.1))
    explained = Comparison("interval", "task", Cell([85.0]),
                           Target(98.4, 0.1, "paper not reproducible from the authors' release"))
    markdown = render_markdown([unexplained, explained])
    assert "| ewc | 80.00 (n=1) | 97.50 ± 0.10 | -17.50 ⚠ |" in markdown
    assert "| interval | 85.00 (n=1) | 98.40 ± 0.10 | -13.40 ‡ |" in markdown
    assert "‡ (interval) = paper not reproducible from the authors' release" in markdown
    assert r"-13.40$^\ddagger$" in render_latex([unexplained, explained])


def test_shipped_targets_state_why_the_interval_row_and_the_binplay_column_differ():
    interval = load_targets("intercontinet_table2")
    assert all("authors' release" in interval[("interval", s, "acc")].note
               for s in ("task", "domain", "class"))
    assert not interval[("ewc", "task", "acc")].note
    binplay = load_targets("binplay_fmnist")
    assert all("not a reproduction" in target.note for target in binplay.values())


def test_a_generative_sweep_with_an_unfinished_cell_still_tabulates(tmp_path):
    for num, (row, fid) in enumerate([("naive", 400.0), ("gr", 250.0)]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"row={row}"]))
        (job / "metrics.json").write_text(json.dumps(
            {"fid": fid, "precision": 0.5, "recall": 0.25, "config": {}}))
    write_job(tmp_path, 2, ["row=si"])  # still running: no metrics.json yet
    table = report(tmp_path, None, "markdown", None)
    assert table.splitlines()[0] == "| row | fid | precision | recall | runs | without a result |"
    assert "| gr | 250.00 | 0.50 | 0.25 | 1 |" in table and "| si | — | — | — | 0 |" in table


def test_a_paper_of_generative_metrics_compares_fid_precision_recall_per_stream(tmp_path):
    for num, (row, scenario, fid) in enumerate([("mbmnist_mb", "split_mnist", 30.0),
                                                ("mbmnist_mb", "dirichlet_mnist", 41.5),
                                                ("multiband_si", "split_mnist", 129.0)]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"row={row}"]))
        config = {"scenario": scenario, "setting": "class", "choices": {"row": row},
                  "paper": "multiband_mnist"}
        (job / "metrics.json").write_text(json.dumps(
            {"fid": fid, "precision": 0.94, "recall": 0.90, "config": config}))
    table = report(tmp_path, None, "markdown", None)
    header = table.splitlines()[0]
    assert header.startswith("| method | split_mnist FID ours | split_mnist FID paper |")
    assert "dirichlet_mnist recall diff |" in header
    mb = next(line for line in table.splitlines() if line.startswith("| mb |"))
    # FID 30 vs 24 is flagged (floor 3); precision 0.94 = 0.94; recall 0.90 vs 0.97 flagged
    assert "| 30.00 (n=1) | 24.00 ± 0.00 | +6.00 ⚠ | 0.94 (n=1) | 0.94 ± 0.00 | +0.00 |" in mb
    assert "| 0.90 (n=1) | 0.97 ± 0.00 | -0.07 ⚠ |" in mb
    assert "| 41.50 (n=1) | 41.00 ± 0.00 | +0.50 |" in mb
    assert "max(3 (fid), 0.03 (precision), 0.03 (recall), 2 × paper std)" in table
    assert r"split\_mnist FID" in report(tmp_path, None, "latex", None)


def test_multiband_mnist_encodes_the_mnist_command_per_stream(tmp_path):
    for scenario, threshold in (("split_mnist", 1.0), ("dirichlet_mnist", 0.95)):
        cfg = compose_cfg("experiment=multiband_mnist", "row=mbmnist_mb_conv",
                          f"scenario={scenario}")
        assert cfg.objective == "generative" and cfg.paper == "multiband_mnist"
        assert cfg.generator.cosine_threshold == threshold
        assert cfg.generator.architecture == "conv" and cfg.generator.z_dim == 8
        assert cfg.generator.reconstruction == "bce" and cfg.train.batch_size == 64
    targets = load_targets("multiband_mnist")
    assert targets[("mb", "split_mnist", "fid")].mean == 24
    assert targets[("mb_conv", "dirichlet_mnist", "recall")].mean == 0.97
    write_mnist_like(tmp_path / "MNIST" / "raw", gz=False, n_train=200, n_test=100)
    cfg = compose_cfg("experiment=multiband_mnist", "row=mbmnist_mb", f"data_dir={tmp_path}",
                      "generator.width=4", "generator.local_epochs=1",
                      "generator.global_epochs=1", "generator.warmup_epochs=0", "logger=none",
                      "metrics.prd.runs=1", "metrics.feature_net.steps=5",
                      "metrics.sample_grids=false")
    result = run(cfg, tmp_path / "run")
    assert len(result.generative["fid"]) == 5 and result.config["paper"] == "multiband_mnist"


def test_a_number_that_could_not_be_read_is_shown_so_and_never_compared(tmp_path):
    write_job(tmp_path, 0, ["row=dfm_dgr_diffusion"], acc=55.0, row="dfm_dgr_diffusion",
              setting="class")
    comparisons = compare(collect(tmp_path), "diffusion_fmnist")
    diffusion = {c.row: c for c in comparisons}["dgr_diffusion"]
    assert diffusion.paper.mean is None and diffusion.diff is None and not diffusion.flagged
    markdown = render_markdown(comparisons)
    assert "| dgr_diffusion | 55.00 (n=1) | not read | — |" in markdown
    assert "not read (dgr_diffusion, dgr_distill): Masip et al." in markdown
    assert "not read" in render_latex(comparisons)
    assert all(t.mean is None for t in load_targets("guide_cifar10").values())
