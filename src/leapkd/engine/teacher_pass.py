"""One teacher pass per batch for several students: the first request runs the teacher to the
deepest level any student needs this step, and every student's request is served from it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from torch import Tensor

from leapkd.models import Backbone, Features


class SharedTeacherPass:
    """Stands in for the teacher in the methods' `targets` and `on_first_batch` of a run of
    several students. A level's raw features do not depend on which other levels a pass
    returns, so a student served from the shared pass gets what the teacher alone would give
    it. A request deeper than the pass runs the teacher again (counted in `passes`)."""

    def __init__(self, teacher: Backbone) -> None:
        self.teacher = teacher
        self.passes: Counter[int] = Counter()  # depth -> teacher passes run to it, over the run
        self._images: Tensor | None = None
        self._planned = 0
        self._raw: dict[int, Features] = {}
        self._depth = 0
        self._embed: Features | None = None

    def start(self, images: Tensor, depth: int) -> None:
        """A new batch, for which the students need the teacher up to `depth` at most (planned)."""
        self._images, self._planned = images, depth
        self._raw, self._depth, self._embed = {}, 0, None

    def forward_levels(self, images: Tensor, levels: Iterable[int], norm: bool = True) -> dict[int, Features]:
        wanted = sorted(set(levels))
        self._check(images)
        if wanted[-1] > self._depth:
            depth = max(wanted[-1], self._planned)
            self._raw = self.teacher.forward_levels(images, range(1, depth + 1), norm=False)
            self._depth = depth
            self.passes[depth] += 1
        return {b: self.teacher.normalize(b, self._raw[b]) if norm else self._raw[b] for b in wanted}

    def patch_projection(self, images: Tensor) -> Features:
        self._check(images)
        if self._embed is None:
            self._embed = self.teacher.patch_projection(images)
        return self._embed

    def _check(self, images: Tensor) -> None:
        if images is not self._images:
            raise RuntimeError("the shared teacher pass was asked about images it was not started on")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.teacher, name)
