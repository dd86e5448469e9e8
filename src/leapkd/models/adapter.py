"""One adapter for every ViT, teacher or student.

Every backbone leapkd touches is a timm `VisionTransformer` wrapped in `Backbone`, which
exposes what the distillation methods need: the tokens after embedding, the flat list of
blocks, the final norm, the prefix-token count, the patch grid, and forwards that run only
the first `b` blocks (early exit). Blocks are numbered 1..L as in the LEAP paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def flatten_blocks(blocks: nn.Module) -> list[nn.Module]:
    """The transformer blocks in execution order.

    Chunked containers (DINOv2 `BlockChunk`, nested `nn.Sequential`/`nn.ModuleList`) are
    flattened and `nn.Identity` padding is dropped: padding is not a block.
    """
    flat: list[nn.Module] = []
    for child in blocks.children():
        if isinstance(child, nn.Identity):
            continue
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            flat.extend(flatten_blocks(child))
        else:
            flat.append(child)
    return flat


class Backbone(nn.Module):
    """A ViT seen through the interface the methods use.

    `vit` must provide timm's VisionTransformer parts: `patch_embed`, `_pos_embed`,
    `patch_drop`, `norm_pre`, `blocks`, `norm`, `num_prefix_tokens`.
    """

    def __init__(
        self,
        vit: VisionTransformer,
        name: str,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.vit = vit
        self.name = name
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._blocks = flatten_blocks(vit.blocks)
        if not self._blocks:
            raise ValueError(f"{name}: the model has no transformer blocks")

    # ----- static facts -------------------------------------------------------------
    @property
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks in order (block b is `blocks[b - 1]`)."""
        return self._blocks

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    @property
    def norm(self) -> nn.Module:
        """The final norm, applied to the output of any block used as a target."""
        return self.vit.norm

    @property
    def num_prefix_tokens(self) -> int:
        """CLS + register tokens before the patch tokens."""
        return int(self.vit.num_prefix_tokens)

    @property
    def embed_dim(self) -> int:
        return int(self.vit.embed_dim)

    @property
    def patch_size(self) -> int:
        return int(self.vit.patch_embed.patch_size[0])

    @property
    def image_size(self) -> int:
        return int(self.vit.patch_embed.img_size[0])

    @property
    def grid_size(self) -> tuple[int, int]:
        """Token grid (rows, columns) at the image size the backbone was built for."""
        gh, gw = self.vit.patch_embed.grid_size
        return int(gh), int(gw)

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    # ----- forwards -----------------------------------------------------------------
    def embed(self, images: Tensor) -> Tensor:
        """Tokens after patch + position embedding: (B, prefix + P, D)."""
        vit = self.vit
        x = vit.patch_embed(images)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        return vit.norm_pre(x)

    def patch_projection(self, images: Tensor) -> Tensor:
        """The raw patch-projection conv output, flattened to (B, P, D): before the position
        embedding and any norm, no prefix tokens (what the patch-embedding loss compares)."""
        return self.vit.patch_embed.proj(images).flatten(2).transpose(1, 2)

    def run_blocks(self, tokens: Tensor, start: int, stop: int) -> Tensor:
        """Run blocks start+1..stop (1-based, inclusive) on tokens that left block `start`."""
        for block in self._blocks[start:stop]:
            tokens = block(tokens)
        return tokens

    def forward_to(self, images: Tensor, block: int) -> Tensor:
        """Normed tokens of block `block` (1..L); blocks after it are never run."""
        self._check_block(block)
        return self.norm(self.run_blocks(self.embed(images), 0, block))

    def forward_blocks(self, images: Tensor, blocks: Iterable[int], norm: bool = True) -> dict[int, Tensor]:
        """Tokens of several blocks in one pass, stopping after the deepest one asked for.

        Block 0 stands for the embedding output (never normed).
        """
        wanted = sorted(set(blocks))
        for b in wanted:
            if b != 0:
                self._check_block(b)
        out: dict[int, Tensor] = {}
        x = self.embed(images)
        done = 0
        for b in wanted:
            x = self.run_blocks(x, done, b)
            done = b
            out[b] = x if b == 0 or not norm else self.norm(x)
        return out

    def forward(self, images: Tensor) -> Tensor:
        """Normed tokens of the last block (the usual backbone output)."""
        return self.forward_to(images, self.num_blocks)

    # ----- token views --------------------------------------------------------------
    def patch_tokens(self, tokens: Tensor) -> Tensor:
        """Drop the prefix tokens: (B, P, D)."""
        return tokens[:, self.num_prefix_tokens :]

    @staticmethod
    def cls_token(tokens: Tensor) -> Tensor:
        """The CLS token: (B, D)."""
        return tokens[:, 0]

    def _check_block(self, block: int) -> None:
        if not 1 <= block <= self.num_blocks:
            raise ValueError(f"{self.name}: block {block} is outside 1..{self.num_blocks}")

    def describe(self) -> dict[str, object]:
        """Static facts as a plain dict (for summaries and `leapkd models`)."""
        return {
            "name": self.name,
            "blocks": self.num_blocks,
            "embed_dim": self.embed_dim,
            "patch_size": self.patch_size,
            "image_size": self.image_size,
            "grid": list(self.grid_size),
            "prefix_tokens": self.num_prefix_tokens,
            "params": sum(p.numel() for p in self.parameters()),
        }


def freeze(backbone: Backbone) -> Backbone:
    """Eval mode and no gradients (for teachers)."""
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone
