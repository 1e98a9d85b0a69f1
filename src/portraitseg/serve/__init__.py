"""``portraitseg serve``: a local HTTP server that loads the portrait pipeline once and turns
uploaded photos into portraits, with a web page (``static/``) to try it in a browser.

- :mod:`portraitseg.serve.limits`: :class:`ServeLimits`, the server's limits and their defaults.
- :mod:`portraitseg.serve.options`: the request parameters, checked and named in errors.
- :mod:`portraitseg.serve.engine`: the loaded model, a small cache of per-option pipelines that
  share it, and the bounded render queue.
- :mod:`portraitseg.serve.app`: the FastAPI application (``create_app``).

Nothing here imports Lightning, Hydra, wandb or albumentations: only what inference needs.
"""

from portraitseg.serve.limits import ServeLimits

__all__ = ["ServeLimits"]
