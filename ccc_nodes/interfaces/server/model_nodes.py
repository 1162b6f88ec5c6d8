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

from ccc_nodes.core.hub import DEFAULT_MODEL, ModelLoadError
from ccc_nodes.interfaces import nodes as ccc_nodes

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


def locked_source(repo_or_path: str, repos: tuple[str, ...], local: dict[str, Path]) -> str:
    """What a locked loader loads for ``repo_or_path``: a listed repo id, or the name (or
    the very folder) of one of the server's models; anything else is refused with a
    message that says nothing about it (whether it exists, is a file or a folder)."""
    given = repo_or_path.strip()
    if given in repos:
        return given
    if given in local:
        return str(local[given])
    known = {str(p.resolve()): str(p) for p in local.values()}
    if given.startswith(("/", "~", ".")) or "\\" in given:
        try:
            resolved = str(Path(given).expanduser().resolve())
        except (OSError, RuntimeError, ValueError):
            resolved = ""
        if resolved in known:
            return known[resolved]
    raise ModelLoadError("this server is locked: repo_or_path must be one of its models or a listed repo id "
                         f"({', '.join([*local, *repos]) or 'none'})")


def model_nodes(models: ModelFolders, locked: bool = False, repos: tuple[str, ...] = ()) -> dict[str, type]:
    """``CCCModelLoader`` and ``CCCSAMLoader`` reading from ``models`` (none when it
    follows the pack and is not locked: the pack's own nodes then do the same). Locked,
    they load only the models in those folders and the repo ids in ``repos``."""
    if models.root is None and not locked:
        return {}
    repos = tuple(repos)

    class CCCModelLoader(ccc_nodes.CCCModelLoader):
        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
            spec = super().INPUT_TYPES()
            spec["required"]["model"] = ([DEFAULT_MODEL, *models.ccc_models()], spec["required"]["model"][1])
            return spec

        def load(self, model, device, precision, repo_or_path="", revision=""):
            if locked and repo_or_path.strip():
                repo_or_path = locked_source(repo_or_path, repos, models.ccc_models())
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

        def load(self, model_type, device, checkpoint=None, repo_or_path=""):
            if locked and (repo_or_path or "").strip():
                repo_or_path = locked_source(repo_or_path, repos, models.sam_checkpoints())
            return super().load(model_type, device, checkpoint, repo_or_path)

    return {"CCCModelLoader": CCCModelLoader, "CCCSAMLoader": CCCSAMLoader}
