"""Run by the DDP tests on 1 or 2 CPU processes (gloo).

``ddp_script.py CONF ROOT OUT DEVICES``: ``validate`` through the CLI, logged metrics to
``OUT/metrics.json``.

``ddp_script.py contract OUT DEVICES``: validate and test a seeded tiny model on odd-sized sets
whose batches carry ``index``/``group_index``, validate once more without them, then (with 2
processes) ``fit`` a few steps; rank 0 writes ``OUT/contract.json`` and every rank its trainable
weights to ``OUT/weights_rank<r>.pt``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def cli_validate(conf: str, root: str, out: str, devices: str) -> None:
    from medllama_fusion.cli.main import cli_main

    cli = cli_main(
        [
            "validate", "--config", conf, "--data.init_args.source.init_args.root", root,
            "--trainer.default_root_dir", out, "--trainer.devices", devices,
            "--trainer.strategy", "ddp" if devices != "1" else "auto",
            "--trainer.limit_val_batches", "1.0", "--data.init_args.loader.batch_size", "5",
        ]
    )  # fmt: skip
    if cli.trainer.is_global_zero:
        import torch.distributed as dist

        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
        metrics["n_val"] = len(cli.datamodule.datasets["val"])
        metrics["process_group_left_open"] = float(dist.is_initialized())
        with open(f"{out}/metrics.json", "w") as handle:
            json.dump(metrics, handle)


def contract(out: Path, devices: int) -> None:
    import torch
    from lightning.pytorch import Trainer, seed_everything

    from medllama_fusion.metrics import select_thresholds
    from medllama_fusion.trainers import FusionClassifier, OperatingPoints
    from tests.trainers.helpers import ContractDataModule, tiny_fusion

    seed_everything(0)
    model = FusionClassifier(
        tiny_fusion(), label_names=["a", "b", "c"], bootstrap_resamples=200, min_positives=2,
        plot_roc=False, report_dir=str(out / f"report{devices}"), pos_weight="auto",
    )  # fmt: skip
    operating_points = OperatingPoints()
    trainer = Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        callbacks=[operating_points],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, max_steps=3, deterministic=True,
    )  # fmt: skip
    dm = ContractDataModule(n_train=16, n_val=23, n_test=23, batch_size=4)
    val = trainer.validate(model, datamodule=dm, verbose=False)[0]
    rows = model.evaluated("val")
    assert rows is not None
    n_val = len(rows.probs)
    thresholds = dict(operating_points.thresholds)
    expected = select_thresholds(rows.probs, rows.target, "f1").tolist()
    trainer.test(model, datamodule=dm, verbose=False)
    report = model.test_report
    assert report is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(model, datamodule=ContractDataModule(with_index=False), verbose=False)
    rows = model.evaluated("val")
    assert rows is not None
    n_val_without_index = len(rows.probs)
    warned = any("have no `index`" in str(w.message) for w in caught)
    rank = trainer.global_rank
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if devices > 1:
        trainer.fit(model, datamodule=dm)
    after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.save({"before": before, "after": after}, out / f"weights_rank{rank}.pt")
    if trainer.is_global_zero:
        result = {
            "val": {k: float(v) for k, v in val.items()},
            "n_val": n_val,
            "n_val_without_index": n_val_without_index,
            "warned_without_index": warned,
            "thresholds": thresholds,
            "thresholds_from_rows": expected,
            "test": {
                "auroc": report.auroc, "ci_low": report.ci_low, "ci_high": report.ci_high,
                "mean": report.mean, "mean_ci": list(report.mean_ci),
                "num_clusters": report.num_clusters, "positives": report.positives,
            },
            "global_step": trainer.global_step,
        }  # fmt: skip
        (out / f"contract{devices}.json").write_text(json.dumps(result))
    if torch.distributed.is_initialized():  # a Gloo group left to shutdown can abort the exit
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1] == "contract":
        contract(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        cli_validate(*sys.argv[1:5])
