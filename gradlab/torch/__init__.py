"""gradlab for PyTorch models: ``w = gradlab.torch.watch(model, optimizer)``, then ``w.step(loss)`` after
each ``optimizer.step()``; ``w.frame()``, ``w.layers_frame()`` and ``w.save(dir)`` give the same records
as gradlab's own runs, which ``gradlab diagnose`` and ``gradlab report`` read. Needs ``pip install
gradlab[torch]``; ``import gradlab`` never imports torch."""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("gradlab.torch needs PyTorch: pip install 'gradlab[torch]'") from exc

from gradlab.torch.fixes import Trial, TryResult, try_fixes
from gradlab.torch.handle import DivergedError, Watch, watch

__all__ = ["DivergedError", "Trial", "TryResult", "Watch", "try_fixes", "watch"]
