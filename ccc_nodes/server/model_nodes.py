"""The model folders of one server, and its model loader nodes bound to them.

A server started with ``models_dir`` reads its models from ``models_dir/ccc`` and
``models_dir/sams`` without touching the process environment, so two servers in one
process (or a server and the tests around it) each see their own folders. The loaders are
subclasses of the pack's nodes, with the same names, sockets and behaviour; only the
folders they list and load from differ. Without ``models_dir`` the pack's own nodes are
used, which follow ``$CCC_MODELS_DIR`` (default ``./models``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import nodes as ccc_nodes
from ..hub import DEFAULT_MODEL, ModelLoadError

__all__ = ["ModelFolders", "model_nodes"]

@dataclass(frozen=True)
class ModelFolders:
    """Where one server's models are.

    Arguments:
      root: holds ``ccc/`` and ``sams/``; ``None`` follows the pack (``$CCC_MODELS_DIR``).
    """

    root: Path | None = None

    def folders(self, kind: str) -> list[Path]:
        """Folders searched for models of ``kind`` (``"ccc"`` or ``"sams"``)."""
        return [self.root / kind] if self.root is not None else ccc_nodes.model_folders(kind)

    def ccc_models(self) -> dict[str, Path]:
        """Name -> folder of every model folder (with a config.json) under the ``ccc`` folders."""
        return ccc_nodes.local_models(self.folders("ccc"))

    def sam_checkpoints(self) -> dict[str, Path]:
        """Name -> file of every SAM checkpoint under the ``sams`` folders."""
        return ccc_nodes.sam_checkpoints(self.folders("sams"))

    def where(self, kind: str) -> str:
        return ", ".join(map(str, self.folders(kind)))


def model_nodes(models: ModelFolders) -> dict[str, type]:
    """``CCCModelLoader`` and ``CCCSAMLoader`` reading from ``models`` (none when it
    follows the pack: the pack's own nodes then do the same)."""
    if models.root is None:
        return {}

    class CCCModelLoader(ccc_nodes.CCCModelLoader):
        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
            spec = super().INPUT_TYPES()
            spec["required"]["model"] = ([DEFAULT_MODEL, *models.ccc_models()], spec["required"]["model"][1])
            return spec

        def load(self, model, device, precision, repo_or_path="", revision=""):
            if not repo_or_path.strip() and model != DEFAULT_MODEL:
                local = models.ccc_models()
                if model not in local:
                    raise ModelLoadError(f"model {model!r} is not a folder under {models.where('ccc')}")
                repo_or_path = str(local[model])
            return super().load(model, device, precision, repo_or_path, revision)

    class CCCSAMLoader(ccc_nodes.CCCSAMLoader):
        @staticmethod
        def checkpoints() -> dict[str, Path]:
            return models.sam_checkpoints()

        @staticmethod
        def folders() -> list[Path]:
            return models.folders("sams")

    return {"CCCModelLoader": CCCModelLoader, "CCCSAMLoader": CCCSAMLoader}
