"""`python ddp_entry.py <leapkd arguments>`: the CLI, with faults injected on one rank.

Lightning's DDP launcher re-runs this file for every other rank, with LOCAL_RANK set; the
main process is rank 0. LEAPKD_TEST_NAN_AT="rank:step" makes the loss non-finite on that
rank on the first batch of that optimizer step only.
"""

import os
import sys

from leapkd.cli import main
from leapkd.engine import DistillModule
from leapkd.methods import FeatureDistillation


def poison(rank: int, step: int) -> None:
    if int(os.environ.get("LOCAL_RANK", "0")) != rank:
        return
    real_step, real_loss = DistillModule.training_step, FeatureDistillation.loss
    current = {"step": -1, "done": False}

    def training_step(self, batch, batch_idx):
        current["step"] = self.global_step
        try:
            return real_step(self, batch, batch_idx)
        finally:
            current["step"] = -1

    def loss(self, *args, **kwargs):
        out = real_loss(self, *args, **kwargs)
        if current["step"] == step and not current["done"]:
            current["done"] = True
            out.loss = out.loss * float("nan")
        return out

    DistillModule.training_step = training_step
    FeatureDistillation.loss = loss


if __name__ == "__main__":
    if "LEAPKD_TEST_NAN_AT" in os.environ:
        rank, step = os.environ["LEAPKD_TEST_NAN_AT"].split(":")
        poison(int(rank), int(step))
    sys.exit(main(sys.argv[1:]))
