#!/usr/bin/env python3
"""Writes the small checkpoints under tests/fixtures/io/ with real torch.save and
safetensors.torch.save_file, plus expected.safetensors holding the values the C++ readers
must return (key "<fixture>/<tensor key>", always float64 and contiguous so the expectation
does not depend on the reader under test converting dtypes or strides).

Run: python3 scripts/gen_checkpoint_fixtures.py  (torch, safetensors; numpy optional)
"""
import argparse
import collections
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "io")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    expected = {}

    def record(fixture, flat):
        for key, value in flat.items():
            expected[f"{fixture}/{key}"] = value.detach().to(torch.float64).contiguous().clone()

    # 1. a plain float32 state dict (an OrderedDict with _metadata, as Module.state_dict() gives)
    lin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    sd = lin.state_dict()
    torch.save(sd, os.path.join(OUT, "f32_state.pth"))
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(OUT, "f32_state.safetensors"),
              metadata={"format": "pt"})
    record("f32_state", sd)

    # 2. half, bfloat16, float64 and integer storages
    mixed = {
        "half": torch.randn(2, 3).half(),
        "bf16": torch.randn(5).bfloat16(),
        "f64": torch.randn(2, 2, dtype=torch.float64),
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    torch.save(mixed, os.path.join(OUT, "mixed_dtypes.pth"))
    save_file(mixed, os.path.join(OUT, "mixed_dtypes.safetensors"))
    record("mixed_dtypes", mixed)

    # 3. non-contiguous saved views: torch.save keeps the storage, offset and strides
    base = torch.randn(4, 5)
    views = {"transposed": base.t(), "window": base[1:3, 2:5], "strided": base[::2, ::3]}
    torch.save(views, os.path.join(OUT, "views.pth"))
    record("views", views)

    # 4. shared storage: two entries viewing one storage, and a Parameter
    shared_base = torch.randn(10)
    shared = {"all": shared_base, "middle": shared_base[2:7].view(5, 1),
              "param": torch.nn.Parameter(torch.randn(2, 2))}
    torch.save(shared, os.path.join(OUT, "shared.pth"))
    record("shared", shared)

    # 5. a DINO-style training checkpoint: nested dicts, an int epoch, an argparse Namespace,
    #    optimizer state keyed by ints, and (when numpy is present) a numpy scalar
    teacher = collections.OrderedDict()
    teacher["backbone.blocks.0.norm1.weight"] = torch.randn(6)
    teacher["head.last_layer.weight_g"] = torch.randn(1, 3)
    training = {
        "teacher": teacher,
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_small", lr=5e-4, out_dim=65536, use_fp16=True),
        "optimizer": {"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.randn(3)}},
                      "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "dino_loss": {"center": torch.randn(1, 4)},
    }
    try:
        import numpy as np
        training["best_acc"] = np.float64(0.75)
    except ImportError:
        pass
    torch.save(training, os.path.join(OUT, "training.pth"))
    record("training", {
        "teacher.backbone.blocks.0.norm1.weight": teacher["backbone.blocks.0.norm1.weight"],
        "teacher.head.last_layer.weight_g": teacher["head.last_layer.weight_g"],
        "optimizer.state.0.step": training["optimizer"]["state"][0]["step"],
        "optimizer.state.0.exp_avg": training["optimizer"]["state"][0]["exp_avg"],
        "dino_loss.center": training["dino_loss"]["center"],
    })

    # 6. the pre-1.6 format (a stream of pickles, then the storages), with a half tensor and a view
    legacy_base = torch.randn(3, 2)
    legacy = {"w": torch.ones(2), "half": torch.randn(3).half(), "view": legacy_base.t(), "base": legacy_base}
    torch.save(legacy, os.path.join(OUT, "legacy.pth"), _use_new_zipfile_serialization=False)
    record("legacy", legacy)

    save_file(expected, os.path.join(OUT, "expected.safetensors"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
