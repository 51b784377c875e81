"""Run by test_ddp: fit/validate on 2 CPU processes (gloo) and write the logged val AUROC."""

from __future__ import annotations

import json
import sys

from medllama_fusion.main import cli_main

if __name__ == "__main__":
    conf, root, out, devices = sys.argv[1:5]
    cli = cli_main([
        "validate", "--config", conf, "--data.init_args.root", root,
        "--trainer.default_root_dir", out, "--trainer.devices", devices,
        "--trainer.strategy", "ddp" if devices != "1" else "auto",
        "--trainer.limit_val_batches", "1.0", "--data.init_args.batch_size", "5",
    ])
    if cli.trainer.is_global_zero:
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
        metrics["n_val"] = len(cli.datamodule.datasets["val"])
        with open(f"{out}/metrics.json", "w") as handle:
            json.dump(metrics, handle)
