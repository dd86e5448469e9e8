"""`python ddp_entry.py <leapkd arguments>`: the CLI, with faults injected on one rank.

Lightning's DDP launcher re-runs this file for every other rank, with LOCAL_RANK set; the
main process is rank 0. LEAPKD_TEST_NAN_AT="rank:step" makes the loss non-finite on that
rank on the first batch of that optimizer step only. LEAPKD_TEST_COUNT_ALLREDUCE=FILE appends
"rank backwards" to FILE at exit: how many backward passes all-reduced gradients.
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


def count_gradient_all_reduces(path: str) -> None:
    import atexit

    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    backwards = [0]
    real_init = DistributedDataParallel.__init__

    def hook(state, bucket):
        if bucket.index() == 0:  # the first bucket of a backward pass
            backwards[0] += 1
        return allreduce_hook(None, bucket)

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.register_comm_hook(None, hook)

    def write() -> None:
        if dist.is_initialized():
            with open(path, "a") as f:
                f.write(f"{dist.get_rank()} {backwards[0]}\n")

    DistributedDataParallel.__init__ = init
    atexit.register(write)


if __name__ == "__main__":
    if "LEAPKD_TEST_COUNT_ALLREDUCE" in os.environ:
        count_gradient_all_reduces(os.environ["LEAPKD_TEST_COUNT_ALLREDUCE"])
    if "LEAPKD_TEST_NAN_AT" in os.environ:
        rank, step = os.environ["LEAPKD_TEST_NAN_AT"].split(":")
        poison(int(rank), int(step))
    sys.exit(main(sys.argv[1:]))
