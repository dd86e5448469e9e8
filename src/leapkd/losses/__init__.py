"""Loss terms: small modules that methods compose, one per file.

Each term is an `nn.Module` whose `name` is its column in metrics.csv (`loss_<name>`);
it computes in float32 whatever the autocast dtype and returns a 0-d tensor.
"""

from leapkd.losses.cls_token import ClsMSE
from leapkd.losses.cross_entropy import CrossEntropy
from leapkd.losses.feature import FeatureMSE
from leapkd.losses.logit_kd import KdMode, LogitKD
from leapkd.losses.patch_embed import PatchEmbedLoss
from leapkd.losses.spectral import SpectralLoss, spectral_loss, spectral_pairs_loss, tokens_to_map

__all__ = [
    "ClsMSE",
    "CrossEntropy",
    "FeatureMSE",
    "KdMode",
    "LogitKD",
    "PatchEmbedLoss",
    "SpectralLoss",
    "spectral_loss",
    "spectral_pairs_loss",
    "tokens_to_map",
]
